from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from pydantic import ValidationError

from nova_events import (
    AUDIO_EVENTS,
    AudioCreated,
    EventEnvelope,
    EventMetadata,
    TranscriptionCompleted,
    UnknownEventError,
    decode_payload,
    dumps,
    encode_payload,
    loads,
)


def envelope_of(event: AudioCreated) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type="AudioFile",
        aggregate_id=event.audio_id,
        event_type=event.event_type(),
        schema_version=event.schema_version,
        version=1,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(event),
    )


def test_envelope_round_trips_through_the_serializer() -> None:
    event = AudioCreated(audio_id=uuid4(), user_id=uuid4(), s3_key="audio/u/a.wav")
    envelope = envelope_of(event)

    decoded = loads(dumps(envelope))

    assert decoded == envelope
    assert decode_payload(decoded) == event


def test_occurred_at_is_normalised_to_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    event = AudioCreated(audio_id=uuid4(), user_id=uuid4(), s3_key="k")
    envelope = envelope_of(event).model_copy(
        update={"occurred_at": datetime(2026, 1, 1, 9, tzinfo=tokyo)}
    )

    decoded = loads(dumps(envelope))

    assert decoded.occurred_at == datetime(2026, 1, 1, 0, tzinfo=UTC)
    assert decoded.occurred_at.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate(
            {
                **envelope_of(
                    AudioCreated(audio_id=uuid4(), user_id=uuid4(), s3_key="k")
                ).model_dump(mode="json"),
                "occurred_at": "2026-01-01T00:00:00",
            }
        )


def test_unknown_event_type_and_version_are_named() -> None:
    envelope = envelope_of(AudioCreated(audio_id=uuid4(), user_id=uuid4(), s3_key="k"))

    with pytest.raises(UnknownEventError, match="AudioRenamed"):
        decode_payload(envelope.model_copy(update={"event_type": "AudioRenamed"}))
    with pytest.raises(UnknownEventError, match="schema version 9"):
        decode_payload(envelope.model_copy(update={"schema_version": 9}))


def test_events_are_frozen_and_strict() -> None:
    event = AudioCreated(audio_id=uuid4(), user_id=uuid4(), s3_key="k")

    with pytest.raises(ValidationError):
        event.s3_key = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        AudioCreated.model_validate({**encode_payload(event), "surprise": 1})


def test_personal_fields_are_marked_in_the_schema() -> None:
    marked = {
        model.event_type(): {
            name
            for name, prop in model.model_json_schema()["properties"].items()
            if prop.get("x-personal")
        }
        for model in AUDIO_EVENTS
    }

    assert marked["AudioCreated"] == {"s3_key", "metadata", "title", "file_name"}
    assert marked["TranscriptionCompleted"] == {"text"}
    segment_schema = TranscriptionCompleted.model_json_schema()["$defs"]["Segment"]
    assert segment_schema["properties"]["text"]["x-personal"] is True
