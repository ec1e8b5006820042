"""The audio's S3 key and attempt state, read from the event store.

`AudioProcessingStarted` does not carry the S3 key; `AudioCreated` does. The
transcriber reads the audio's stream (a consistent query) rather than keeping
state of its own, so any instance can take any request. The S3 key is
personal data: the reader opens it, and an audio whose owner was erased (its
file deleted with them) is not found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol
from uuid import UUID

from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    DomainEvent,
    EventEnvelope,
    decode_payload,
)

from ..application.ports import AudioToTranscribe

_ENDINGS = (AudioProcessingCompleted, AudioProcessingFailed, AudioDeleted)


class EventReader(Protocol):
    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> Sequence[EventEnvelope]: ...


class EventStoreCatalog:
    """`AudioCatalog` over `nova_platform.event_reader.DynamoDBEventReader`."""

    def __init__(self, reader: EventReader) -> None:
        self._reader = reader

    async def find(self, audio_id: UUID) -> AudioToTranscribe | None:
        envelopes = await self._reader.get_events(AUDIO_FILE, audio_id)
        if any(e.erased for e in envelopes):
            return None
        return summarize(decode_payload(e) for e in envelopes)


def summarize(events: Iterable[DomainEvent]) -> AudioToTranscribe | None:
    """Fold an audio's events into what the transcriber needs to know."""
    created: AudioCreated | None = None
    attempt = 0
    is_open = False
    for event in events:
        if isinstance(event, AudioCreated):
            created = event
        elif isinstance(event, AudioProcessingStarted):
            attempt, is_open = event.attempt, True
        elif isinstance(event, _ENDINGS):
            is_open = False
    if created is None:
        return None
    return AudioToTranscribe(
        s3_key=created.s3_key,
        duration_s=created.duration_s,
        current_attempt=attempt,
        open=is_open,
    )
