"""Regression tests for what fuzzing the APIs found (tests/fuzz): each test is
one finding, fixed in the service or in its OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import grpc
import pytest
from fastapi.testclient import TestClient

from nova_command_api.adapters.memory_audio_storage import InMemoryAudioStorage
from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore
from nova_command_api.entrypoints.http import create_app as command_app
from nova_command_api.settings import CommandApiSettings
from nova_platform.auth.dev_token import issue
from nova_platform.http.problems import PROBLEM_JSON
from nova_platform.webhooks import InMemoryWebhookStore
from nova_query_api.entrypoints.grpc_server import SERVICE_NAME
from nova_query_api.entrypoints.http import create_app as query_app
from nova_query_api.grpc_gen import query_pb2
from nova_query_api.settings import QueryApiSettings

from .test_query_api import FakeRepository, item
from .test_query_grpc import Both, bearer, both, trailers

__all__ = ["both"]  # the gRPC fixture, used below

SECRET = "unit-test-secret-of-at-least-32-bytes"
USER = UUID("11111111-1111-4111-8111-111111111111")
WRITER = {"Authorization": f"Bearer {issue(USER, 'audio:write', SECRET)}"}
READER = {"Authorization": f"Bearer {issue(USER, 'audio:read', SECRET)}"}


@pytest.fixture
def commands() -> Iterator[TestClient]:
    app = command_app(
        CommandApiSettings(jwt_secret=SECRET),
        event_store=InMemoryEventStore(),
        storage=InMemoryAudioStorage(),
        idempotency=InMemoryIdempotencyStore(),
        webhooks=InMemoryWebhookStore(),
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def queries() -> Iterator[TestClient]:
    repository = FakeRepository()
    repository.add(item(version=2))
    app = query_app(QueryApiSettings(jwt_secret=SECRET), repository=repository)
    with TestClient(app) as client:
        yield client


def problem(response: Any) -> str:
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    kind: str = response.json()["type"]
    return kind.rsplit("/", 1)[-1]


def test_an_if_match_of_non_ascii_digits_is_a_400_not_a_500(
    commands: TestClient,
) -> None:
    # "²".isdigit() is True, but int("²") raises: this was a 500.
    for tag in ['"²"', "²", '"¹"', '"3"\n', '"3', "W/3"]:
        response = commands.post(
            f"/commands/audio/{uuid4()}/transcribe",
            headers={**WRITER, "If-Match": tag.encode("latin-1")},
        )

        assert response.status_code == 400, (tag, response.text)
        assert problem(response) == "invalid-if-match"


def test_every_documented_if_match_form_still_pins_the_version(
    commands: TestClient,
) -> None:
    for tag in ['"1"', 'W/"1"', "1", ' "1" ', "*"]:
        response = commands.delete(
            f"/commands/audio/{uuid4()}", headers={**WRITER, "If-Match": tag}
        )

        assert response.status_code == 404, (tag, response.text)


def test_a_trailing_newline_passes_no_whole_value_rule(commands: TestClient) -> None:
    # `re.match` with `$` let "value\n" through the key, key and secret rules.
    key = commands.post(
        "/commands/audio",
        json={"s3_key": f"audio/{USER}/talk.wav\n"},
        headers=WRITER,
    )
    idempotency = commands.post(
        f"/commands/audio/{uuid4()}/transcribe",
        headers={**WRITER, "Idempotency-Key": "key\n"},
    )
    secret = commands.post(
        "/commands/webhooks",
        json={
            "url": "https://hooks.example.com/nova",
            "event_types": ["*"],
            "secret": "s" * 20 + "\n",
        },
        headers=WRITER,
    )

    assert (key.status_code, problem(key)) == (422, "invalid-request")
    assert (idempotency.status_code, problem(idempotency)) == (
        400,
        "invalid-idempotency-key",
    )
    assert (secret.status_code, problem(secret)) == (422, "invalid-request")


def test_a_405_names_every_method_of_the_resource_in_allow(
    commands: TestClient, queries: TestClient
) -> None:
    # The problem handler dropped Starlette's `Allow`; and Starlette's named
    # only the first route's method, as FastAPI makes one route per method.
    webhooks = commands.put("/commands/webhooks", headers=WRITER)
    one = commands.patch(f"/commands/webhooks/{uuid4()}", headers=WRITER)
    audio = queries.post("/queries/audio", headers=READER)

    assert webhooks.status_code == 405
    assert problem(webhooks) == "http-405"
    assert set(webhooks.headers["allow"].split(", ")) >= {"GET", "POST"}
    assert set(one.headers["allow"].split(", ")) >= {"DELETE", "GET"}
    assert "GET" in audio.headers["allow"].split(", ")


def test_min_version_against_x_min_version_names_the_field(
    queries: TestClient,
) -> None:
    response = queries.get(
        f"/queries/audio/{uuid4()}?min_version=2",
        headers={**READER, "X-Min-Version": "1"},
    )

    assert (response.status_code, problem(response)) == (422, "invalid-request")
    assert response.json()["errors"][0]["location"] == "header.X-Min-Version"


def operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


@pytest.mark.parametrize("api", ["commands", "queries"])
def test_every_error_answer_is_documented_as_a_problem(
    api: str, request: pytest.FixtureRequest
) -> None:
    client: TestClient = request.getfixturevalue(api)
    document = client.get(f"/{api}/openapi.json").json()

    assert "Problem" in document["components"]["schemas"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for name, operation in operations(document):
        errors = {s: r for s, r in operation["responses"].items() if s >= "400"}
        assert {"401", "403", "422"} <= set(errors), name
        for status, response in errors.items():
            assert list(response["content"]) == [PROBLEM_JSON], (name, status)
        assert operation["security"] == [{"bearerAuth": []}], name


@pytest.mark.parametrize("api", ["commands", "queries"])
def test_optional_parameters_are_absent_never_null(
    api: str, request: pytest.FixtureRequest
) -> None:
    # `anyOf: [string, null]` made clients (and schemathesis) send "null".
    client: TestClient = request.getfixturevalue(api)
    document = client.get(f"/{api}/openapi.json").json()

    for name, operation in operations(document):
        for parameter in operation.get("parameters", ()):
            assert "anyOf" not in parameter["schema"], (name, parameter["name"])


def test_the_command_documents_state_the_rules_the_handlers_apply(
    commands: TestClient,
) -> None:
    document = commands.get("/commands/openapi.json").json()
    create = document["paths"]["/commands/audio"]["post"]
    upload = create["requestBody"]["content"]["multipart/form-data"]["schema"]
    transcribe = document["paths"]["/commands/audio/{audio_id}/transcribe"]["post"]
    headers = {p["name"]: p["schema"] for p in transcribe["parameters"]}

    assert upload["additionalProperties"] is False
    assert "pattern" in headers["If-Match"]
    assert "pattern" in headers["Idempotency-Key"]
    assert set(create["responses"]["201"]["links"]) == {
        "TranscribeAudio",
        "DeleteAudio",
    }


@pytest.mark.parametrize(
    "raw", [b"\x0a\x02\xff\xfe", b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f"]
)
async def test_grpc_request_bytes_that_are_no_message_are_invalid_argument(
    both: Both, raw: bytes
) -> None:
    # grpc answered UNKNOWN with protobuf's exception, and no trailers.
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, query_pb2.Audio] = (
        both.channel.unary_unary(
            f"/{SERVICE_NAME}/GetAudio",
            request_serializer=None,
            response_deserializer=query_pb2.Audio.FromString,
        )
    )

    with pytest.raises(grpc.aio.AioRpcError) as malformed:
        await call(raw, metadata=bearer())
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await call(raw)

    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers(malformed.value)["nova-problem-type"] == "invalid-request"
    assert trailers(malformed.value)["nova-field"] == "request"
    assert "GetAudioRequest" in (malformed.value.details() or "")
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
