"""Schema versions and upcasters, proven on a throwaway registry.

Every real event is at schema version 1, so a local `Note` event with a v1 and a
v2 shows the chain working: old payloads reach consumers in the current shape.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest

from nova_events import (
    AUDIO_EVENTS,
    USER_EVENTS,
    AudioCreated,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    Payload,
    SchemaRegistry,
    SchemaRegistryError,
    UnknownEventError,
    decode_payload,
    encode_payload,
    model_for,
)
from nova_events.registry import REGISTRY
from nova_events.schemas import BreakKind, compatibility_breaks, schema_of


class NoteV1(DomainEvent):
    """A note as first written: one free-text title."""

    schema_version: ClassVar[int] = 1
    title: str


class Note(DomainEvent):
    """The current note: the title became `name`, and tags were added."""

    schema_version: ClassVar[int] = 2
    name: str
    tags: tuple[str, ...] = ()


class NoteV3(DomainEvent):
    schema_version: ClassVar[int] = 3
    name: str
    tags: tuple[str, ...] = ()
    pinned: bool


def note_v1_to_v2(data: Payload) -> Payload:
    data["name"] = data.pop("title")
    return data


def note_registry(*, keep_v1_model: bool = True) -> SchemaRegistry:
    registry = SchemaRegistry()
    if keep_v1_model:
        registry.register(NoteV1, event_type="Note")
    registry.register(Note)
    registry.upcaster("Note", from_version=1)(note_v1_to_v2)
    registry.validate()
    return registry


def envelope(event_type: str, schema_version: int, data: Payload) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type="Notebook",
        aggregate_id=uuid4(),
        event_type=event_type,
        schema_version=schema_version,
        version=1,
        metadata=EventMetadata(correlation_id="c"),
        data=data,
    )


AUDIO_ID = UUID("3f2b8c1e-7d4a-4e5b-9c6f-1a2b3c4d5e6f")


def test_v1_payload_decodes_to_the_current_model() -> None:
    registry = note_registry()
    stored = {"audio_id": str(AUDIO_ID), "title": "groceries"}

    decoded = registry.decode(envelope("Note", 1, stored))

    assert decoded == Note(audio_id=AUDIO_ID, name="groceries")
    assert type(decoded) is Note


def test_upcasting_leaves_the_stored_payload_alone() -> None:
    registry = note_registry()
    stored = envelope("Note", 1, {"audio_id": str(AUDIO_ID), "title": "groceries"})

    registry.decode(stored)

    assert stored.data == {"audio_id": str(AUDIO_ID), "title": "groceries"}


def test_current_payload_passes_through_no_upcaster() -> None:
    calls: list[Payload] = []
    registry = SchemaRegistry()
    registry.register(Note)

    @registry.upcaster("Note", from_version=1)
    def spy(data: Payload) -> Payload:  # pragma: no cover - must not run
        calls.append(data)
        return data

    current = encode_payload(Note(audio_id=AUDIO_ID, name="n", tags=("a",)))

    decoded = registry.decode(envelope("Note", 2, current))

    assert calls == []
    assert encode_payload(decoded) == current
    assert registry.upcast("Note", 2, current) == current


def test_the_chain_runs_every_step_in_order() -> None:
    registry = SchemaRegistry()
    registry.register(NoteV3, event_type="Note")

    @registry.upcaster("Note", from_version=2)
    def pin(data: Payload) -> Payload:
        data["pinned"] = data["name"].startswith("!")
        return data

    registry.add_upcaster("Note", 1, note_v1_to_v2)
    registry.validate()

    decoded = registry.decode_data(
        "Note", 1, {"audio_id": str(AUDIO_ID), "title": "!x"}
    )

    assert decoded == NoteV3(audio_id=AUDIO_ID, name="!x", pinned=True)


def test_a_gap_in_the_chain_is_refused_at_validation() -> None:
    registry = SchemaRegistry()
    registry.register(NoteV3, event_type="Note")
    registry.add_upcaster("Note", 1, note_v1_to_v2)

    with pytest.raises(SchemaRegistryError, match=r"Note: no upcaster from v2 to v3"):
        registry.validate()
    # Reading before anyone validated finds the gap as well.
    with pytest.raises(SchemaRegistryError, match="from_version=2"):
        registry.decode_data("Note", 3, {})


def test_a_chain_without_its_first_step_is_refused() -> None:
    registry = SchemaRegistry()
    registry.register(Note)

    with pytest.raises(SchemaRegistryError, match="no upcaster from v1 to v2"):
        registry.validate()


def test_upcasters_that_could_never_run_are_refused() -> None:
    registry = SchemaRegistry()
    registry.register(Note)
    registry.add_upcaster("Note", 1, note_v1_to_v2)
    registry.add_upcaster("Note", 2, note_v1_to_v2)
    registry.add_upcaster("Memo", 1, note_v1_to_v2)

    with pytest.raises(SchemaRegistryError) as raised:
        registry.validate()

    message = str(raised.value)
    assert "upcaster note_v1_to_v2 from v2 is at or above the current version" in (
        message
    )
    assert "upcasters are declared for Memo, which has no registered model" in message


def test_duplicates_are_refused_at_registration() -> None:
    registry = note_registry()

    with pytest.raises(SchemaRegistryError, match="Note v2 is registered twice"):
        registry.register(Note)
    with pytest.raises(SchemaRegistryError, match="has two upcasters"):
        registry.add_upcaster("Note", 1, note_v1_to_v2)
    with pytest.raises(SchemaRegistryError, match="from_version must be >= 1"):
        registry.add_upcaster("Note", 0, note_v1_to_v2)


def test_a_future_version_asks_to_upgrade() -> None:
    registry = note_registry()

    with pytest.raises(UnknownEventError, match="upgrade nova-events") as raised:
        registry.decode(envelope("Note", 3, {"audio_id": str(AUDIO_ID)}))
    assert "knows versions 1 to 2" in str(raised.value)


def test_an_unknown_event_type_is_named() -> None:
    with pytest.raises(UnknownEventError, match="'Memo'"):
        note_registry().decode(envelope("Memo", 1, {}))


def test_model_for_gives_the_model_of_exactly_that_version() -> None:
    registry = note_registry()

    assert registry.model_for("Note", 1) is NoteV1
    assert registry.model_for("Note", 2) is Note
    assert registry.current_model("Note") is Note
    assert registry.current_version("Note") == 2
    assert list(registry.models()) == [("Note", 1, NoteV1), ("Note", 2, Note)]
    with pytest.raises(UnknownEventError, match="read them with decode_payload"):
        note_registry(keep_v1_model=False).model_for("Note", 1)


def test_a_failing_upcaster_is_named_in_the_error() -> None:
    registry = note_registry()

    with pytest.raises(KeyError) as raised:
        registry.decode_data("Note", 1, {"audio_id": str(AUDIO_ID)})

    assert any(
        "while upcasting Note from v1 to v2 with note_v1_to_v2" in note
        for note in raised.value.__notes__
    )


def test_an_upcaster_must_return_a_dict() -> None:
    registry = SchemaRegistry()
    registry.register(Note)

    def broken(data: Payload) -> Any:
        return None

    registry.add_upcaster("Note", 1, broken)

    with pytest.raises(TypeError, match="returned NoneType, not a dict"):
        registry.upcast("Note", 1, {})


def test_the_upcaster_covers_what_the_schemas_say_broke() -> None:
    """v1 -> v2 is incompatible, which is exactly why it needs an upcaster."""
    breaks = compatibility_breaks(schema_of(NoteV1), schema_of(Note))

    assert {(b.kind, b.path) for b in breaks} == {
        (BreakKind.FIELD_REMOVED, "title"),
        (BreakKind.NEW_REQUIRED, "name"),
    }


def test_every_real_event_is_at_version_one_and_the_chain_is_complete() -> None:
    REGISTRY.validate()

    real = (*AUDIO_EVENTS, *USER_EVENTS)
    assert REGISTRY.event_types() == tuple(sorted(m.event_type() for m in real))
    for model in real:
        assert model.schema_version == 1
        assert REGISTRY.current_model(model.event_type()) is model
        assert model_for(model.event_type(), 1) is model


def test_the_public_functions_use_the_default_registry() -> None:
    event = AudioCreated(audio_id=AUDIO_ID, user_id=uuid4(), s3_key="audio/u/a.wav")

    decoded = decode_payload(envelope("AudioCreated", 1, encode_payload(event)))

    assert decoded == event
    with pytest.raises(UnknownEventError, match="upgrade nova-events"):
        decode_payload(envelope("AudioCreated", 2, encode_payload(event)))
