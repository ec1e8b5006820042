"""The `Authorization: Bearer` dependency and the correlation-id middleware."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..auth import AuthError, Principal, TokenVerifier
from ..logging import correlation_id
from .problems import Unauthorized

CORRELATION_HEADER = "X-Correlation-Id"

# Only documents the scheme in OpenAPI (`bearerAuth`); `bearer_principal`
# reads and checks the header itself, so errors stay problem documents.
_DOCUMENTED_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    bearerFormat="JWT",
    description="`Authorization: Bearer <token>`; `make token` prints one for "
    "development",
)


def bearer_principal(verifier: TokenVerifier) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency that returns the verified caller or answers 401.

    Async, as every dependency here: FastAPI runs a plain `def` dependency in
    its thread pool, a hand-off that cost more than the check itself."""

    async def dependency(
        request: Request,
        _documented: Annotated[
            HTTPAuthorizationCredentials | None, Depends(_DOCUMENTED_BEARER)
        ],
    ) -> Principal:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "send `Authorization: Bearer <token>`; `make token` prints one "
                "for development"
            )
        try:
            return verifier.verify(token.strip())
        except AuthError as exc:
            raise Unauthorized(str(exc)) from exc

    return dependency


class CorrelationIdMiddleware:
    """Takes `X-Correlation-Id` from the request (or makes one) for logs and
    events, and sends it back on the response.

    A pure ASGI middleware: Starlette's `BaseHTTPMiddleware` runs the app in a
    task of its own behind memory streams, which cost more per request than
    most of Nova's handlers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = (Headers(scope=scope).get(CORRELATION_HEADER) or str(uuid.uuid4()))[:128]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[CORRELATION_HEADER] = cid
            await send(message)

        token = correlation_id.set(cid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            correlation_id.reset(token)
