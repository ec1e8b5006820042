"""A real webhook receiver on loopback, as a Nova customer would write one.

It verifies every request's signature with `nova_integration.domain.signing`
(the module receivers may copy), deduplicates on the event id, and records
what it accepted in arrival order. Each endpoint can fail its first requests
on purpose or never answer at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nova_integration.domain.signing import SignatureError, verify


@dataclass
class Endpoint:
    secret: str
    fail_first: int = 0
    """Answer this many requests with `fail_status` before accepting."""
    fail_status: int = 503
    retry_after: str | None = None
    hang: bool = False
    """Never answer (until the sender gives up on the request)."""
    requests: int = 0
    accepted: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[dict[str, Any]] = field(default_factory=list)
    """Accepted payloads, first acceptance of each event id, in arrival order."""
    duplicates: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0


class WebhookReceiver:
    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    def endpoint(self, name: str, secret: str, **options: Any) -> str:
        """Add an endpoint; returns its URL."""
        self.endpoints[name] = Endpoint(secret=secret, **options)
        return f"{self.base_url}/hooks/{name}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/{name}", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket here
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._closing.set()  # let hanging requests end, or cleanup waits for them
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        endpoint = self.endpoints.get(request.match_info["name"])
        if endpoint is None:
            return web.Response(status=404)
        body = await request.read()
        endpoint.requests += 1
        try:
            verify(request.headers, body, endpoint.secret, now=time.time())
        except SignatureError as exc:
            endpoint.bad_signatures += 1
            return web.Response(status=401, text=str(exc))
        if endpoint.hang:
            await self._closing.wait()
            return web.Response(status=503)
        if endpoint.requests <= endpoint.fail_first:
            headers = (
                {"Retry-After": endpoint.retry_after} if endpoint.retry_after else {}
            )
            return web.Response(status=endpoint.fail_status, headers=headers)
        payload = json.loads(body)
        if payload["id"] in endpoint.accepted:
            endpoint.duplicates[payload["id"]] += 1
        else:
            endpoint.accepted[payload["id"]] = payload
            endpoint.order.append(payload)
        return web.Response(status=204)

    def sequences(self, name: str, audio_id: str) -> list[int]:
        """The accepted sequences of one audio, in arrival order."""
        return [
            p["sequence"]
            for p in self.endpoints[name].order
            if p["audio_id"] == audio_id
        ]
