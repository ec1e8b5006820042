"""The public webhook payload: what external systems see of Nova's events.

Webhooks never carry the internal `EventEnvelope`; they carry the shape built
by `public_payload`, versioned by `API_VERSION`. Internal events may change
(new schema versions are upcast before this module sees them); this shape only
changes with a new `API_VERSION`.
"""

from __future__ import annotations

import json
from typing import Any, Final

from nova_events import (
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    DomainEvent,
    EventEnvelope,
    TranscriptionCompleted,
    decode_payload,
)

API_VERSION: Final = "2026-12-01"
"""The version of the public payload's shape, sent as `api_version`."""


class UnsupportedEventError(ValueError):
    """The event has no public form; it is not delivered to webhooks."""


PUBLIC_EVENT_TYPES: Final[dict[str, str]] = {
    AudioCreated.event_type(): "audio.created",
    AudioProcessingStarted.event_type(): "audio.processing.started",
    TranscriptionCompleted.event_type(): "audio.transcription.completed",
    AudioProcessingCompleted.event_type(): "audio.processing.completed",
    AudioProcessingFailed.event_type(): "audio.processing.failed",
    AudioDeleted.event_type(): "audio.deleted",
}
"""Internal event type to public type; the public names are part of the API."""

PUBLIC_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    AudioCreated.event_type(): (
        "user_id",
        "content_type",
        "size_bytes",
        "duration_s",
        "language",
    ),
    AudioProcessingStarted.event_type(): ("language", "enable_diarization", "attempt"),
    TranscriptionCompleted.event_type(): ("text", "confidence", "language", "segments"),
    AudioProcessingCompleted.event_type(): (),
    AudioProcessingFailed.event_type(): ("reason", "retryable"),
    AudioDeleted.event_type(): (),
}
"""The payload fields each event type publishes under `data`: an allow-list, so
a field added to an internal event stays internal until it is listed here."""

PUBLISHED_PERSONAL_FIELDS: Final[dict[str, frozenset[str]]] = {
    TranscriptionCompleted.event_type(): frozenset({"text", "segments"}),
}
"""The only personal (`x-personal`) fields that leave Nova: the transcript,
which is what the owner subscribed for."""


def public_event_type(event_type: str) -> str:
    """The public name of internal `event_type`; raises `UnsupportedEventError`."""
    try:
        return PUBLIC_EVENT_TYPES[event_type]
    except KeyError:
        raise UnsupportedEventError(
            f"event type {event_type!r} has no public webhook form"
        ) from None


def public_payload(envelope: EventEnvelope) -> dict[str, Any]:
    """The public, JSON-ready webhook payload of one committed event.

    Shape (api_version ``2026-12-01``)::

        {
          "id": "<event id, a UUID; the same on every retry and re-send>",
          "type": "audio.transcription.completed",
          "api_version": "2026-12-01",
          "created_at": "2026-12-03T20:28:42.123456Z",   # when the event happened
          "audio_id": "<UUID of the audio file>",
          "sequence": 3,          # position in that audio's history: 1, 2, 3...
          "data": {...}           # per type, below
        }

    Receivers deduplicate on `id` and can order one audio's events by
    `sequence`. The owning user is not repeated on every event (internal events
    do not carry it); `audio.created` carries it in `data.user_id`, and a
    subscription only ever receives its own user's events.

    `data` per `type` (only these keys; a value may be null):

    - ``audio.created``: ``user_id``, ``content_type``, ``size_bytes``,
      ``duration_s``, ``language``. The title, file name, storage key and
      free-form metadata are personal or internal and are never sent.
    - ``audio.processing.started``: ``language``, ``enable_diarization``,
      ``attempt``.
    - ``audio.transcription.completed``: ``text``, ``confidence``, ``language``,
      ``segments`` (``start``, ``end``, ``text``, ``confidence``, ``language``).
      The transcript is personal data; it is the one personal field sent, since
      a subscription's endpoint belongs to, or is chosen by, the audio's owner.
    - ``audio.processing.completed``: nothing (``{}``).
    - ``audio.processing.failed``: ``reason``, ``retryable``.
    - ``audio.deleted``: nothing (``{}``); an erasure carries no personal data.

    Raises `UnsupportedEventError` for an event type without a public form,
    `nova_events.UnknownEventError` for one Nova does not know, and
    `pydantic.ValidationError` for an invalid payload.
    """
    public_type = public_event_type(envelope.event_type)
    event: DomainEvent = decode_payload(envelope)
    fields = event.model_dump(mode="json")
    occurred = envelope.occurred_at.isoformat(timespec="microseconds")
    return {
        "id": str(envelope.event_id),
        "type": public_type,
        "api_version": API_VERSION,
        "created_at": occurred.replace("+00:00", "Z"),
        "audio_id": str(envelope.aggregate_id),
        "sequence": envelope.version,
        "data": {name: fields[name] for name in PUBLIC_FIELDS[envelope.event_type]},
    }


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact UTF-8 JSON, keys sorted."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
