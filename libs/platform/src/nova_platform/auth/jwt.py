"""Verifies bearer tokens: HS256 with a local secret, or RS/ES keys from a JWKS."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from uuid import UUID

import jwt

from ..settings import NovaSettings


class Scope(StrEnum):
    AUDIO_READ = "audio:read"
    AUDIO_WRITE = "audio:write"
    ADMIN = "admin"
    TRANSCRIBER = "service:transcriber"


class AuthError(Exception):
    """Raised when a request carries no valid token; the message says why."""


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: `sub` as a user id, and the scopes the token grants."""

    user_id: UUID
    scopes: frozenset[str]

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes or Scope.ADMIN.value in self.scopes

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN.value in self.scopes


class TokenVerifier:
    """Checks signature, expiry, audience and issuer, then reads `sub` and `scope`."""

    def __init__(self, settings: NovaSettings) -> None:
        if not settings.jwt_secret and not settings.jwt_jwks_url:
            raise ValueError(
                "set NOVA_JWT_SECRET (development, HS256) or NOVA_JWT_JWKS_URL "
                "(production) so the API can verify bearer tokens"
            )
        self._secret = settings.jwt_secret
        self._jwks = (
            jwt.PyJWKClient(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
        )
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer

    def verify(self, token: str) -> Principal:
        try:
            if self._jwks is not None:
                key: object = self._jwks.get_signing_key_from_jwt(token)
                algorithms = ["RS256", "ES256"]
            else:
                key = self._secret
                algorithms = ["HS256"]
            claims = jwt.decode(
                token,
                key,  # type: ignore[arg-type]
                algorithms=algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["sub", "exp"], "verify_aud": bool(self._audience)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the bearer token has expired; request a new one") from exc
        except (jwt.PyJWKClientConnectionError, json.JSONDecodeError) as exc:
            # The key server's fault, not the token's: say so.
            raise AuthError(
                "the signing keys could not be fetched from the JWKS URL; try again "
                "in a moment"
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"the bearer token is not valid: {exc}") from exc
        try:
            user_id = UUID(str(claims["sub"]))
        except ValueError as exc:
            raise AuthError("the token's `sub` claim must be a user id (UUID)") from exc
        raw_scopes = claims.get("scope", "")
        if not isinstance(raw_scopes, str):
            raise AuthError(
                "the token's `scope` claim must be a space-separated string"
            )
        return Principal(user_id=user_id, scopes=frozenset(raw_scopes.split()))
