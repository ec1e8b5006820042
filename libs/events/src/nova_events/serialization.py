"""The one serializer of envelopes, used by the store, the relay and consumers."""

from __future__ import annotations

import orjson

from .envelope import EventEnvelope


def dumps(envelope: EventEnvelope) -> bytes:
    """Compact UTF-8 JSON of `envelope`."""
    return orjson.dumps(envelope.model_dump(mode="json"))


def loads(raw: bytes | str) -> EventEnvelope:
    """Parse and validate an envelope; raises `pydantic.ValidationError`."""
    return EventEnvelope.model_validate_json(raw)
