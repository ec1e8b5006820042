"""Webhook attempts over HTTP(S) with httpx, inside the outbound rules.

Before each attempt the host name is resolved and every address checked
(`nova_platform.webhooks.targets`); the request then goes to the checked
address, with the name in the `Host` header and as the TLS server name, so
the certificate is still verified against the name. Redirects are not
followed. The response body is read up to `max_response_bytes` and kept as an
excerpt; one `timeout_s` bounds the whole attempt, connecting included.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from nova_platform.webhooks import Delivery, Subscription
from nova_platform.webhooks.targets import (
    TargetRefusedError,
    check_literal_host,
    parse_target,
    resolve,
)

from ..domain.retry import SendResult
from ..domain.signing import signed_headers

USER_AGENT = "Nova-Webhooks/1"


class HttpWebhookSender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        allow_private: bool = False,
        timeout_s: float = 10.0,
        max_response_bytes: int = 4096,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._allow_private = allow_private
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes
        self._clock = clock

    @staticmethod
    def client(
        timeout_s: float = 10.0, verify: ssl.SSLContext | bool = True
    ) -> httpx.AsyncClient:
        """An httpx client fit for webhooks: no redirects, no proxy from the
        environment (it would bypass the address checks). `verify` is the
        certificate check (the system's CAs by default)."""
        return httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            verify=verify,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def send(self, subscription: Subscription, delivery: Delivery) -> SendResult:
        started = time.perf_counter()

        def elapsed_ms() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            target = parse_target(subscription.url)
            check_literal_host(target, allow_private=self._allow_private)
            async with asyncio.timeout(self._timeout_s):
                address = await resolve(target, allow_private=self._allow_private)
                return await self._post(
                    subscription,
                    delivery,
                    target.scheme,
                    target.host,
                    address,
                    target.port,
                    target.path,
                    elapsed_ms,
                )
        except TargetRefusedError as exc:
            return SendResult(None, elapsed_ms(), str(exc), refused=True)
        except TimeoutError:
            return SendResult(
                None, elapsed_ms(), f"no answer within {self._timeout_s:g} s"
            )
        except httpx.HTTPError as exc:
            return SendResult(None, elapsed_ms(), f"{type(exc).__name__}: {exc}"[:500])

    async def _post(
        self,
        subscription: Subscription,
        delivery: Delivery,
        scheme: str,
        host: str,
        address: str,
        port: int,
        path: str,
        elapsed_ms: Callable[[], float],
    ) -> SendResult:
        headers = signed_headers(
            event_id=str(delivery.event_id),
            event_type=delivery.event_type,
            body=delivery.body,
            secret=subscription.secret,
            timestamp=int(self._clock()),
        )
        default_port = 443 if scheme == "https" else 80
        headers["Host"] = host if port == default_port else f"{host}:{port}"
        headers["User-Agent"] = USER_AGENT
        literal = f"[{address}]" if ":" in address else address
        request = self._client.build_request(
            "POST",
            f"{scheme}://{literal}:{port}{path}",
            content=delivery.body,
            headers=headers,
            extensions={"sni_hostname": host} if scheme == "https" else {},
        )
        response = await self._client.send(request, stream=True)
        try:
            excerpt = await self._read_some(response)
        finally:
            await response.aclose()
        code = response.status_code
        error = "" if 200 <= code < 300 else excerpt.decode("utf-8", "replace")[:200]
        return SendResult(
            code,
            elapsed_ms(),
            error,
            retry_after_s=_retry_after(
                response.headers.get("Retry-After"), self._clock()
            ),
        )

    async def _read_some(self, response: httpx.Response) -> bytes:
        body = b""
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) >= self._max_response_bytes:
                break
        return body[: self._max_response_bytes]


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a `Retry-After` header (delta seconds or an HTTP date,
    RFC 9110 10.2.3); None when it is missing or malformed, so the backoff
    alone decides."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to `isdigit`
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.fromtimestamp(now, UTC)).total_seconds())
