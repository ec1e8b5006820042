"""RFC 9457 problem documents for every error an API answers."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://nova.example/problems/"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document; `type` ends in the problem's kind "
    "(e.g. `.../problems/not-found`), and some kinds add fields of their own.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "what to fix or do next"},
        "errors": {
            "type": "array",
            "description": "with `invalid-request`: each field that is wrong",
            "items": {
                "type": "object",
                "required": ["location", "message"],
                "properties": {
                    "location": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}
"""The schema of every error answer: `#/components/schemas/Problem` in the
OpenAPI document (see `nova_platform.http.openapi`)."""

AUTH_PROBLEMS: dict[int, str] = {
    401: "`unauthorized`: no bearer token, or not a valid one",
    403: "`forbidden`: the token lacks the scope this needs",
}
INVALID_REQUEST: dict[int, str] = {
    422: "`invalid-request`: a parameter or the body does not match this schema",
}


def problem_responses(described: Mapping[int, str]) -> dict[int | str, Any]:
    """A route's `responses=`: each status answered with a problem document."""
    return {
        status: {
            "description": description,
            "content": {
                PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        }
        for status, description in sorted(described.items())
    }


class Problem(Exception):  # noqa: N818 - an answer to the client, not a fault
    """Raised by a handler to answer with a problem document.

    `kind` becomes the problem type URI; `detail` tells the client what to fix.
    """

    status: int = 400
    kind: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        kind: str | None = None,
        title: str | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions
        if status is not None:
            self.status = status
        if kind is not None:
            self.kind = kind
        if title is not None:
            self.title = title

    def response(self) -> JSONResponse:
        return problem_response(
            self.status, self.kind, self.title, self.detail, **self.extensions
        )


class Unauthorized(Problem):
    status, kind, title = 401, "unauthorized", "Missing or invalid bearer token"


class Forbidden(Problem):
    status, kind, title = 403, "forbidden", "Not allowed"


class NotFound(Problem):
    status, kind, title = 404, "not-found", "Not found"


class NotReady(Problem):
    status, kind, title = 503, "not-ready", "A backend is not reachable"


class Conflict(Problem):
    status, kind, title = 409, "conflict", "Conflict"


def problem_response(
    status: int,
    kind: str,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    body["detail"] = detail
    body.update(extensions)
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if "retry_after_s" in extensions:
        headers["Retry-After"] = str(extensions["retry_after_s"])
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _allowed_methods(request: Request, given: str | None) -> str:
    """Every method of the resource at the request's path, for a 405's `Allow`
    (RFC 9110): FastAPI makes one route per method, so the router's `Allow`
    (`given`) names only one of them. The others come from the OpenAPI paths."""
    methods = {m.strip() for m in (given or "").split(",") if m.strip()}
    path = request.url.path
    for template, operations in request.app.openapi().get("paths", {}).items():
        parts = re.split(r"(\{[^/{}]+\})", template)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        if re.fullmatch(pattern, path):
            methods |= {m.upper() for m in operations if m != "parameters"}
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, including validation and unknown routes, as a problem."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "location": ".".join(str(p) for p in err.get("loc", ())),
                "message": err.get("msg", ""),
            }
            for err in exc.errors()
        ]
        fields = ", ".join(e["location"] for e in errors)
        return problem_response(
            422,
            "invalid-request",
            "The request does not match the API's schema",
            f"fix these fields and send again: {fields}",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed_methods(request, headers.get("Allow"))
        return problem_response(
            exc.status_code,
            f"http-{exc.status_code}",
            str(exc.detail),
            str(exc.detail),
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500, "internal", "Internal error", "the server failed; try again later"
        )
