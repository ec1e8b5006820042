"""What FastAPI's OpenAPI document cannot say by itself, added once it is built.

- `#/components/schemas/Problem`, which the error responses declared with
  `problem_responses` refer to;
- parameters that may be left out are absent, never `null`: FastAPI writes an
  optional `str | None` parameter as `anyOf: [string, null]`, and a client (or
  a fuzzer) reading that sends the text `null`, which no route accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .problems import PROBLEM_SCHEMA


def _without_null(schema: dict[str, Any]) -> None:
    variants = [v for v in schema.get("anyOf", ()) if v.get("type") != "null"]
    if "anyOf" in schema and len(variants) == 1:
        del schema["anyOf"]
        schema.update(variants[0])


def finish_document(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with the `Problem` schema and null-free parameters (in place)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path in document.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for parameter in operation.get("parameters", ()):
                _without_null(parameter.get("schema", {}))
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve `app`'s OpenAPI document as `finish_document` makes it."""
    build = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_document(build())
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
