"""Names of the query cache's Redis keys, shared by query-api and the projector."""

from __future__ import annotations

from .settings import NovaSettings


def audio_key(settings: NovaSettings, audio_id: str) -> str:
    """The cache entry of one audio's read-model item."""
    prefix = f"nova-{settings.resource_suffix}" if settings.resource_suffix else "nova"
    return f"{prefix}:audio:{audio_id}"
