"""How each event changes an `AudioReadModel` item (the seed's section 3.2).

Pure functions: an event and its envelope in, the attributes to set out. The
adapter makes each write conditional on the stored version, which is what
makes duplicate and stale deliveries harmless.

An event opened after its owner was erased (`envelope.erased`) sets none of
the personal attributes and marks the item `personal_data: "erased"`, as the
user's erasure itself does to every item of theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nova_events import (
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    DomainEvent,
    EventEnvelope,
    TranscriptionCompleted,
)

PERSONAL_ATTRIBUTES = (
    "s3_key",
    "metadata",
    "title",
    "file_name",
    "transcription",
    "segments",
)
"""The attributes that hold what a user typed or said; erasure removes them."""
ERASED = "erased"
"""The value of `personal_data` on an item whose owner was erased."""


@dataclass(frozen=True, slots=True)
class ItemChange:
    """Attributes to set (and remove) on the read-model item at `version`."""

    audio_id: str
    version: int
    set: dict[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    create: bool = False


def change_for(envelope: EventEnvelope, event: DomainEvent) -> ItemChange:
    change = _change_for(envelope, event)
    if not envelope.erased:
        return change
    kept = {k: v for k, v in change.set.items() if k not in PERSONAL_ATTRIBUTES}
    removed = tuple(a for a in PERSONAL_ATTRIBUTES if a in change.set)
    return ItemChange(
        change.audio_id,
        change.version,
        {**kept, "personal_data": ERASED},
        tuple(dict.fromkeys((*change.remove, *removed))),
        change.create,
    )


def _change_for(envelope: EventEnvelope, event: DomainEvent) -> ItemChange:
    at = envelope.occurred_at.isoformat()
    audio_id = str(event.audio_id)
    version = envelope.version
    common: dict[str, Any] = {"updated_at": at}
    match event:
        case AudioCreated():
            return ItemChange(
                audio_id,
                version,
                {
                    **common,
                    "audio_id": audio_id,
                    "user_id": str(event.user_id),
                    "s3_key": event.s3_key,
                    "metadata": dict(event.metadata),
                    "title": event.title or event.metadata.get("title"),
                    "file_name": event.file_name,
                    "content_type": event.content_type,
                    "size_bytes": event.size_bytes,
                    "duration_s": event.duration_s,
                    "language": event.language,
                    "status": "pending",
                    "attempts": 0,
                    "created_at": at,
                    "gsi1pk": f"USER#{event.user_id}",
                    "gsi1sk": at,
                },
                create=True,
            )
        case AudioProcessingStarted():
            return ItemChange(
                audio_id,
                version,
                {
                    **common,
                    "status": "processing",
                    "language": event.language,
                    "attempts": event.attempt,
                },
                remove=("failure_reason", "failure_retryable"),
            )
        case TranscriptionCompleted():
            return ItemChange(
                audio_id,
                version,
                {
                    **common,
                    "transcription": event.text,
                    "confidence": event.confidence,
                    "language": event.language,
                    "segments": [s.model_dump(mode="json") for s in event.segments],
                },
            )
        case AudioProcessingCompleted():
            return ItemChange(
                audio_id, version, {**common, "status": "completed", "completed_at": at}
            )
        case AudioProcessingFailed():
            return ItemChange(
                audio_id,
                version,
                {
                    **common,
                    "status": "failed",
                    "failure_reason": event.reason,
                    "failure_retryable": event.retryable,
                },
            )
        case AudioDeleted():
            return ItemChange(
                audio_id,
                version,
                {**common, "status": "deleted", "deleted_at": at},
                remove=(
                    "transcription",
                    "segments",
                    "s3_key",
                    "metadata",
                    "title",
                    "file_name",
                ),
            )
    raise TypeError(f"no read-model projection for {type(event).__name__}")
