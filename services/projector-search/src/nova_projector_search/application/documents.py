"""How each event changes a transcript document of the search index."""

from __future__ import annotations

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

Document = dict[str, Any]


def apply_event(
    doc: Document | None, envelope: EventEnvelope, event: DomainEvent
) -> Document:
    """The document after `event`.

    Erasure leaves a tombstone (ids, status and version, nothing personal)
    rather than deleting the document: OpenSearch forgets a deleted document's
    version after `index.gc_deletes`, and a late redelivery could then bring
    the data back. Searches filter `status: deleted` out.
    """
    at = envelope.occurred_at.isoformat()
    if isinstance(event, AudioDeleted):
        return {
            "audio_id": str(event.audio_id),
            "status": "deleted",
            "version": envelope.version,
            "updated_at": at,
        }
    current: Document = dict(doc or {"audio_id": str(event.audio_id)})
    current["version"] = envelope.version
    current["updated_at"] = at
    match event:
        case AudioCreated():
            current.update(
                user_id=str(event.user_id),
                status="pending",
                created_at=at,
                title=event.title or event.metadata.get("title"),
                language=event.language,
            )
        case AudioProcessingStarted():
            current.update(status="processing", language=event.language)
        case TranscriptionCompleted():
            current.update(
                transcription=event.text,
                confidence=event.confidence,
                language=event.language,
            )
        case AudioProcessingCompleted():
            current.update(status="completed", completed_at=at)
        case AudioProcessingFailed():
            current.update(status="failed")
    return {k: v for k, v in current.items() if v is not None}
