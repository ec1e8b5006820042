"""The command API through its real wiring, with the in-memory event store."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_command_api.entrypoints.http import create_app
from nova_command_api.settings import CommandApiSettings
from nova_events import AUDIO_FILE
from nova_platform.auth.dev_token import issue

SECRET = "unit-test-secret-of-at-least-32-bytes"
USER = UUID("11111111-1111-4111-8111-111111111111")


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()


@pytest.fixture
def client(store: InMemoryEventStore) -> Iterator[TestClient]:
    app = create_app(CommandApiSettings(jwt_secret=SECRET), event_store=store)
    with TestClient(app) as test_client:
        yield test_client


def auth(scopes: str = "audio:write", user: UUID = USER) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(user, scopes, SECRET)}"}


def test_register_audio_appends_audio_created(
    client: TestClient, store: InMemoryEventStore
) -> None:
    response = client.post(
        "/commands/audio",
        json={"s3_key": f"audio/{USER}/talk.wav", "metadata": {"title": "Talk"}},
        headers={**auth(), "X-Correlation-Id": "corr-1"},
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1
    assert response.headers["location"] == f"/queries/audio/{body['audio_id']}"
    assert response.headers["etag"] == '"1"'
    assert response.headers["x-correlation-id"] == "corr-1"


async def test_the_stored_event_carries_user_and_correlation(
    client: TestClient, store: InMemoryEventStore
) -> None:
    response = client.post(
        "/commands/audio",
        json={"s3_key": f"audio/{USER}/a.wav"},
        headers={**auth(), "X-Correlation-Id": "corr-2"},
    )

    [event] = await store.get_events(AUDIO_FILE, UUID(response.json()["audio_id"]))
    assert event.event_type == "AudioCreated"
    assert event.metadata.correlation_id == "corr-2"
    assert event.metadata.user_id == str(USER)


@pytest.mark.parametrize(
    ("headers", "body", "status", "kind"),
    [
        ({}, {"s3_key": f"audio/{USER}/a.wav"}, 401, "unauthorized"),
        (auth("audio:read"), {"s3_key": f"audio/{USER}/a.wav"}, 403, "forbidden"),
        (auth(), {"s3_key": f"audio/{uuid4()}/a.wav"}, 403, "forbidden"),
        (auth(), {"s3_key": f"audio/{USER}/../x.wav"}, 422, "invalid-request"),
        (auth(), {"s3_key": ""}, 422, "invalid-request"),
        (auth(), {"s3_key": f"audio/{USER}/a.wav", "extra": 1}, 422, "invalid-request"),
        (auth(), {"s3_key": 12}, 422, "invalid-request"),
        (auth(), {}, 422, "invalid-request"),
    ],
    ids=[
        "no-token",
        "read-scope-only",
        "other-users-prefix",
        "path-traversal",
        "empty-key",
        "unknown-field",
        "wrong-type",
        "missing-key",
    ],
)
def test_bad_requests_get_a_problem_and_write_nothing(
    client: TestClient,
    store: InMemoryEventStore,
    headers: dict[str, str],
    body: dict[str, object],
    status: int,
    kind: str,
) -> None:
    response = client.post("/commands/audio", json=body, headers=headers)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/" + kind)
    assert problem["detail"]
    assert store._streams == {}


def test_malformed_json_is_a_problem(client: TestClient) -> None:
    response = client.post(
        "/commands/audio",
        content=b"{not json",
        headers={**auth(), "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
