"""Names of Nova's Redis keys, shared by the services that write and read them.

- `audio_key`: the query cache's copy of a read-model item (query-api writes
  it, the projector drops it when the item changes).
- `audio_fill_key`: the fill token of that entry. query-api takes one before
  it reads the read model and stores what it read only while the token is
  unchanged; the projector drops it with the entry, so a copy read before an
  invalidation is never stored after it.
- `progress_key`: how far the transcriber is with an audio's current attempt
  (the transcriber writes it, query-api merges it into get-by-id). Progress
  is ephemeral: it never goes to the event store, and expires after
  `PROGRESS_TTL_S`.
"""

from __future__ import annotations

from .settings import NovaSettings

PROGRESS_TTL_S = 600.0
"""How long a progress entry lives after its last write."""


def _prefix(settings: NovaSettings) -> str:
    return f"nova-{settings.resource_suffix}" if settings.resource_suffix else "nova"


def audio_key(settings: NovaSettings, audio_id: str) -> str:
    """The cache entry of one audio's read-model item."""
    return f"{_prefix(settings)}:audio:{audio_id}"


def audio_fill_key(settings: NovaSettings, audio_id: str) -> str:
    """The fill token of `audio_key` (see the module's docstring)."""
    return f"{_prefix(settings)}:audio-fill:{audio_id}"


def progress_key(settings: NovaSettings, audio_id: str) -> str:
    """The transcription progress of one audio: JSON with `attempt`,
    `seconds_done`, `duration_s`, `segments_done` and `updated_at`."""
    return f"{_prefix(settings)}:progress:{audio_id}"
