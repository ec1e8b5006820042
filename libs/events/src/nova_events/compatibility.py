"""Which changes between two JSON Schemas of an event break readers of old data.

The question asked is: can the new model read every payload that was valid
under the old schema? Events are stored forever and replayed, so a model must
keep reading what its older self wrote, unless an upcaster rewrites it first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

Schema = Mapping[str, Any]

__all__ = ["BreakKind", "SchemaBreak", "compatibility_breaks"]


class BreakKind(StrEnum):
    """The kinds of incompatible change `compatibility_breaks` reports."""

    FIELD_REMOVED = "field-removed"
    TYPE_CHANGED = "type-changed"
    MADE_REQUIRED = "made-required"
    NEW_REQUIRED = "new-required"


@dataclass(frozen=True)
class SchemaBreak:
    """One incompatible change: its kind, the field's path, and what changed.

    `path` names nested fields with dots, array items with `[]` and the values
    of a map with `.*`, e.g. `segments[].text`; it is empty for the payload.
    """

    kind: BreakKind
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.path or '<payload>'}: {self.detail}"


def compatibility_breaks(old: Schema, new: Schema) -> list[SchemaBreak]:
    """The changes from `old` to `new` that break reading payloads valid under
    `old` with a model whose schema is `new`; empty if `new` reads them all.

    Both are JSON Schemas as pydantic's `model_json_schema()` writes them (local
    `$ref`s into `$defs`, `anyOf` for unions). Reported:

    - `field-removed`: a field of an object is gone. Models refuse unknown
      fields (`extra="forbid"`), so old payloads carrying it would be refused;
      even where they would not, its data would be silently dropped.
    - `type-changed`: some value the old schema allowed is not accepted by the
      new one: a JSON type that no alternative of the new `anyOf` takes (e.g.
      `null` dropped from `str | None`), a `format` added or changed (`string`
      to `uuid`), enum values removed, array items or map values changed
      likewise. Nested objects, also behind `$ref`, are compared field by
      field, whatever their definition is called.
    - `made-required`: a field the old schema had as optional is now required.
    - `new-required`: a field the old schema did not have is required (it has
      no default), so old payloads, which lack it, are refused.

    Deliberately allowed: widening, because every old value stays valid. That is
    `integer` to `number` (pydantic reads an int as a float; the opposite is a
    break), adding `null` or another alternative, dropping a `format`, adding
    enum values, and adding optional fields. Not compared: value constraints
    (`minimum`, `maxLength`, `pattern`, ...) and defaults (`encode_payload`
    writes every field, so stored payloads never rely on a default).
    """
    return _Comparison(old, new).values(old, new, "")


@dataclass(frozen=True)
class _Alt:
    """One alternative of a value's schema, with `$ref`s resolved."""

    schema: Schema
    ref: str | None

    @property
    def kind(self) -> str:
        declared = self.schema.get("type")
        if isinstance(declared, str):
            return declared
        if "properties" in self.schema:
            return "object"
        if "enum" in self.schema or "const" in self.schema:
            return "enum"
        return "any"

    @property
    def allowed_values(self) -> frozenset[str] | None:
        """The JSON texts of an `enum`/`const`, or None if not restricted."""
        if "const" in self.schema:
            return frozenset({_json_text(self.schema["const"])})
        if "enum" in self.schema:
            return frozenset(_json_text(v) for v in self.schema["enum"])
        return None


