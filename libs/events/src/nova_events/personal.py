"""Which fields of an event hold personal data, and how `data` is split by them.

The fields are the ones marked `x-personal` in the event's JSON Schema (with
`nova_events.audio.personal`), nested ones too: `segments[].text` is the text
of every segment. Marking a field is all it takes: the store seals what the
marks name, readers open it, erasure blanks it.

Pure functions on `data` dicts, no cryptography: `nova_platform.personal`
encrypts what `split_personal` takes out and puts the result under
`SEALED_KEY`; opening decrypts it and hands it to `merge_personal`, or, when
the owner's key is gone, fills the fields with `erase_personal`'s values.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .envelope import SEALED_KEY
from .registry import REGISTRY
from .versioning import Payload, UnknownEventError

__all__ = [
    "ERASED_TEXT",
    "SEALED_KEY",
    "PersonalField",
    "erase_personal",
    "is_sealed",
    "merge_personal",
    "personal_fields",
    "personal_fields_of",
    "split_personal",
]

ERASED_TEXT = "<erased>"
"""What a required text field holds once its owner was erased. Optional fields
become their default (None, {}, [])."""

_ITEMS = "[]"

Schema = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PersonalField:
    """One marked field: its path (`[]` steps into every item of an array) and
    the value it takes once erased, which the model still accepts."""

    path: tuple[str, ...]
    erased: Any

    @property
    def name(self) -> str:
        """`title`, `segments[].text`: the key of the field in a sealed part."""
        return _name(self.path)


def personal_fields(event_type: str, schema_version: int) -> tuple[PersonalField, ...]:
    """The personal fields of `event_type` at `schema_version`, from the model's
    JSON Schema, or from the committed schema of an older version whose model
    is no longer kept. Raises `UnknownEventError` for an unknown event."""
    return _fields(event_type, schema_version)


def personal_fields_of(schema: Schema) -> tuple[PersonalField, ...]:
    """The fields a payload JSON Schema marks `x-personal`, at any depth."""
    defs = schema.get("$defs", {})
    found: dict[tuple[str, ...], PersonalField] = {}
    for field in _walk_object(schema, defs, (), frozenset()):
        found.setdefault(field.path, field)
    return tuple(found.values())


def is_sealed(data: Mapping[str, Any]) -> bool:
    """Whether `data` holds its personal fields sealed (stored form)."""
    return SEALED_KEY in data


def split_personal(
    event_type: str, schema_version: int, data: Payload
) -> tuple[Payload, dict[str, Any]]:
    """`data` without its personal fields, and those fields by name.

    `data` itself is not changed. A field that `data` lacks is not taken; an
    event without personal fields gives `data` back and `{}`.
    """
    fields = personal_fields(event_type, schema_version)
    if not fields:
        return data, {}
    # Copied only along the fields' paths: `data` stays as it was.
    public = dict(data)
    taken: dict[str, Any] = {}
    for field in fields:
        found, value = _take(public, field.path)
        if found:
            taken[field.name] = value
    return public, taken


def merge_personal(public: Payload, personal: Mapping[str, Any]) -> Payload:
    """`public` with the fields `split_personal` took out put back (`public`
    itself is not changed)."""
    data = dict(public)
    for name, value in personal.items():
        _put(data, _path(name), value)
    return data


def erase_personal(event_type: str, schema_version: int, public: Payload) -> Payload:
    """`public` with every personal field set to its erased value (`public`
    itself is not changed)."""
    data = dict(public)
    data.pop(SEALED_KEY, None)
    for field in personal_fields(event_type, schema_version):
        _fill(data, field.path, field.erased)
    return data


# -- the schema walk -----------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _fields(event_type: str, schema_version: int) -> tuple[PersonalField, ...]:
    return personal_fields_of(_schema(event_type, schema_version))


def _schema(event_type: str, schema_version: int) -> dict[str, Any]:
    try:
        return REGISTRY.model_for(event_type, schema_version).model_json_schema()
    except UnknownEventError:
        if not 1 <= schema_version < REGISTRY.current_version(event_type):
            raise
    # An older version whose model was dropped: its committed schema says.
    from .schemas import SCHEMAS_DIR, file_name

    path = SCHEMAS_DIR / file_name(event_type, schema_version)
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _walk_object(
    schema: Schema, defs: Schema, path: tuple[str, ...], seen: frozenset[str]
) -> Iterator[PersonalField]:
    for name, prop in schema.get("properties", {}).items():
        here = (*path, name)
        if prop.get("x-personal"):
            yield PersonalField(here, _erased_value(prop, defs))
        else:
            yield from _walk_value(prop, defs, here, seen)


def _walk_value(
    prop: Schema, defs: Schema, path: tuple[str, ...], seen: frozenset[str]
) -> Iterator[PersonalField]:
    for alternative, refs in _alternatives(prop, defs, seen):
        items = alternative.get("items")
        if alternative.get("type") == "array" and isinstance(items, Mapping):
            yield from _walk_value(items, defs, (*path, _ITEMS), refs)
        elif "properties" in alternative:
            yield from _walk_object(alternative, defs, path, refs)


def _alternatives(
    prop: Schema, defs: Schema, seen: frozenset[str]
) -> Iterator[tuple[Schema, frozenset[str]]]:
    """The schemas a value may match, `$ref`s resolved (each once per path,
    so a model that contains itself ends the walk)."""
    ref = prop.get("$ref")
    if isinstance(ref, str):
        if ref in seen:
            return
        target = defs.get(ref.rsplit("/", 1)[-1], {})
        yield from _alternatives(target, defs, seen | {ref})
        return
    branches = [*prop.get("anyOf", ()), *prop.get("oneOf", ()), *prop.get("allOf", ())]
    if not branches:
        yield prop, seen
    for branch in branches:
        yield from _alternatives(branch, defs, seen)


def _erased_value(prop: Schema, defs: Schema) -> Any:
    if "default" in prop:
        return copy.deepcopy(prop["default"])
    types = {alt.get("type") for alt, _ in _alternatives(prop, defs, frozenset())}
    if "string" in types:
        return ERASED_TEXT
    if "object" in types:
        return {}
    if "array" in types:
        return []
    return None


# -- paths in a payload -----------------------------------------------------------


def _name(path: tuple[str, ...]) -> str:
    name = ""
    for step in path:
        if step == _ITEMS:
            name += _ITEMS
        else:
            name += f".{step}" if name else step
    return name


@functools.lru_cache(maxsize=1024)
def _path(name: str) -> tuple[str, ...]:
    path: list[str] = []
    for part in name.split("."):
        depth = 0
        while part.endswith(_ITEMS):
            part, depth = part[: -len(_ITEMS)], depth + 1
        path.append(part)
        path.extend([_ITEMS] * depth)
    return tuple(path)


def _own(value: Any) -> Any:
    """A shallow copy of a container about to be changed; other values as
    they are. Steps down a path copy each container they change, so nothing
    the caller holds is ever changed."""
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def _take(node: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    """Remove what `path` names from `node` (a copy of ours): (found, the
    value). Through an array, the value is the list of what each item held
    (None if it held none)."""
    step, rest = path[0], path[1:]
    if step == _ITEMS:
        if not isinstance(node, list):
            return False, None
        values = []
        for i, item in enumerate(node):
            node[i] = _own(item)
            values.append(_take(node[i], rest)[1])
        return True, values
    if not isinstance(node, dict) or step not in node:
        return False, None
    if not rest:
        return True, node.pop(step)
    node[step] = _own(node[step])
    return _take(node[step], rest)


def _put(node: Any, path: tuple[str, ...], value: Any) -> None:
    step, rest = path[0], path[1:]
    if step == _ITEMS:
        if isinstance(node, list) and isinstance(value, list):
            for i, item_value in enumerate(value[: len(node)]):
                node[i] = _own(node[i])
                _put(node[i], rest, item_value)
        return
    if not isinstance(node, dict):
        return
    if not rest:
        node[step] = value
    elif step in node:
        node[step] = _own(node[step])
        _put(node[step], rest, value)


def _fill(node: Any, path: tuple[str, ...], erased: Any) -> None:
    step, rest = path[0], path[1:]
    if step == _ITEMS:
        for i in range(len(node) if isinstance(node, list) else 0):
            node[i] = _own(node[i])
            _fill(node[i], rest, erased)
        return
    if not isinstance(node, dict):
        return
    if not rest:
        node[step] = copy.deepcopy(erased)
    elif step in node:
        node[step] = _own(node[step])
        _fill(node[step], rest, erased)
