"""The command API through its real wiring, with in-memory adapters."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
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
from nova_command_api.domain.audio_file import AudioFile
from nova_command_api.entrypoints.http import create_app
from nova_command_api.settings import CommandApiSettings
from nova_events import AUDIO_FILE, AudioCreated, EventMetadata
from nova_platform.auth.dev_token import issue

from ..audio_samples import sine_wav
from ..contracts.idempotency import FakeClock

SECRET = "unit-test-secret-of-at-least-32-bytes"
USER = UUID("11111111-1111-4111-8111-111111111111")
WAV = sine_wav(1.0)


class World:
    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.storage = InMemoryAudioStorage()
        self.clock = FakeClock()
        self.idempotency = InMemoryIdempotencyStore(self.clock)

    def app_settings(self, **overrides: Any) -> CommandApiSettings:
        return CommandApiSettings(
            jwt_secret=SECRET, max_upload_bytes=200_000, **overrides
        )

    def seed(self, history: list[Callable[[AudioFile], None]]) -> None:
        asyncio.run(self.seed_async(history))

    async def seed_async(self, history: list[Callable[[AudioFile], None]]) -> None:
        """Audio `SEEDED` of `USER`, with its file, after the steps of `history`."""
        audio = AudioFile.create(USER, SEEDED_KEY, audio_id=SEEDED, language="en-US")
        for step in history:
            step(audio)
        meta = EventMetadata(correlation_id="seed", command_id="seed")
        events = audio.get_uncommitted_events()
        await self.store.append_events(AUDIO_FILE, SEEDED, events, 0, meta)
        if audio.status.value != "deleted":
            await self.storage.put(SEEDED_KEY, io.BytesIO(WAV), len(WAV), "audio/wav")

    def snapshot(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Every stored event and object, to compare before and after."""
        return dict(self.store._streams), dict(self.storage.objects)

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
                "headers": {"Authorization": f"Bearer {EXPIRED}"},
            },
            401,
            "unauthorized",
        ),
        (
            "post",
            "/commands/audio",
            {
                "json": {"s3_key": f"audio/{USER}/a.wav"},
                "headers": {"Authorization": "Bearer not.a.token"},
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
    if EXPIRED in options["headers"].get("Authorization", ""):
        assert "expired" in problem["detail"], problem
    assert world.store._streams == {}
    assert world.storage.objects == {}


SEEDED = UUID("33333333-3333-4333-8333-333333333333")
SEEDED_KEY = f"audio/{USER}/{SEEDED}.wav"


def _started(audio: AudioFile) -> None:
    audio.start_processing("en-US")


def _failed(audio: AudioFile) -> None:
    audio.fail_processing("engine crashed", retryable=True)


def _transcribed(audio: AudioFile) -> None:
    audio.complete_transcription("hello", 0.9, "en-US")
    audio.complete_processing()


def _deleted(audio: AudioFile) -> None:
    audio.delete()


def result_body(outcome: str = "completed", attempt: int = 1) -> dict[str, Any]:
    if outcome == "failed":
        return {"outcome": "failed", "attempt": attempt, "reason": "x", "retryable": 1}
    return {
        "outcome": "completed",
        "attempt": attempt,
        "text": "late",
        "confidence": 0.5,
        "language": "en-US",
    }


TRANSCRIBER = auth("service:transcriber", uuid4())
RESULT = f"/commands/audio/{SEEDED}/transcription-result"
TRANSCRIBE = f"/commands/audio/{SEEDED}/transcribe"


@pytest.mark.parametrize(
    ("history", "method", "path", "kwargs", "status", "kind"),
    [
        ([_started], "post", TRANSCRIBE, {}, 409, "invalid-state"),
        ([_deleted], "post", TRANSCRIBE, {}, 409, "invalid-state"),
        ([_started, _deleted], "post", TRANSCRIBE, {}, 409, "invalid-state"),
        (
            [_started, _deleted],
            "post",
            RESULT,
            {"json": result_body(), "headers": TRANSCRIBER},
            409,
            "invalid-state",
        ),
        (
            [_deleted],
            "post",
            RESULT,
            {"json": result_body("failed"), "headers": TRANSCRIBER},
            409,
            "stale-attempt",
        ),
        (
            [_started, _failed, _started],
            "post",
            RESULT,
            {"json": result_body(attempt=1), "headers": TRANSCRIBER},
            409,
            "stale-attempt",
        ),
        (
            [_started],
            "post",
            RESULT,
            {"json": result_body("failed", attempt=2), "headers": TRANSCRIBER},
            409,
            "stale-attempt",
        ),
        (
            [_started, _transcribed],
            "post",
            RESULT,
            {"json": result_body(), "headers": TRANSCRIBER},
            409,
            "invalid-state",
        ),
        (
            [_started, _failed],
            "post",
            RESULT,
            {"json": result_body("failed"), "headers": TRANSCRIBER},
            409,
            "invalid-state",
        ),
        (
            [],
            "post",
            TRANSCRIBE,
            {"headers": {"If-Match": '"2"'}},
            412,
            "version-mismatch",
        ),
        (
            [_started],
            "delete",
            f"/commands/audio/{SEEDED}",
            {"headers": {"If-Match": '"1"'}},
            412,
            "version-mismatch",
        ),
        (
            [],
            "post",
            "/commands/audio",
            {"json": {"s3_key": SEEDED_KEY}},
            409,
            "already-registered",
        ),
    ],
    ids=[
        "transcribe-while-processing",
        "transcribe-after-delete",
        "transcribe-after-delete-while-processing",
        "result-after-delete",
        "failure-after-delete-before-any-attempt",
        "result-of-an-earlier-attempt",
        "failure-of-a-later-attempt",
        "result-after-completion",
        "failure-after-failure",
        "transcribe-pinned-to-a-later-version",
        "delete-pinned-to-an-older-version",
        "register-an-uploaded-file",
    ],
)
def test_forbidden_transitions_get_a_problem_and_change_nothing(
    client: TestClient,
    world: World,
    history: list[Callable[[AudioFile], None]],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    kind: str,
) -> None:
    world.seed(history)
    before = world.snapshot()
    options = dict(kwargs)
    options["headers"] = {**auth(), **options.get("headers", {})}

    response = client.request(method.upper(), path, **options)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/" + kind)
    assert world.snapshot() == before


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


class RacingEventStore(InMemoryEventStore):
    """Holds each reader of a stream until all parties of `barrier` have read it."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier: asyncio.Barrier | None = None

    async def get_events(self, *args: Any, **kwargs: Any) -> Any:
        events = await super().get_events(*args, **kwargs)
        if self.barrier is not None:
            await asyncio.wait_for(self.barrier.wait(), timeout=5)
        return events


async def test_concurrent_commands_pinned_to_one_version_append_once(
    world: World,
) -> None:
    world.store = RacingEventStore()
    await world.seed_async([])
    app = create_app(
        world.app_settings(), world.store, world.storage, world.idempotency
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as http,
    ):
        # Both read version 1 before either appends: a real race to commit.
        world.store.barrier = asyncio.Barrier(2)
        responses = await asyncio.gather(
            *(
                http.post(TRANSCRIBE, headers={**auth(), "If-Match": '"1"'})
                for _ in range(2)
            )
        )
        world.store.barrier = None

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [202, 409], [r.text for r in responses]
    won, lost = sorted(responses, key=lambda r: r.status_code)
    assert won.json()["version"] == 2
    assert lost.json()["type"].endswith("/concurrent-write")
    assert lost.json()["current_version"] == 2
    assert await world.events(str(SEEDED)) == ["AudioCreated", "AudioProcessingStarted"]


class ProcessDied(Exception):  # noqa: N818 - stands for a killed process
    """Raised where a test makes the process die; what follows does not run."""


class DiesOnce:
    """Wraps a coroutine method so that its first call raises `ProcessDied`.

    `before`: die before the wrapped call has any effect; else right after it.
    """

    def __init__(self, target: Any, method: str, *, before: bool) -> None:
        self._call = getattr(target, method)
        self._before = before
        self.died = False
        setattr(target, method, self)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.died:
            return await self._call(*args, **kwargs)
        self.died = True
        if self._before:
            raise ProcessDied
        await self._call(*args, **kwargs)
        raise ProcessDied


LEASE_RUN_OUT = 61.0


def test_a_retry_after_a_crash_between_commit_and_answer_appends_nothing(
    world: World,
) -> None:
    world.seed([])
    settings = world.app_settings(idempotency_wait_s=0.2)
    app = create_app(settings, world.store, world.storage, world.idempotency)
    key = {**auth(), "Idempotency-Key": "k-crash"}
    DiesOnce(world.idempotency, "complete", before=True)

    with TestClient(app) as client:
        with pytest.raises(ProcessDied):
            client.post(TRANSCRIBE, headers=key)
        early = client.post(TRANSCRIBE, headers=key)
        world.clock.advance(LEASE_RUN_OUT)
        retried = client.post(TRANSCRIBE, headers=key)
        replayed = client.post(TRANSCRIBE, headers=key)

    # While the dead claim's lease runs, a retry is told to come back.
    assert early.status_code == 409
    assert early.json()["type"].endswith("/idempotency-key-in-use")
    assert early.headers["retry-after"]
    # Then the retry takes the claim over and finds the commit already there.
    assert retried.status_code == 202, retried.text
    assert retried.json()["version"] == 2
    assert replayed.json() == retried.json()
    assert replayed.headers["idempotent-replayed"] == "true"
    assert asyncio.run(world.events(str(SEEDED))) == [
        "AudioCreated",
        "AudioProcessingStarted",
    ]


def test_a_retry_after_a_crash_before_the_commit_runs_the_command(
    world: World,
) -> None:
    world.seed([])
    app = create_app(
        world.app_settings(), world.store, world.storage, world.idempotency
    )
    key = {**auth(), "Idempotency-Key": "k-early-crash"}
    DiesOnce(world.store, "append_events", before=True)
    # Dead processes release nothing.
    DiesOnce(world.idempotency, "release", before=True)

    with TestClient(app) as client:
        with pytest.raises(ProcessDied):
            client.post(TRANSCRIBE, headers=key)
        world.clock.advance(LEASE_RUN_OUT)
        retried = client.post(TRANSCRIBE, headers=key)

    assert retried.status_code == 202, retried.text
    assert retried.json()["version"] == 2
    events = asyncio.run(world.store.get_events(AUDIO_FILE, SEEDED))
    assert [e.event_type for e in events] == ["AudioCreated", "AudioProcessingStarted"]
    assert events[-1].metadata.command_id not in (None, "k-early-crash")


def test_an_upload_retried_after_a_crash_keeps_one_audio_and_one_file(
    world: World,
) -> None:
    app = create_app(
        world.app_settings(), world.store, world.storage, world.idempotency
    )
    DiesOnce(world.idempotency, "complete", before=True)

    with TestClient(app) as client:
        with pytest.raises(ProcessDied):
            upload(client, **{"Idempotency-Key": "k-upload"})
        world.clock.advance(LEASE_RUN_OUT)
        retried = upload(client, **{"Idempotency-Key": "k-upload"})

    assert retried.status_code == 201, retried.text
    [stream] = world.store._streams.values()
    assert [e.event_type for e in stream] == ["AudioCreated"]
    assert str(stream[0].aggregate_id) == retried.json()["audio_id"]
    assert list(world.storage.objects) == [stream[0].data["s3_key"]]


def test_an_upload_retried_after_its_audio_was_erased_stores_nothing_again(
    world: World,
) -> None:
    app = create_app(
        world.app_settings(), world.store, world.storage, world.idempotency
    )
    DiesOnce(world.idempotency, "complete", before=True)

    with TestClient(app) as client:
        with pytest.raises(ProcessDied):
            upload(client, **{"Idempotency-Key": "k-erased"})
        [audio_id] = [str(e[0].aggregate_id) for e in world.store._streams.values()]
        client.delete(f"/commands/audio/{audio_id}", headers=auth())
        world.clock.advance(LEASE_RUN_OUT)
        retried = upload(client, **{"Idempotency-Key": "k-erased"})

    assert retried.status_code == 201, retried.text
    assert retried.json()["audio_id"] == audio_id
    assert asyncio.run(world.events(audio_id)) == ["AudioCreated", "AudioDeleted"]
    assert world.storage.objects == {}


def test_registering_a_key_twice_is_refused(client: TestClient, world: World) -> None:
    key = f"audio/{USER}/mine.wav"
    asyncio.run(world.storage.put(key, io.BytesIO(WAV), len(WAV), "audio/wav"))

    first = client.post("/commands/audio", json={"s3_key": key}, headers=auth())
    second = client.post(
        "/commands/audio", json={"s3_key": key, "title": "again"}, headers=auth()
    )

    assert first.status_code == 201, first.text
    assert second.status_code == 409, second.text
    problem = second.json()
    assert problem["type"].endswith("/already-registered")
    assert problem["audio_id"] == first.json()["audio_id"]
    assert len(world.store._streams) == 1


def test_an_erased_audios_key_cannot_be_registered_again(
    client: TestClient, world: World
) -> None:
    key = f"audio/{USER}/gone.wav"
    asyncio.run(world.storage.put(key, io.BytesIO(WAV), len(WAV), "audio/wav"))
    audio_id = client.post(
        "/commands/audio", json={"s3_key": key}, headers=auth()
    ).json()["audio_id"]
    client.delete(f"/commands/audio/{audio_id}", headers=auth())
    asyncio.run(world.storage.put(key, io.BytesIO(WAV), len(WAV), "audio/wav"))

    again = client.post("/commands/audio", json={"s3_key": key}, headers=auth())

    assert again.status_code == 409
    assert again.json()["type"].endswith("/already-registered")
    assert "erased" in again.json()["detail"]


def test_a_registration_retried_after_a_crash_answers_like_the_first(
    world: World,
) -> None:
    key = f"audio/{USER}/crash.wav"
    asyncio.run(world.storage.put(key, io.BytesIO(WAV), len(WAV), "audio/wav"))
    app = create_app(
        world.app_settings(), world.store, world.storage, world.idempotency
    )
    DiesOnce(world.idempotency, "complete", before=True)
    headers = {**auth(), "Idempotency-Key": "k-register"}

    with TestClient(app) as client:
        with pytest.raises(ProcessDied):
            client.post("/commands/audio", json={"s3_key": key}, headers=headers)
        world.clock.advance(LEASE_RUN_OUT)
        retried = client.post("/commands/audio", json={"s3_key": key}, headers=headers)

    assert retried.status_code == 201, retried.text
    assert retried.json()["version"] == 1
    assert len(world.store._streams) == 1
