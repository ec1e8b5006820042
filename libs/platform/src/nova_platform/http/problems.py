"""RFC 9457 problem documents for every error an API answers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://nova.example/problems/"


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
    status: int, kind: str, title: str, detail: str, **extensions: Any
) -> JSONResponse:
    body = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    body["detail"] = detail
    body.update(extensions)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if "retry_after_s" in extensions:
        headers["Retry-After"] = str(extensions["retry_after_s"])
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


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
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            exc.status_code, f"http-{exc.status_code}", str(exc.detail), str(exc.detail)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500, "internal", "Internal error", "the server failed; try again later"
        )
