"""Settings of the query API, read from `NOVA_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from nova_platform.settings import NovaSettings


class QueryApiSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8002
    grpc_port: int = Field(
        default=50051,
        ge=0,
        le=65535,
        description="port of the gRPC service (on NOVA_HTTP_HOST); 0 picks a free one",
    )
    grpc_health_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="how often gRPC health re-runs the readiness check (and how "
        "long one may take)",
    )
    cache_ttl_s: float = Field(
        default=60.0, gt=0, description="how long an item stays in the Redis cache"
    )
    cache_timeout_s: float = Field(
        default=0.5,
        gt=0,
        description="how long a Redis call may take before the read goes direct",
    )
    consistency_wait_s: float = Field(
        default=2.0,
        ge=0,
        description="how long a read with `min_version` waits for the projection",
    )
    cursor_secret: str | None = Field(
        default=None,
        description="HMAC key of page cursors; defaults to NOVA_JWT_SECRET",
    )

    def cursor_key(self) -> bytes:
        """The key that signs page cursors.

        Raises ValueError when neither `NOVA_CURSOR_SECRET` nor (in development)
        `NOVA_JWT_SECRET` is set.
        """
        secret = self.cursor_secret or self.jwt_secret
        if not secret:
            raise ValueError(
                "set NOVA_CURSOR_SECRET (any long random string) so the query API "
                "can sign page cursors; in development NOVA_JWT_SECRET is used"
            )
        return secret.encode()
