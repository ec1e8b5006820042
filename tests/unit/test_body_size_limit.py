from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import BaseModel

from nova_platform.http.limits import BodySizeLimit, describe_limit
from nova_platform.http.problems import PROBLEM_JSON, install_problem_handlers

LIMIT = 1000


class Note(BaseModel):
    text: str


def limited_app(max_bytes: int = LIMIT) -> tuple[FastAPI, list[int]]:
    """An app that counts the body bytes its routes got, behind the limit."""
    app = FastAPI()
    install_problem_handlers(app)
    seen: list[int] = []

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
        seen.append(size)
        return {"size": size}

    @app.post("/notes")
    async def notes(note: Note) -> dict[str, int]:
        seen.append(len(note.text))
        return {"size": len(note.text)}

    app.add_middleware(BodySizeLimit, max_bytes=max_bytes)
    return app, seen


@pytest.fixture
def app() -> tuple[FastAPI, list[int]]:
    return limited_app()


def chunks(total: int, size: int = 100) -> Iterator[bytes]:
    """`total` bytes as a generator, which httpx sends chunked, without a length."""
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


def assert_too_large(response: Response) -> None:
    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["status"] == 413
    assert problem["type"].endswith("/request-too-large")
    assert problem["max_bytes"] == LIMIT
    assert "1000 bytes" in problem["detail"]
    assert "send a smaller file" in problem["detail"]


@pytest.mark.parametrize("size", [0, LIMIT - 1, LIMIT])
def test_a_body_within_the_limit_passes(
    app: tuple[FastAPI, list[int]], size: int
) -> None:
    client = TestClient(app[0])

    with_length = client.post("/raw", content=b"x" * size)
    chunked = client.post("/raw", content=chunks(size))

    assert with_length.status_code == chunked.status_code == 200
    assert with_length.json() == chunked.json() == {"size": size}
    assert app[1] == [size, size]


def test_a_content_length_over_the_limit_is_refused_unread(
    app: tuple[FastAPI, list[int]],
) -> None:
    response = TestClient(app[0]).post("/raw", content=b"x" * (LIMIT + 1))

    assert_too_large(response)
    assert app[1] == []


def test_a_chunked_body_is_refused_once_it_grows_past_the_limit(
    app: tuple[FastAPI, list[int]],
) -> None:
    response = TestClient(app[0]).post("/raw", content=chunks(LIMIT * 5))

    assert_too_large(response)
    assert app[1] == []


def test_a_framework_error_about_the_cut_off_body_still_answers_413(
    app: tuple[FastAPI, list[int]],
) -> None:
    # FastAPI turns any error while it reads a JSON body into a 400 of its own.
    body = b'{"text": "' + b"y" * LIMIT + b'"}'

    response = TestClient(app[0]).post(
        "/notes",
        content=chunks(len(body)),
        headers={"content-type": "application/json"},
    )

    assert_too_large(response)
    assert app[1] == []


def test_the_limit_is_named_in_megabytes() -> None:
    assert describe_limit(100 * 1024 * 1024) == "100 MB (104857600 bytes)"
    assert describe_limit(1536 * 1024) == "1.5 MB (1572864 bytes)"
