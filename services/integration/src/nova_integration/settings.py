"""Settings of the integration service (`NOVA_*` environment variables)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from nova_platform.settings import NovaSettings


class IntegrationSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8013
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_base_delay_s: float = Field(default=1.0, gt=0)
    webhook_max_delay_s: float = Field(default=600.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_concurrency: int = Field(default=32, ge=1)
    webhook_per_subscription: int = Field(default=4, ge=1)
    webhook_poll_interval_s: float = Field(default=2.0, gt=0)
    eventbridge_bus: str | None = Field(
        default=None, description="forward public payloads to this bus; unset: off"
    )
    eventbridge_source: str = "nova.audio"
