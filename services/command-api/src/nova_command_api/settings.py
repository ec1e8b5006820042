"""Settings of the command API and the outbox relay."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from nova_platform.settings import NovaSettings


class CommandApiSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8001
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    idempotency_wait_s: float = Field(default=10.0, ge=0)
    relay_health_port: int = 8010
    relay_poll_interval_s: float = 0.2
    relay_lease_ttl_s: float = Field(default=10.0, gt=0)
