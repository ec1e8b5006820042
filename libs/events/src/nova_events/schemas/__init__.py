"""The JSON Schemas of every event version, committed next to this module.

`<EventType>.v<N>.json` is the payload schema of `EventType` at schema version
N, as pydantic writes it (`x-personal` marks the personal fields). The files of
older versions stay after a version bump: they record what stored payloads of
that version look like. `python -m nova_events.schemas` (`make schemas`)
writes the files of every model in the registry; `--check` only compares.

A committed file is a promise to readers of that version, so the export only
rewrites one when the change is compatible (`compatibility_breaks` is empty):
an incompatible model needs a new schema version and an upcaster instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..audio import EventPayload
from ..compatibility import BreakKind, SchemaBreak, compatibility_breaks
from ..registry import REGISTRY
from ..versioning import SchemaRegistry

__all__ = [
    "SAMPLES_DIR",
    "SCHEMAS_DIR",
    "BreakKind",
    "SchemaBreak",
    "SchemaBreakError",
    "committed",
    "compatibility_breaks",
    "export",
    "file_name",
    "outdated",
    "parse_file_name",
    "render",
    "schema_of",
]

SCHEMAS_DIR = Path(__file__).resolve().parent
"""Where the JSON Schemas are committed (this package's directory)."""

SAMPLES_DIR = SCHEMAS_DIR.parent / "samples"
"""Where the golden sample envelopes, `<EventType>.v<N>.json`, are committed."""

_FILE_NAME = re.compile(
    r"^(?P<event_type>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.json$"
)


class SchemaBreakError(ValueError):
    """Raised by `export` when a model no longer reads payloads of the schema
    committed for its version; nothing is written.

    `breaks` maps each such `(event_type, schema_version)` to its breaks.
    """

    def __init__(self, breaks: dict[tuple[str, int], list[SchemaBreak]]) -> None:
        self.breaks = breaks
        lines = [
            f"{event_type} v{version} "
            f"({file_name(event_type, version)}) would break its readers:"
            + "".join(f"\n  {b}" for b in found)
            for (event_type, version), found in sorted(breaks.items())
        ]
        super().__init__(
            "\n".join(lines) + "\nNothing was written: payloads of these "
            "versions are already stored and published. Keep the model "
            "compatible, or add a new schema version: give the changed model "
            "schema_version N + 1, register an upcaster from vN (see "
            "nova_events.registry), then run `make schemas` again"
        )


def file_name(event_type: str, schema_version: int) -> str:
    """`<EventType>.v<N>.json`, the name of a schema or sample file."""
    return f"{event_type}.v{schema_version}.json"


def parse_file_name(name: str) -> tuple[str, int] | None:
    """`(event_type, schema_version)` of a schema or sample file name, or None."""
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    return match["event_type"], int(match["version"])


def schema_of(model: type[EventPayload]) -> dict[str, Any]:
    """The JSON Schema of `model`'s payload."""
    return model.model_json_schema()


def render(schema: dict[str, Any]) -> str:
    """A schema as committed: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(
    directory: Path = SCHEMAS_DIR, registry: SchemaRegistry = REGISTRY
) -> list[Path]:
    """Write the schema of every model in `registry` into `directory`.

    Files of versions that have no model any more are left alone. Returns the
    files whose content changed (created or rewritten). Raises
    `SchemaBreakError`, writing nothing, if a model's schema would break
    readers of the file already committed for its version.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pending = _pending(directory, registry)
    breaks: dict[tuple[str, int], list[SchemaBreak]] = {}
    for key, path, text in pending:
        old = _committed_schema(path)
        found = [] if old is None else compatibility_breaks(old, json.loads(text))
        if found:
            breaks[key] = found
    if breaks:
        raise SchemaBreakError(breaks)
    for _, path, text in pending:
        path.write_text(text, encoding="utf-8")
    return [path for _, path, _ in pending]


def outdated(
    directory: Path = SCHEMAS_DIR, registry: SchemaRegistry = REGISTRY
) -> list[Path]:
    """The files `export` would create or rewrite; empty if all are current."""
    return [path for _, path, _ in _pending(directory, registry)]


def _pending(
    directory: Path, registry: SchemaRegistry
) -> list[tuple[tuple[str, int], Path, str]]:
    pending: list[tuple[tuple[str, int], Path, str]] = []
    for event_type, version, model in registry.models():
        path = directory / file_name(event_type, version)
        text = render(schema_of(model))
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            pending.append(((event_type, version), path, text))
    return pending


def _committed_schema(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); restore it with `git checkout` "
            f"before exporting, so the export can compare against it"
        ) from exc
    if not isinstance(schema, dict):
        raise ValueError(
            f"{path} does not hold a JSON Schema object; restore it with "
            f"`git checkout` before exporting"
        )
    return schema


def committed(directory: Path = SCHEMAS_DIR) -> dict[tuple[str, int], dict[str, Any]]:
    """Every `<EventType>.v<N>.json` in `directory`, by `(event_type, version)`."""
    schemas: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        key = parse_file_name(path.name)
        if key is None:
            raise ValueError(
                f"{path} is not named <EventType>.v<N>.json; rename or remove it"
            )
        schemas[key] = json.loads(path.read_text(encoding="utf-8"))
    return schemas
