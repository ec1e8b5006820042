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
    USER,
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    EventEnvelope,
    EventPayload,
    TranscriptionCompleted,
    UserErased,
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
    UserErased.event_type(): "user.erased",
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
    UserErased.event_type(): ("erased_at",),
}
"""The payload fields each event type publishes under `data`: an allow-list, so
a field added to an internal event stays internal until it is listed here."""

PUBLISHED_PERSONAL_FIELDS: Final[dict[str, frozenset[str]]] = {
    TranscriptionCompleted.event_type(): frozenset({"text", "segments"}),
}
"""The only personal (`x-personal`) fields that leave Nova: the transcript,
which is what the owner subscribed for."""

ERASED = "erased"
"""`personal_data` of a payload whose personal fields were erased."""


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
    - ``user.erased``: ``erased_at``. The owner's account was erased: every
      personal datum of theirs is gone. This payload names ``user_id`` and the
      position in the user's own history (``sequence``) instead of an audio.

    An event whose owner was erased before it went out carries
    ``"personal_data": "erased"`` and its personal fields empty (``text``
    null, ``segments`` ``[]``); so does every stored delivery of that user
    once the erasure is applied.

    Raises `UnsupportedEventError` for an event type without a public form,
    `nova_events.UnknownEventError` for one Nova does not know, and
    `pydantic.ValidationError` for an invalid payload.
    """
    public_type = public_event_type(envelope.event_type)
    event: EventPayload = decode_payload(envelope, EventPayload)
    fields = event.model_dump(mode="json")
    occurred = envelope.occurred_at.isoformat(timespec="microseconds")
    subject = "user_id" if envelope.aggregate_type == USER else "audio_id"
    payload: dict[str, Any] = {
        "id": str(envelope.event_id),
        "type": public_type,
        "api_version": API_VERSION,
        "created_at": occurred.replace("+00:00", "Z"),
        subject: str(envelope.aggregate_id),
        "sequence": envelope.version,
        "data": {name: fields[name] for name in PUBLIC_FIELDS[envelope.event_type]},
    }
    return _erased(payload, envelope.event_type) if envelope.erased else payload


def redact_body(body: bytes) -> bytes | None:
    """A stored delivery's body with its personal fields erased, as
    `public_payload` writes an event opened after its owner's erasure; None
    when it holds none (or is not a payload of this module)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("personal_data") == ERASED:
        return None
    internal = _INTERNAL_TYPES.get(str(payload.get("type")))
    if internal not in PUBLISHED_PERSONAL_FIELDS:
        return None
    return encode_body(_erased(payload, internal))


_INTERNAL_TYPES: Final[dict[str, str]] = {v: k for k, v in PUBLIC_EVENT_TYPES.items()}


def _erased(payload: dict[str, Any], event_type: str) -> dict[str, Any]:
    data = dict(payload.get("data") or {})
    for name in PUBLISHED_PERSONAL_FIELDS.get(event_type, ()):
        if name in data:
            data[name] = [] if isinstance(data[name], list) else None
    return {**payload, "data": data, "personal_data": ERASED}


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): compact UTF-8 JSON, keys sorted."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
