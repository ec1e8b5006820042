"""The command API through its real wiring, with in-memory adapters."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from nova_command_api.adapters.memory_audio_storage import InMemoryAudioStorage
from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore
from nova_command_api.adapters.metered_event_store import MeteredEventStore
from nova_command_api.application.ports import (
    ConcurrencyError,
    EventStoreUnavailableError,
)
from nova_command_api.entrypoints.http import create_app
from nova_command_api.settings import CommandApiSettings
from nova_events import AUDIO_FILE, AudioCreated, EventMetadata
from nova_platform.auth.dev_token import issue

from ..audio_samples import sine_wav

SECRET = "unit-test-secret-of-at-least-32-bytes"
USER = UUID("11111111-1111-4111-8111-111111111111")
WAV = sine_wav(1.0)


class World:
    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.storage = InMemoryAudioStorage()
        self.idempotency = InMemoryIdempotencyStore()

    def app_settings(self) -> CommandApiSettings:
        return CommandApiSettings(jwt_secret=SECRET, max_upload_bytes=200_000)

    async def events(self, audio_id: str) -> list[str]:
        stored = await self.store.get_events(AUDIO_FILE, UUID(audio_id))
        return [str(e.event_type) for e in stored]


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    app = create_app(
        world.app_settings(),
        event_store=world.store,
        storage=world.storage,
        idempotency=world.idempotency,
    )
    with TestClient(app) as test_client:
        yield test_client


def auth(scopes: str = "audio:write", user: UUID = USER) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(user, scopes, SECRET)}"}


def upload(client: TestClient, **headers: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/commands/audio",
        files={"file": ("talk.wav", WAV, "audio/wav")},
        data={"title": "Talk", "language": "en-US"},
        headers={**auth(), **headers},
    )
    return response


def test_upload_stores_the_file_and_appends_audio_created(
    client: TestClient, world: World
) -> None:
    response = upload(client, **{"X-Correlation-Id": "corr-1"})

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1
    assert body["status"] == "pending"
    assert response.headers["location"] == f"/queries/audio/{body['audio_id']}"
    assert response.headers["etag"] == '"1"'
    [event] = asyncio.run(world.store.get_events(AUDIO_FILE, UUID(body["audio_id"])))
    assert event.data["s3_key"] == f"audio/{USER}/{body['audio_id']}.wav"
    assert event.data["content_type"] == "audio/wav"
    assert event.data["size_bytes"] == len(WAV)
    assert event.data["duration_s"] == pytest.approx(1.0, abs=0.01)
    assert event.data["title"] == "Talk"
    assert event.data["file_name"] == "talk.wav"
    assert event.metadata.correlation_id == "corr-1"
    assert event.metadata.user_id == str(USER)
    assert event.metadata.command_id
    stored = asyncio.run(world.storage.head(event.data["s3_key"]))
    assert stored is not None
    assert stored.size == len(WAV)


def test_register_needs_the_object_to_exist(client: TestClient, world: World) -> None:
    key = f"audio/{USER}/already-there.wav"
    missing = client.post("/commands/audio", json={"s3_key": key}, headers=auth())
    asyncio.run(world.storage.put(key, io.BytesIO(WAV), len(WAV), "audio/wav"))

    registered = client.post("/commands/audio", json={"s3_key": key}, headers=auth())

    assert missing.status_code == 422
    assert missing.json()["type"].endswith("/object-missing")
    assert registered.status_code == 201


def test_full_command_flow(client: TestClient, world: World) -> None:
    audio_id = upload(client).json()["audio_id"]
    service = auth("service:transcriber", uuid4())

    started = client.post(f"/commands/audio/{audio_id}/transcribe", headers=auth())
    result = client.post(
        f"/commands/audio/{audio_id}/transcription-result",
        json={
            "outcome": "completed",
            "attempt": 1,
            "text": "hello world",
            "confidence": 0.93,
            "language": "en-US",
            "segments": [{"start": 0, "end": 1.0, "text": "hello world"}],
        },
        headers=service,
    )
    again = client.post(f"/commands/audio/{audio_id}/transcribe", headers=auth())
    deleted = client.delete(f"/commands/audio/{audio_id}", headers=auth())
    deleted_again = client.delete(f"/commands/audio/{audio_id}", headers=auth())

    assert started.status_code == 202
    assert started.json()["version"] == 2
    assert result.status_code == 200
    assert result.json()["version"] == 4
    assert result.json()["status"] == "completed"
    assert again.status_code == 202
    assert again.json()["version"] == 5
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "deleted"
    assert deleted_again.status_code == 200
    assert deleted_again.json()["version"] == deleted.json()["version"]
    assert asyncio.run(world.events(audio_id)) == [
        "AudioCreated",
        "AudioProcessingStarted",
        "TranscriptionCompleted",
        "AudioProcessingCompleted",
        "AudioProcessingStarted",
        "AudioDeleted",
    ]
    assert world.storage.objects == {}


def test_transcribe_defaults_to_the_upload_language(
    client: TestClient, world: World
) -> None:
    audio_id = upload(client).json()["audio_id"]

    client.post(f"/commands/audio/{audio_id}/transcribe", headers=auth())

    events = asyncio.run(world.store.get_events(AUDIO_FILE, UUID(audio_id)))
    assert events[-1].data["language"] == "en-US"


def test_if_match_pins_the_version(client: TestClient) -> None:
    audio_id = upload(client).json()["audio_id"]

    stale = client.post(
        f"/commands/audio/{audio_id}/transcribe",
        headers={**auth(), "If-Match": '"7"'},
    )
    fresh = client.post(
        f"/commands/audio/{audio_id}/transcribe",
        headers={**auth(), "If-Match": '"1"'},
    )

    assert stale.status_code == 412
    assert stale.json()["current_version"] == 1
    assert fresh.status_code == 202


def test_idempotency_key_replays_the_first_answer(
    client: TestClient, world: World
) -> None:
    first = upload(client, **{"Idempotency-Key": "k-1"})
    second = upload(client, **{"Idempotency-Key": "k-1"})
    other_body = client.post(
        "/commands/audio",
        json={"s3_key": f"audio/{USER}/x.wav"},
        headers={**auth(), "Idempotency-Key": "k-1"},
    )

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert other_body.status_code == 422
    assert other_body.json()["type"].endswith("/idempotency-key-reused")
    assert len(world.store._streams) == 1


async def test_concurrent_retries_with_one_key_append_once(world: World) -> None:
    app = create_app(
        world.app_settings(),
        event_store=world.store,
        storage=world.storage,
        idempotency=world.idempotency,
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        created = await http.post(
            "/commands/audio",
            files={"file": ("a.wav", WAV, "audio/wav")},
            headers=auth(),
        )
        audio_id = created.json()["audio_id"]
        responses = await asyncio.gather(
            *(
                http.post(
                    f"/commands/audio/{audio_id}/transcribe",
                    headers={**auth(), "Idempotency-Key": "same"},
                )
                for _ in range(8)
            )
        )

    assert {r.status_code for r in responses} == {202}
    assert {r.json()["version"] for r in responses} == {2}
    assert await world.events(audio_id) == ["AudioCreated", "AudioProcessingStarted"]


def forged_results() -> list[dict[str, Any]]:
    return [
        {
            "outcome": "completed",
            "attempt": 1,
            "text": "x",
            "confidence": 2,
            "language": "en-US",
        },
        {
            "outcome": "completed",
            "attempt": 1,
            "text": "x",
            "confidence": 1,
            "language": "english",
        },
        {
            "outcome": "completed",
            "attempt": 0,
            "text": "x",
            "confidence": 1,
            "language": "en-US",
        },
        {
            "outcome": "completed",
            "attempt": 1,
            "text": "x",
            "confidence": 1,
            "language": "en-US",
            "segments": [{"start": 2, "end": 1, "text": "x"}],
        },
        {"outcome": "failed", "attempt": 1, "reason": "", "retryable": True},
        {"outcome": "maybe", "attempt": 1},
    ]


UNKNOWN = str(uuid4())
EXPIRED = jwt.encode(
    {"sub": str(USER), "scope": "audio:write", "exp": int(time.time()) - 60},
    SECRET,
    algorithm="HS256",
)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "kind"),
    [
        (
            "post",
            "/commands/audio",
            {
                "json": {"s3_key": f"audio/{USER}/a.wav"},
                "headers": {"Authorization": ""},
            },
            401,
            "unauthorized",
        ),
        (
            "post",
            "/commands/audio",
            {
                "json": {"s3_key": f"audio/{USER}/a.wav"},
                "headers": {"Authorization": "Bearer expired.token.x"},
            },
            401,
            "unauthorized",
        ),
        (
            "post",
            "/commands/audio",
            {"json": {"s3_key": f"audio/{USER}/a.wav"}, "headers": auth("audio:read")},
            403,
            "forbidden",
        ),
        (
            "post",
            "/commands/audio",
            {"json": {"s3_key": f"audio/{uuid4()}/a.wav"}},
            403,
            "forbidden",
        ),
        (
            "post",
            "/commands/audio",
            {"json": {"s3_key": f"audio/{USER}/../x.wav"}},
            422,
            "invalid-request",
        ),
        ("post", "/commands/audio", {"json": {"s3_key": ""}}, 422, "invalid-request"),
        (
            "post",
            "/commands/audio",
            {"json": {"s3_key": f"audio/{USER}/a.wav", "extra": 1}},
            422,
            "invalid-request",
        ),
        ("post", "/commands/audio", {"json": {"s3_key": 12}}, 422, "invalid-request"),
        ("post", "/commands/audio", {"json": {}}, 422, "invalid-request"),
        (
            "post",
            "/commands/audio",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            422,
            "invalid-request",
        ),
        (
            "post",
            "/commands/audio",
            {"content": b"hello", "headers": {"Content-Type": "text/plain"}},
            415,
            "unsupported-media-type",
        ),
        (
            "post",
            "/commands/audio",
            {"files": {"file": ("a.wav", b"", "audio/wav")}},
            422,
            "empty-upload",
        ),
        (
            "post",
            "/commands/audio",
            {"files": {"file": ("a.wav", b"x" * 250_000, "audio/wav")}},
            413,
            "upload-too-large",
        ),
        (
            "post",
            "/commands/audio",
            {"files": {"file": ("a.txt", b"just some text", "audio/wav")}},
            415,
            "not-audio",
        ),
        (
            "post",
            "/commands/audio",
            {"files": {"file": ("../../etc/passwd", WAV, "audio/wav")}},
            422,
            "invalid-request",
        ),
        (
            "post",
            "/commands/audio",
            {"files": {"other": ("a.wav", WAV, "audio/wav")}},
            422,
            "invalid-request",
        ),
        (
            "post",
            "/commands/audio",
            {
                "files": {"file": ("a.wav", WAV, "audio/wav")},
                "data": {"language": "klingon"},
            },
            422,
            "invalid-request",
        ),
        (
            "post",
            "/commands/audio",
            {
                "json": {"s3_key": f"audio/{USER}/a.wav"},
                "headers": {**auth(), "Idempotency-Key": "bad key with spaces"},
            },
            400,
            "invalid-idempotency-key",
        ),
        ("post", f"/commands/audio/{UNKNOWN}/transcribe", {}, 404, "not-found"),
        ("post", "/commands/audio/not-a-uuid/transcribe", {}, 422, "invalid-request"),
        (
            "post",
            f"/commands/audio/{UNKNOWN}/transcribe",
            {"json": {"language": "xx"}},
            422,
            "invalid-request",
        ),
        (
            "post",
            f"/commands/audio/{UNKNOWN}/transcribe",
            {"headers": {**auth(), "If-Match": "three"}},
            400,
            "invalid-if-match",
        ),
        ("delete", f"/commands/audio/{UNKNOWN}", {}, 404, "not-found"),
        (
            "post",
            f"/commands/audio/{UNKNOWN}/transcription-result",
            {"json": forged_results()[0]},
            403,
            "forbidden",
        ),
        *[
            (
                "post",
                f"/commands/audio/{UNKNOWN}/transcription-result",
                {"json": body, "headers": auth("service:transcriber")},
                422,
                "invalid-request",
            )
            for body in forged_results()
        ],
    ],
)
def test_bad_requests_get_a_problem_and_change_nothing(
    client: TestClient,
    world: World,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    kind: str,
) -> None:
    options = dict(kwargs)
    options["headers"] = {**auth(), **options.get("headers", {})}

    response = client.request(method.upper(), path, **options)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/" + kind)
    assert problem["detail"]
    assert world.store._streams == {}
    assert world.storage.objects == {}


def test_forbidden_transition_and_foreign_audio(
    client: TestClient, world: World
) -> None:
    audio_id = upload(client).json()["audio_id"]
    service = auth("service:transcriber", uuid4())
    before = asyncio.run(world.events(audio_id))

    early_result = client.post(
        f"/commands/audio/{audio_id}/transcription-result",
        json={"outcome": "failed", "attempt": 1, "reason": "x", "retryable": False},
        headers=service,
    )
    stranger = client.post(
        f"/commands/audio/{audio_id}/transcribe", headers=auth(user=uuid4())
    )

    assert early_result.status_code == 409
    assert early_result.json()["type"].endswith("/stale-attempt")
    assert stranger.status_code == 404
    assert asyncio.run(world.events(audio_id)) == before


def test_a_transcript_too_large_for_one_event_is_a_413(world: World) -> None:
    settings = CommandApiSettings(jwt_secret=SECRET, max_upload_bytes=2_000_000)
    app = create_app(settings, world.store, world.storage, world.idempotency)
    with TestClient(app) as client:
        _post_too_large_transcript(client)


def _post_too_large_transcript(client: TestClient) -> None:
    audio_id = upload(client).json()["audio_id"]
    client.post(f"/commands/audio/{audio_id}/transcribe", headers=auth())
    segments = [{"start": i, "end": i + 1, "text": "w" * 9_000} for i in range(50)]

    response = client.post(
        f"/commands/audio/{audio_id}/transcription-result",
        json={
            "outcome": "completed",
            "attempt": 1,
            "text": "w" * 10,
            "confidence": 0.5,
            "language": "en-US",
            "segments": segments,
        },
        headers=auth("service:transcriber", uuid4()),
    )

    assert response.status_code == 413
    assert response.json()["type"].endswith("/event-too-large")


def test_result_of_a_finished_attempt_is_refused(client: TestClient) -> None:
    audio_id = upload(client).json()["audio_id"]
    service = auth("service:transcriber", uuid4())
    client.post(f"/commands/audio/{audio_id}/transcribe", headers=auth())
    body = {"outcome": "failed", "attempt": 1, "reason": "x", "retryable": True}
    client.post(
        f"/commands/audio/{audio_id}/transcription-result", json=body, headers=service
    )

    duplicate = client.post(
        f"/commands/audio/{audio_id}/transcription-result", json=body, headers=service
    )

    assert duplicate.status_code == 409
    assert duplicate.json()["type"].endswith("/invalid-state")


def test_metrics_count_requests_by_route_and_event_store_commits(
    client: TestClient,
) -> None:
    audio_id = upload(client).json()["audio_id"]
    client.post(f"/commands/audio/{audio_id}/transcribe", headers=auth())
    client.post(f"/commands/audio/{uuid4()}/transcribe", headers=auth())

    metrics = client.get("/metrics")

    assert metrics.status_code == 200
    text = metrics.text
    route = "/commands/audio/{audio_id}/transcribe"
    assert (
        f'nova_http_requests_total{{method="POST",route="{route}",status="202"}} 1.0'
        in text
    )
    assert (
        f'nova_http_requests_total{{method="POST",route="{route}",status="404"}} 1.0'
        in text
    )
    assert "nova_event_store_commits_total 2.0" in text
    assert "nova_event_store_conflicts_total 0.0" in text
    assert (
        'nova_http_request_seconds_count{method="POST",route="/commands/audio"}' in text
    )


async def test_metered_store_counts_conflicts() -> None:
    registry = CollectorRegistry()
    store = MeteredEventStore(InMemoryEventStore(), registry)
    audio_id = uuid4()
    meta = EventMetadata(correlation_id="c")
    created = AudioCreated(audio_id=audio_id, user_id=USER, s3_key="k")
    await store.append_events(AUDIO_FILE, audio_id, [created], 0, meta)
    with pytest.raises(ConcurrencyError):
        await store.append_events(AUDIO_FILE, audio_id, [created], 0, meta)
    assert registry.get_sample_value("nova_event_store_conflicts_total") == 1.0
    assert registry.get_sample_value("nova_event_store_commits_total") == 1.0


class BusyEventStore(InMemoryEventStore):
    """Refuses the next `busy` appends as DynamoDB does when throttled."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    async def append_events(self, *args: Any, **kwargs: Any) -> Any:
        if self.busy:
            self.busy -= 1
            raise EventStoreUnavailableError("AudioFile#x", "TransactionConflict")
        return await super().append_events(*args, **kwargs)


def test_a_busy_event_store_is_a_503_to_retry_and_not_replayed(world: World) -> None:
    world.store = BusyEventStore(busy=1)
    app = create_app(
        world.app_settings(), world.store, world.storage, world.idempotency
    )
    with TestClient(app) as client:
        busy = upload(client, **{"Idempotency-Key": "k-busy"})
        retried = upload(client, **{"Idempotency-Key": "k-busy"})

    assert busy.status_code == 503, busy.text
    assert busy.json()["type"].endswith("/event-store-unavailable")
    assert busy.headers["retry-after"] == "1"
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert len(world.store._streams) == 1
    # The first attempt's object was removed again; only the retry's is left.
    assert len(world.storage.objects) == 1
