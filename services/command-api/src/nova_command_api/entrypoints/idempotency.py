"""Runs a command at most once per `Idempotency-Key` and replays its answer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

from fastapi import Response

from nova_platform.http.problems import Problem

from ..application.idempotency import IdempotencyStore, RecordedResponse
from .problems import as_problem

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_REPLAYED_HEADERS = ("location", "etag", "content-type")
# Answers that depend on a moment, not on the request: a retry should run again.
# So do 5xx answers (a backend was unavailable).
_NOT_RECORDED = {409, 412, 429}


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise Problem(
            "Idempotency-Key must be 1 to 255 visible ASCII characters, e.g. a UUID",
            status=400,
            kind="invalid-idempotency-key",
            title="Invalid Idempotency-Key",
        )
    return key


class IdempotentRunner:
    def __init__(self, store: IdempotencyStore, wait_s: float = 10.0) -> None:
        self._store = store
        self._wait_s = wait_s

    async def run(
        self,
        user_id: UUID,
        key: str | None,
        request_fingerprint: str,
        command: Callable[[], Awaitable[Response]],
    ) -> Response:
        if key is None:
            return await command()
        scoped = f"{user_id}#{check_key(key)}"
        existing = await self._store.claim(scoped, request_fingerprint)
        if existing is not None:
            if existing.fingerprint != request_fingerprint:
                raise Problem(
                    "this Idempotency-Key was used for a different request; use a "
                    "new key for a new request",
                    status=422,
                    kind="idempotency-key-reused",
                    title="Idempotency-Key reused",
                )
            return await self._replay(scoped, existing.response)
        try:
            response = await command()
        except Exception as exc:
            problem = as_problem(exc)
            if (
                problem is None
                or problem.status in _NOT_RECORDED
                or problem.status >= 500
            ):
                await self._store.release(scoped)
                raise
            response = problem.response()
        await self._store.complete(
            scoped,
            RecordedResponse(
                status=response.status_code,
                body=bytes(response.body),
                headers={
                    k: v for k, v in response.headers.items() if k in _REPLAYED_HEADERS
                },
            ),
        )
        return response

    async def _replay(self, scoped: str, recorded: RecordedResponse | None) -> Response:
        deadline = time.monotonic() + self._wait_s
        while recorded is None:
            if time.monotonic() > deadline:
                raise Problem(
                    "a request with this Idempotency-Key is still running; retry "
                    "in a moment with the same key",
                    status=409,
                    kind="idempotency-key-in-use",
                    title="Request in progress",
                    retry_after_s=1,
                )
            await asyncio.sleep(0.05)
            record = await self._store.get(scoped)
            if record is None:
                raise Problem(
                    "the first request with this Idempotency-Key failed; send it again",
                    status=409,
                    kind="idempotency-key-released",
                    title="First attempt failed",
                )
            recorded = record.response
        logger.info("idempotent replay", extra={"status": recorded.status})
        headers = dict(recorded.headers)
        headers["Idempotent-Replayed"] = "true"
        return Response(recorded.body, status_code=recorded.status, headers=headers)
