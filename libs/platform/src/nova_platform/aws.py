"""aioboto3 sessions and clients pointed at AWS or at a local emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aioboto3
from botocore.config import Config

if TYPE_CHECKING:
    from .settings import NovaSettings

_CLIENT_CONFIG = Config(
    retries={"max_attempts": 5, "mode": "adaptive"},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=50,
)


def client_kwargs(settings: NovaSettings) -> dict[str, Any]:
    """Keyword arguments for `session.client(...)`: region, endpoint, retries."""
    kwargs: dict[str, Any] = {"region_name": settings.aws_region}
    kwargs["config"] = _CLIENT_CONFIG
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    return kwargs


def session() -> aioboto3.Session:
    """A session using the default credential chain (env, profile, IAM role)."""
    return aioboto3.Session()
