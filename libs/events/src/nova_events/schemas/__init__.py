"""The JSON Schemas of every event version, committed next to this module.

`<EventType>.v<N>.json` is the payload schema of `EventType` at schema version
N, as pydantic writes it (`x-personal` marks the personal fields). The files of
older versions stay after a version bump: they record what stored payloads of
that version look like. `python -m nova_events.schemas` (`make schemas`)
rewrites the files of every model in the registry; `--check` only compares.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..audio import DomainEvent
from ..compatibility import BreakKind, SchemaBreak, compatibility_breaks
from ..registry import REGISTRY
from ..versioning import SchemaRegistry

__all__ = [
    "SAMPLES_DIR",
    "SCHEMAS_DIR",
    "BreakKind",
    "SchemaBreak",
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


def file_name(event_type: str, schema_version: int) -> str:
    """`<EventType>.v<N>.json`, the name of a schema or sample file."""
    return f"{event_type}.v{schema_version}.json"


def parse_file_name(name: str) -> tuple[str, int] | None:
    """`(event_type, schema_version)` of a schema or sample file name, or None."""
    match = _FILE_NAME.match(name)
    if match is None:
        return None
    return match["event_type"], int(match["version"])


def schema_of(model: type[DomainEvent]) -> dict[str, Any]:
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
    files whose content changed (created or rewritten).
    """
    directory.mkdir(parents=True, exist_ok=True)
    pending = _pending(directory, registry)
    for path, text in pending:
        path.write_text(text, encoding="utf-8")
    return [path for path, _ in pending]


def outdated(
    directory: Path = SCHEMAS_DIR, registry: SchemaRegistry = REGISTRY
) -> list[Path]:
    """The files `export` would create or rewrite; empty if all are current."""
    return [path for path, _ in _pending(directory, registry)]


def _pending(directory: Path, registry: SchemaRegistry) -> list[tuple[Path, str]]:
    pending: list[tuple[Path, str]] = []
    for event_type, version, model in registry.models():
        path = directory / file_name(event_type, version)
        text = render(schema_of(model))
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            pending.append((path, text))
    return pending


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
