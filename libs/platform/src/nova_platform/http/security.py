"""The `Authorization: Bearer` dependency and the correlation-id middleware."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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


def bearer_principal(verifier: TokenVerifier) -> Callable[..., Principal]:
    """A FastAPI dependency that returns the verified caller or answers 401."""

    def dependency(
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


async def correlation_middleware(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Takes `X-Correlation-Id` from the request (or makes one) for logs and events."""
    cid = request.headers.get(CORRELATION_HEADER) or str(uuid.uuid4())
    token = correlation_id.set(cid[:128])
    try:
        response = await call_next(request)
    finally:
        correlation_id.reset(token)
    response.headers[CORRELATION_HEADER] = cid[:128]
    return response