class _Comparison:
    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self._old_defs: Schema = old_root.get("$defs", {})
        self._new_defs: Schema = new_root.get("$defs", {})
        self._in_progress: set[tuple[str, str]] = set()

    def values(self, old: Schema, new: Schema, path: str) -> list[SchemaBreak]:
        """Breaks reading values valid under `old` with schema `new`."""
        old_alts = list(_alternatives(old, self._old_defs))
        new_alts = list(_alternatives(new, self._new_defs))
        breaks: list[SchemaBreak] = []
        unmatched: list[_Alt] = []
        for old_alt in old_alts:
            closest: list[SchemaBreak] | None = None
            for new_alt in new_alts:
                found = self._accepts(old_alt, new_alt, path)
                if found is None:
                    continue
                if closest is None or len(found) < len(closest):
                    closest = found
                if not closest:
                    break
            if closest is None:
                unmatched.append(old_alt)
            else:
                breaks.extend(closest)
        if unmatched:
            breaks.insert(
                0,
                SchemaBreak(
                    BreakKind.TYPE_CHANGED,
                    path,
                    f"type changed from {_describe(old_alts)} to "
                    f"{_describe(new_alts)}; {_describe(unmatched)} is no longer "
                    f"accepted",
                ),
            )
        return _unique(breaks)

    def _accepts(self, old: _Alt, new: _Alt, path: str) -> list[SchemaBreak] | None:
        """None if `new` takes no value of `old`'s kind; else the breaks of
        reading `old` values with `new` (empty if it reads them all)."""
        if new.kind == "any":
            return []
        if old.kind == "any":
            return None
        if old.kind != new.kind and (old.kind, new.kind) != ("integer", "number"):
            return None
        new_values = new.allowed_values
        if new_values is not None:
            old_values = old.allowed_values
            if old_values is None or not old_values <= new_values:
                return None
        new_format = new.schema.get("format")
        if new_format is not None and new_format != old.schema.get("format"):
            return None
        if new.kind == "array":
            return self._arrays(old.schema, new.schema, path)
        if new.kind == "object":
            if old.ref is not None and new.ref is not None:
                pair = (old.ref, new.ref)
                if pair in self._in_progress:
                    return []
                self._in_progress.add(pair)
                try:
                    return self._objects(old.schema, new.schema, path)
                finally:
                    self._in_progress.discard(pair)
            return self._objects(old.schema, new.schema, path)
        return []

    def _arrays(self, old: Schema, new: Schema, path: str) -> list[SchemaBreak] | None:
        old_prefix: list[Schema] = list(old.get("prefixItems", []))
        new_prefix: list[Schema] = list(new.get("prefixItems", []))
        if old_prefix or new_prefix:
            if len(old_prefix) != len(new_prefix):
                return None
            breaks: list[SchemaBreak] = []
            for index, (old_item, new_item) in enumerate(
                zip(old_prefix, new_prefix, strict=True)
            ):
                breaks.extend(self.values(old_item, new_item, f"{path}[{index}]"))
            return breaks
        return self.values(old.get("items", {}), new.get("items", {}), f"{path}[]")

    def _objects(self, old: Schema, new: Schema, path: str) -> list[SchemaBreak]:
        old_fields: Schema = old.get("properties", {})
        new_fields: Schema = new.get("properties", {})
        old_required = set(old.get("required", ()))
        new_required = set(new.get("required", ()))
        new_extra = _extra_values(new)
        breaks: list[SchemaBreak] = []
        for name, old_field in old_fields.items():
            field_path = f"{path}.{name}" if path else name
            if name in new_fields:
                breaks.extend(self.values(old_field, new_fields[name], field_path))
                if name in new_required and name not in old_required:
                    breaks.append(
                        SchemaBreak(
                            BreakKind.MADE_REQUIRED,
                            field_path,
                            "an optional field is now required; old payloads "
                            "without it are refused",
                        )
                    )
            elif "properties" not in new and new_extra is not None:
                # A map took the fields' place: their values must fit its values.
                breaks.extend(self.values(old_field, new_extra, field_path))
            else:
                breaks.append(
                    SchemaBreak(
                        BreakKind.FIELD_REMOVED,
                        field_path,
                        "the field was removed; old payloads that carry it are refused",
                    )
                )
        for name in new_fields:
            if name in new_required and name not in old_fields:
                breaks.append(
                    SchemaBreak(
                        BreakKind.NEW_REQUIRED,
                        f"{path}.{name}" if path else name,
                        "a new field is required (it has no default); old "
                        "payloads, which lack it, are refused",
                    )
                )
        old_extra = _extra_values(old)
        if old_extra is not None and "properties" not in old:
            map_path = f"{path}.*"
            if new_extra is None:
                breaks.append(
                    SchemaBreak(
                        BreakKind.TYPE_CHANGED,
                        map_path,
                        "a map with any keys became an object with fixed fields",
                    )
                )
            else:
                breaks.extend(self.values(old_extra, new_extra, map_path))
        return breaks


def _alternatives(
    schema: Schema, defs: Schema, ref: str | None = None
) -> Iterator[_Alt]:
    """The alternatives of `schema`: `anyOf`/`oneOf` flattened, `$ref`s and
    single-element `allOf`s resolved, a list-valued `type` split."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        if name not in defs:
            raise ValueError(f"$ref {schema['$ref']!r} is not in the schema's $defs")
        yield from _alternatives(defs[name], defs, name)
        return
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1:
        yield from _alternatives(all_of[0], defs, ref)
        return
    for union in ("anyOf", "oneOf"):
        if union in schema:
            for option in schema[union]:
                yield from _alternatives(option, defs)
            return
    declared = schema.get("type")
    if isinstance(declared, list):
        for single in declared:
            yield _Alt({**schema, "type": single}, ref)
        return
    yield _Alt(schema, ref)


def _extra_values(schema: Schema) -> Schema | None:
    """The schema of an object's undeclared keys' values; None if refused."""
    extra = schema.get("additionalProperties", True)
    if extra is False:
        return None
    if extra is True:
        return {}
    if isinstance(extra, Mapping):
        return extra
    raise ValueError(f"unexpected additionalProperties: {extra!r}")


def _ref_name(ref: str) -> str:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"only local $refs into $defs are supported, got {ref!r}")
    return ref.removeprefix(prefix)


def _describe(alts: list[_Alt]) -> str:
    return " | ".join(sorted({_describe_one(alt) for alt in alts})) or "nothing"


def _describe_one(alt: _Alt) -> str:
    return alt.ref if alt.ref is not None else _describe_schema(alt.schema)


def _describe_schema(schema: Schema) -> str:
    """A short text of a schema's type, for messages; `$ref`s by name."""
    if "$ref" in schema:
        return _ref_name(schema["$ref"])
    for union in ("anyOf", "oneOf", "allOf"):
        if union in schema:
            return " | ".join(_describe_schema(option) for option in schema[union])
    declared = schema.get("type")
    if isinstance(declared, list):
        return " | ".join(_describe_schema({**schema, "type": t}) for t in declared)
    alt = _Alt(schema, None)
    kind = alt.kind
    values = alt.allowed_values
    if values is not None:
        return f"{kind} in {{{', '.join(sorted(values))}}}"
    if "format" in schema:
        return f"{kind}({schema['format']})"
    if kind == "array" and "prefixItems" in schema:
        items = ", ".join(_describe_schema(item) for item in schema["prefixItems"])
        return f"array [{items}]"
    if kind == "array" and "items" in schema:
        return f"array of {_grouped(_describe_schema(schema['items']))}"
    extra = schema.get("additionalProperties")
    if kind == "object" and "properties" not in schema and isinstance(extra, Mapping):
        return f"map of {_grouped(_describe_schema(extra))}"
    return kind


def _grouped(text: str) -> str:
    return f"({text})" if " | " in text else text


def _json_text(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _unique(breaks: list[SchemaBreak]) -> list[SchemaBreak]:
    return list(dict.fromkeys(breaks))
