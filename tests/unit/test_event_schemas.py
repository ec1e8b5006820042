"""The committed JSON Schemas and golden samples of every event version.

The schemas under `nova_events/schemas/` are the contract other services and
external readers rely on; these tests fail when the models drift from them, when
a model can no longer read what an older version wrote, and when a golden sample
stops decoding.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from nova_events import (
    DomainEvent,
    EventEnvelope,
    EventPayload,
    UserErased,
    decode_payload,
    dumps,
    loads,
)
from nova_events.registry import REGISTRY
from nova_events.schemas import (
    SAMPLES_DIR,
    SCHEMAS_DIR,
    BreakKind,
    SchemaBreak,
    SchemaBreakError,
    committed,
    compatibility_breaks,
    export,
    file_name,
    parse_file_name,
    render,
    schema_of,
)
from nova_events.schemas.__main__ import main as schemas_main
from nova_events.versioning import SchemaRegistry

COMMITTED = committed()
SAMPLES = sorted(SAMPLES_DIR.glob("*.json"))

# Breaks between an older version's schema and the current model that the
# upcaster chain deliberately handles, as `str(SchemaBreak)`, by (event type,
# old version). Review an entry like an API break: readers of that old version
# will see `UnknownEventError` for the new one until they upgrade.
ACKNOWLEDGED_BREAKS: dict[tuple[str, int], set[str]] = {}


def every_version() -> list[tuple[str, int]]:
    return [
        (event_type, version)
        for event_type in REGISTRY.event_types()
        for version in range(1, REGISTRY.current_version(event_type) + 1)
    ]


# (a) the committed schemas are what the code exports


@pytest.mark.parametrize(
    ("event_type", "version"),
    [(t, v) for t, v, _ in REGISTRY.models()],
    ids=str,
)
def test_committed_schema_matches_the_model(event_type: str, version: int) -> None:
    path = SCHEMAS_DIR / file_name(event_type, version)
    expected = render(schema_of(REGISTRY.model_for(event_type, version)))

    assert path.is_file(), f"{path.name} is missing: run `make schemas` and commit it"
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path.name} differs from the {event_type} model: if the change is "
        f"compatible run `make schemas` and commit the file, else bump "
        f"schema_version and add an upcaster (see nova_events.registry)"
    )


def test_schemas_check_command_agrees(tmp_path: Path) -> None:
    assert schemas_main(["--check"]) == 0
    assert schemas_main(["--directory", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(file_name(t, v) for t, v, _ in REGISTRY.models())
    stale = tmp_path / "out" / written[0]
    # A compatible difference: the committed file lacks its description.
    schema = json.loads(stale.read_text(encoding="utf-8"))
    schema.pop("description", None)
    schema["title"] = "Renamed"
    stale.write_text(render(schema), encoding="utf-8")
    assert schemas_main(["--check", "--directory", str(tmp_path / "out")]) == 1
    assert export(tmp_path / "out") == [stale]


class Clip(DomainEvent):
    """The committed shape of a test event: `Clip` v1."""

    name: str | None = None
    length_s: float = 0.0


class ClipNameRequired(DomainEvent):
    name: str
    length_s: float = 0.0


class ClipWithoutLength(DomainEvent):
    name: str | None = None


class ClipLengthAsText(DomainEvent):
    name: str | None = None
    length_s: str = "0"


class ClipWithTags(DomainEvent):
    name: str | None = None
    length_s: float = 0.0
    tags: tuple[str, ...] = ()


class Playlist(DomainEvent):
    title: str = ""


def clip_registry(model: type[DomainEvent]) -> SchemaRegistry:
    registry = SchemaRegistry()
    registry.register(model, event_type="Clip")
    return registry


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (ClipNameRequired, "made-required at name"),
        (ClipWithoutLength, "field-removed at length_s"),
        (ClipLengthAsText, "type-changed at length_s"),
    ],
    ids=["made-required", "field-removed", "retyped"],
)
def test_export_refuses_to_overwrite_a_committed_schema_with_a_break(
    tmp_path: Path, model: type[DomainEvent], expected: str
) -> None:
    export(tmp_path, clip_registry(Clip))
    committed_text = (tmp_path / "Clip.v1.json").read_text(encoding="utf-8")

    with pytest.raises(SchemaBreakError) as raised:
        export(tmp_path, clip_registry(model))

    assert (tmp_path / "Clip.v1.json").read_text(encoding="utf-8") == committed_text
    assert list(raised.value.breaks) == [("Clip", 1)]
    message = str(raised.value)
    assert "Clip v1 (Clip.v1.json)" in message
    assert expected in message
    assert "schema_version" in message
    assert "upcaster" in message


def test_export_writes_nothing_when_any_schema_breaks(tmp_path: Path) -> None:
    export(tmp_path, clip_registry(Clip))
    registry = clip_registry(ClipNameRequired)
    registry.register(Playlist)  # new: its file does not exist yet

    with pytest.raises(SchemaBreakError):
        export(tmp_path, registry)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["Clip.v1.json"]


def test_export_updates_a_committed_schema_for_a_compatible_addition(
    tmp_path: Path,
) -> None:
    export(tmp_path, clip_registry(Clip))

    written = export(tmp_path, clip_registry(ClipWithTags))

    assert written == [tmp_path / "Clip.v1.json"]
    assert committed(tmp_path)["Clip", 1] == schema_of(ClipWithTags)


def test_a_new_version_beside_the_committed_one_is_exported(tmp_path: Path) -> None:
    export(tmp_path, clip_registry(Clip))

    class ClipV2(ClipNameRequired):
        schema_version: ClassVar[int] = 2

    registry = clip_registry(ClipV2)
    registry.upcaster("Clip", from_version=1)(lambda data: {"name": "", **data})

    assert export(tmp_path, registry) == [tmp_path / "Clip.v2.json"]
    assert committed(tmp_path)["Clip", 1] == schema_of(Clip)


def test_schemas_command_refuses_a_break_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert schemas_main(["--directory", str(tmp_path)]) == 0
    capsys.readouterr()
    path = tmp_path / file_name("AudioCreated", 1)
    # The committed v1 had a field the current model no longer has.
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["properties"]["legacy"] = {"anyOf": [STRING, NULL], "default": None}
    path.write_text(render(schema), encoding="utf-8")

    assert schemas_main(["--directory", str(tmp_path)]) == 1

    err = capsys.readouterr().err
    assert "AudioCreated v1" in err
    assert "field-removed at legacy" in err
    assert "upcaster" in err
    assert json.loads(path.read_text(encoding="utf-8")) == schema


def test_export_refuses_an_unreadable_committed_schema(tmp_path: Path) -> None:
    (tmp_path / "Clip.v1.json").write_text("{not json", encoding="utf-8")

    with pytest.raises(ValueError, match="git checkout"):
        export(tmp_path, clip_registry(Clip))

    assert (tmp_path / "Clip.v1.json").read_text(encoding="utf-8") == "{not json"


# (b) the current models read every committed version


@pytest.mark.parametrize(("event_type", "version"), sorted(COMMITTED), ids=str)
def test_current_model_reads_every_committed_version(
    event_type: str, version: int
) -> None:
    assert event_type in REGISTRY.event_types(), (
        f"{file_name(event_type, version)} is committed but {event_type} is not "
        f"registered: stored events of that type could no longer be read"
    )
    current = REGISTRY.current_version(event_type)
    assert version <= current, (
        f"{file_name(event_type, version)} is newer than the current v{current}"
    )
    new = schema_of(REGISTRY.current_model(event_type))

    breaks = {str(b) for b in compatibility_breaks(COMMITTED[event_type, version], new)}

    acknowledged = ACKNOWLEDGED_BREAKS.get((event_type, version), set())
    assert not (acknowledged and version == current), (
        "breaks within the current version cannot be acknowledged: bump "
        "schema_version and add an upcaster"
    )
    assert breaks == acknowledged, (
        f"the current {event_type} model cannot read v{version} payloads:\n  "
        + "\n  ".join(sorted(breaks - acknowledged) or ["(none)"])
        + "\nstale acknowledgements:\n  "
        + "\n  ".join(sorted(acknowledged - breaks) or ["(none)"])
        + "\nkeep the change compatible, or bump schema_version, add an upcaster "
        "and acknowledge the breaks it handles in ACKNOWLEDGED_BREAKS"
    )


# (c) the break detector


def obj(
    properties: dict[str, Any],
    required: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(required),
        **extra,
    }


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
NULL = {"type": "null"}
UUID_STRING = {"type": "string", "format": "uuid"}


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, NULL], "default": None}


def kinds(old: dict[str, Any], new: dict[str, Any]) -> set[tuple[BreakKind, str]]:
    return {(b.kind, b.path) for b in compatibility_breaks(old, new)}


def test_a_removed_field_is_a_break() -> None:
    old = obj({"a": STRING, "b": optional(STRING)}, ("a",))
    new = obj({"a": STRING}, ("a",))

    assert kinds(old, new) == {(BreakKind.FIELD_REMOVED, "b")}


@pytest.mark.parametrize(
    ("old_type", "new_type"),
    [
        (STRING, INTEGER),
        (NUMBER, INTEGER),
        (optional(STRING), STRING),
        (STRING, UUID_STRING),
        ({"enum": ["a", "b"], "type": "string"}, {"enum": ["a"], "type": "string"}),
        (STRING, {"const": "a", "type": "string"}),
        ({"type": "array", "items": STRING}, {"type": "array", "items": INTEGER}),
        ({"type": "array", "items": STRING}, STRING),
        ({}, STRING),
    ],
    ids=[
        "string-to-integer",
        "number-to-integer",
        "null-dropped",
        "format-added",
        "enum-value-removed",
        "string-to-const",
        "array-items",
        "array-to-string",
        "any-to-string",
    ],
)
def test_a_narrowed_type_is_a_break(
    old_type: dict[str, Any], new_type: dict[str, Any]
) -> None:
    breaks = compatibility_breaks(obj({"f": old_type}, ("f",)), obj({"f": new_type}))

    assert [(b.kind, b.path.split("[")[0]) for b in breaks] == [
        (BreakKind.TYPE_CHANGED, "f")
    ]


@pytest.mark.parametrize(
    ("old_type", "new_type"),
    [
        (INTEGER, NUMBER),
        (STRING, optional(STRING)),
        (UUID_STRING, STRING),
        ({"enum": ["a"], "type": "string"}, {"enum": ["a", "b"], "type": "string"}),
        ({"const": "a", "type": "string"}, STRING),
        (optional(INTEGER), {"anyOf": [NUMBER, STRING, NULL]}),
        ({"type": ["string", "null"]}, optional(STRING)),
        (STRING, {}),
    ],
    ids=[
        "integer-to-number",
        "null-added",
        "format-dropped",
        "enum-value-added",
        "const-to-string",
        "union-widened",
        "type-list-as-anyof",
        "string-to-any",
    ],
)
def test_a_widened_type_is_compatible(
    old_type: dict[str, Any], new_type: dict[str, Any]
) -> None:
    assert compatibility_breaks(obj({"f": old_type}), obj({"f": new_type})) == []


def test_an_optional_field_made_required_is_a_break() -> None:
    old = obj({"a": STRING, "b": {"type": "string", "default": "x"}}, ("a",))
    new = obj({"a": STRING, "b": STRING}, ("a", "b"))

    assert kinds(old, new) == {(BreakKind.MADE_REQUIRED, "b")}


def test_a_new_required_field_is_a_break() -> None:
    old = obj({"a": STRING}, ("a",))
    new = obj({"a": STRING, "b": STRING}, ("a", "b"))

    assert kinds(old, new) == {(BreakKind.NEW_REQUIRED, "b")}


def test_a_new_optional_field_is_compatible() -> None:
    old = obj({"a": STRING}, ("a",))
    new = obj({"a": STRING, "b": optional(STRING), "c": {**INTEGER, "default": 1}})

    assert compatibility_breaks(old, {**new, "required": ["a"]}) == []


def test_nested_models_are_compared_field_by_field() -> None:
    transcription = schema_of(REGISTRY.current_model("TranscriptionCompleted"))
    without_text = copy.deepcopy(transcription)
    segment = without_text["$defs"]["Segment"]
    del segment["properties"]["text"]
    segment["required"].remove("text")
    renamed = copy.deepcopy(transcription)
    renamed["$defs"] = {"TimedText": renamed["$defs"].pop("Segment")}
    renamed["properties"]["segments"]["items"] = {"$ref": "#/$defs/TimedText"}

    assert kinds(transcription, without_text) == {
        (BreakKind.FIELD_REMOVED, "segments[].text")
    }
    assert compatibility_breaks(transcription, renamed) == []


def test_map_values_are_compared() -> None:
    old = obj({"m": {"type": "object", "additionalProperties": STRING}})
    new = obj({"m": {"type": "object", "additionalProperties": INTEGER}})

    assert kinds(old, new) == {(BreakKind.TYPE_CHANGED, "m.*")}
    assert compatibility_breaks(new, old) != []
    assert compatibility_breaks(old, obj({"m": {"type": "object"}})) == []


def test_a_break_says_what_changed() -> None:
    old = obj({"size": optional(INTEGER)})
    new = obj({"size": INTEGER}, ("size",))

    assert [str(b) for b in compatibility_breaks(old, new)] == [
        "type-changed at size: type changed from integer | null to integer; null "
        "is no longer accepted",
        "made-required at size: an optional field is now required; old payloads "
        "without it are refused",
    ]
    assert isinstance(compatibility_breaks(old, new)[0], SchemaBreak)


# (d) golden samples


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_golden_sample_decodes_to_the_current_model(path: Path) -> None:
    named = parse_file_name(path.name)
    assert named is not None, f"{path.name} is not named <EventType>.v<N>.json"
    event_type, version = named
    raw = path.read_bytes()

    envelope = loads(raw)
    event = decode_payload(envelope, EventPayload)

    assert (envelope.event_type, envelope.schema_version) == (event_type, version)
    assert type(event) is REGISTRY.current_model(event_type)
    if isinstance(event, UserErased):
        assert event.user_id == envelope.aggregate_id
    else:
        assert isinstance(event, DomainEvent)
        assert event.audio_id == envelope.aggregate_id
    assert json.loads(dumps(envelope)) == json.loads(raw), (
        f"{path.name} is not what the relay would publish for it"
    )


def test_golden_samples_are_envelopes_as_published() -> None:
    for path in SAMPLES:
        data = json.loads(path.read_text(encoding="utf-8"))
        assert set(data) == set(EventEnvelope.model_fields), path.name


# (e) every event version has a schema and a sample, and nothing else is there


def test_every_event_version_has_a_schema_and_a_sample() -> None:
    expected = {file_name(t, v) for t, v in every_version()}
    schemas = {file_name(t, v) for t, v in COMMITTED}
    samples = {p.name for p in SAMPLES}

    assert not expected - schemas, (
        f"missing schemas: {sorted(expected - schemas)}; run `make schemas`"
    )
    assert not expected - samples, (
        f"missing golden samples under {SAMPLES_DIR}: {sorted(expected - samples)}"
    )
    assert samples <= expected, f"samples of unknown versions: {samples - expected}"
    assert schemas <= expected, f"schemas of unknown versions: {schemas - expected}"
