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

PERSONAL_FIELDS = ("title", "transcription")
"""What a document holds of what the user typed or said."""
ERASED = "erased"
"""`personal_data` of a document whose owner was erased: it stays so."""


def erased_document(doc: Document) -> Document:
    """`doc` without its personal fields, marked `personal_data: erased`."""
    kept = {k: v for k, v in doc.items() if k not in PERSONAL_FIELDS}
    return {**kept, "personal_data": ERASED}


def apply_event(
    doc: Document | None, envelope: EventEnvelope, event: DomainEvent
) -> Document:
    """The document after `event`.

    Erasure leaves a tombstone (ids, status and version, nothing personal)
    rather than deleting the document: OpenSearch forgets a deleted document's
    version after `index.gc_deletes`, and a late redelivery could then bring
    the data back. Searches filter `status: deleted` out.

    Once its owner was erased (the event opened erased, or the document was
    marked so), a document keeps no personal field: an event opened with a
    key cached elsewhere cannot write one back.
    """
    updated = _apply(doc, envelope, event)
    if envelope.erased or (doc or {}).get("personal_data") == ERASED:
        return erased_document(updated)
    return updated


def _apply(
    doc: Document | None, envelope: EventEnvelope, event: DomainEvent
) -> Document:
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
