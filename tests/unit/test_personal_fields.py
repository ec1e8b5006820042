"""The `x-personal` marks of the event schemas and how `data` is split by them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from pydantic import BaseModel, ConfigDict

from nova_events import (
    AudioCreated,
    EventEnvelope,
    EventMetadata,
    SealedPayloadError,
    Segment,
    TranscriptionCompleted,
    UnknownEventError,
    UserErased,
    decode_payload,
    encode_payload,
)
from nova_events.audio import personal
from nova_events.personal import (
    ERASED_TEXT,
    SEALED_KEY,
    erase_personal,
    merge_personal,
    personal_fields,
    personal_fields_of,
    split_personal,
)


def transcript() -> TranscriptionCompleted:
    return TranscriptionCompleted(
        audio_id=uuid4(),
        text="the whole secret",
        confidence=0.9,
        language="en-US",
        segments=(
            Segment(start=0, end=1, text="the whole", confidence=0.8),
            Segment(start=1, end=2, text="secret", language="en-US"),
        ),
    )


def created() -> AudioCreated:
    user = uuid4()
    return AudioCreated(
        audio_id=uuid4(),
        user_id=user,
        s3_key=f"audio/{user}/a.wav",
        metadata={"meeting": "board"},
        title="Board meeting",
        file_name="board.wav",
        content_type="audio/wav",
        duration_s=3.0,
    )


def envelope_of(event: AudioCreated | TranscriptionCompleted) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type="AudioFile",
        aggregate_id=event.audio_id,
        event_type=event.event_type(),
        schema_version=1,
        version=1,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(event),
    )


def test_the_marks_name_every_personal_field_of_the_real_events() -> None:
    def names(event_type: str) -> dict[str, Any]:
        return {f.name: f.erased for f in personal_fields(event_type, 1)}

    assert names("AudioCreated") == {
        "s3_key": ERASED_TEXT,
        "metadata": {},
        "title": None,
        "file_name": None,
    }
    assert names("TranscriptionCompleted") == {
        "text": ERASED_TEXT,
        "segments[].text": ERASED_TEXT,
    }
    for event_type in ("AudioProcessingStarted", "AudioDeleted", "UserErased"):
        assert names(event_type) == {}


def test_an_unknown_event_has_no_personal_fields_to_guess() -> None:
    with pytest.raises(UnknownEventError):
        personal_fields("AudioRenamed", 1)


def test_split_takes_out_exactly_the_personal_fields_and_merge_puts_them_back() -> None:
    data = encode_payload(transcript())
    original = copy.deepcopy(data)

    public, taken = split_personal("TranscriptionCompleted", 1, data)

    assert data == original, "the argument is not changed"
    assert taken == {
        "text": "the whole secret",
        "segments[].text": ["the whole", "secret"],
    }
    assert "text" not in public
    assert all("text" not in s for s in public["segments"])
    assert public["segments"][0]["confidence"] == 0.8
    assert public["language"] == "en-US"
    kept = copy.deepcopy(public)
    assert merge_personal(public, taken) == original
    assert erase_personal("TranscriptionCompleted", 1, public) != public
    assert public == kept, "merging and erasing change no argument either"


def test_the_public_part_of_a_creation_keeps_ids_and_facts_only() -> None:
    event = created()
    public, taken = split_personal("AudioCreated", 1, encode_payload(event))

    assert set(taken) == {"s3_key", "metadata", "title", "file_name"}
    assert public == {
        "audio_id": str(event.audio_id),
        "user_id": str(event.user_id),
        "content_type": "audio/wav",
        "size_bytes": None,
        "duration_s": 3.0,
        "language": None,
    }


def test_erased_values_still_validate_against_the_model() -> None:
    for event in (created(), transcript()):
        envelope = envelope_of(event)
        public, _ = split_personal(envelope.event_type, 1, envelope.data)

        erased = envelope.as_erased(erase_personal(envelope.event_type, 1, public))
        decoded = decode_payload(erased)

        assert erased.erased
        assert not envelope.erased
        dumped = decoded.model_dump_json()
        for secret in ("secret", "Board", "board", "a.wav", "meeting"):
            assert secret not in dumped
        if isinstance(decoded, TranscriptionCompleted):
            assert decoded.text == ERASED_TEXT
            assert [s.text for s in decoded.segments] == [ERASED_TEXT] * 2
            assert decoded.segments[0].confidence == 0.8
        else:
            assert isinstance(decoded, AudioCreated)
            assert (decoded.s3_key, decoded.title, decoded.metadata) == (
                ERASED_TEXT,
                None,
                {},
            )


def test_erasing_drops_a_sealed_part_left_in_the_data() -> None:
    event = transcript()
    public, _ = split_personal("TranscriptionCompleted", 1, encode_payload(event))
    public[SEALED_KEY] = {"ciphertext": "..."}

    assert SEALED_KEY not in erase_personal("TranscriptionCompleted", 1, public)


def test_a_sealed_payload_is_refused_by_the_decoder_until_opened() -> None:
    envelope = envelope_of(transcript())
    public, _ = split_personal(envelope.event_type, 1, envelope.data)
    sealed = envelope.model_copy(update={"data": {**public, SEALED_KEY: {}}})

    with pytest.raises(SealedPayloadError, match="open the envelope"):
        decode_payload(sealed)


def test_the_erased_mark_is_never_serialized() -> None:
    envelope = envelope_of(created())
    erased = envelope.as_erased(dict(envelope.data))

    assert erased.erased
    assert "erased" not in erased.model_dump()
    assert not EventEnvelope.model_validate_json(erased.model_dump_json()).erased


def test_a_newly_marked_field_is_found_at_any_depth_without_other_changes() -> None:
    class Speaker(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        name: str = personal()
        seat: int

    class Turn(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        speaker: Speaker | None = None
        words: list[list[str]] = personal(default_factory=list)
        notes: tuple[Speaker, ...] = ()

    class Minutes(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")
        turns: list[Turn] = []
        chair: Speaker
        summary: str | None = personal(default=None)

    fields = {f.name: f.erased for f in personal_fields_of(Minutes.model_json_schema())}

    assert fields == {
        "turns[].speaker.name": ERASED_TEXT,
        "turns[].words": [],
        "turns[].notes[].name": ERASED_TEXT,
        "chair.name": ERASED_TEXT,
        "summary": None,
    }


def test_user_erased_carries_no_personal_data() -> None:
    event = UserErased(user_id=uuid4(), erased_at=datetime(2026, 3, 9, tzinfo=UTC))

    public, taken = split_personal("UserErased", 1, encode_payload(event))

    assert taken == {}
    assert public == encode_payload(event)
