"""The command side seals personal data and erases users, through its wiring."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi.testclient import TestClient

from nova_command_api.adapters.memory_audio_storage import InMemoryAudioStorage
from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore
from nova_command_api.application.storage import AudioStorageError
from nova_command_api.entrypoints.http import create_app
from nova_command_api.settings import CommandApiSettings
from nova_events import (
    AUDIO_FILE,
    SEALED_KEY,
    USER,
    AudioCreated,
    EventMetadata,
    TranscriptionCompleted,
    UserErased,
    decode_payload,
)
from nova_events.personal import ERASED_TEXT
from nova_platform.auth.dev_token import issue
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper

from ..audio_samples import sine_wav
from ..contracts.idempotency import FakeClock

SECRET = "unit-test-secret-of-at-least-32-bytes"
ALICE = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
BOB = UUID("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")
WAV = sine_wav(0.5)
TRANSCRIPT = "alice says the merger closes friday"


class FlakyStorage(InMemoryAudioStorage):
    """Fails the next `delete_prefix` calls it is told to."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def delete_prefix(self, prefix: str) -> int:
        if self.failures:
            self.failures -= 1
            raise AudioStorageError("delete", "nova-audio", prefix, "SlowDown")
        return await super().delete_prefix(prefix)


class World:
    def __init__(self) -> None:
        self.personal = PersonalData(
            InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32))
        )
        self.store = InMemoryEventStore(self.personal)
        self.storage = FlakyStorage()


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    app = create_app(
        CommandApiSettings(jwt_secret=SECRET, max_upload_bytes=200_000),
        event_store=world.store,
        storage=world.storage,
        idempotency=InMemoryIdempotencyStore(FakeClock()),
        personal=world.personal,
    )
    with TestClient(app) as test_client:
        yield test_client


def auth(user: UUID, scopes: str = "audio:write") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(user, scopes, SECRET)}"}


def upload(client: TestClient, user: UUID, title: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/commands/audio",
        files={"file": (f"{title}.wav", WAV, "audio/wav")},
        data={"title": title, "language": "en-US"},
        headers=auth(user),
    )
    return response


def transcribed(client: TestClient, user: UUID, title: str, text: str) -> UUID:
    created = upload(client, user, title)
    assert created.status_code == 201, created.text
    audio_id = UUID(created.json()["audio_id"])
    started = client.post(f"/commands/audio/{audio_id}/transcribe", headers=auth(user))
    assert started.status_code == 202, started.text
    done = client.post(
        f"/commands/audio/{audio_id}/transcription-result",
        json={
            "outcome": "completed",
            "attempt": 1,
            "text": text,
            "confidence": 0.9,
            "language": "en-US",
            "segments": [{"start": 0, "end": 0.5, "text": text}],
        },
        headers=auth(uuid4(), "service:transcriber"),
    )
    assert done.status_code == 200, done.text
    return audio_id


def stored_text(world: World) -> str:
    return "\n".join(e.model_dump_json() for e in world.store.stored())


def test_the_store_keeps_personal_fields_sealed_and_hands_them_back_open(
    client: TestClient, world: World
) -> None:
    audio_id = transcribed(client, ALICE, "Board minutes", TRANSCRIPT)

    raw = stored_text(world)
    for secret in (TRANSCRIPT, "Board minutes", f"{audio_id}.wav"):
        assert secret not in raw
    sealed = [e for e in world.store.stored() if SEALED_KEY in e.data]
    assert {e.event_type for e in sealed} == {"AudioCreated", "TranscriptionCompleted"}
    assert {e.data[SEALED_KEY]["key_id"] for e in sealed} == {str(ALICE)}
    opened = asyncio.run(world.store.get_events(AUDIO_FILE, audio_id))
    completed = decode_payload(opened[2])
    assert isinstance(completed, TranscriptionCompleted)
    assert completed.text == TRANSCRIPT


def test_erasing_yourself_shreds_your_data_and_deletes_your_files(
    client: TestClient, world: World
) -> None:
    alice_audio = transcribed(client, ALICE, "Alice notes", TRANSCRIPT)
    bob_audio = transcribed(client, BOB, "Bob notes", "bob keeps his words")
    assert any(k.startswith(f"audio/{ALICE}/") for k in world.storage.objects)

    answer = client.delete("/commands/users/me", headers=auth(ALICE))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["user_id"] == str(ALICE)
    assert body["version"] == 1
    assert body["objects_deleted"] == 1
    assert not any(k.startswith(f"audio/{ALICE}/") for k in world.storage.objects)
    assert any(k.startswith(f"audio/{BOB}/") for k in world.storage.objects)
    [erased] = asyncio.run(world.store.get_events(USER, ALICE))
    event = decode_payload(erased, UserErased)
    assert event.user_id == ALICE
    assert event.erased_at.isoformat().startswith(body["erased_at"][:19])

    alice_events = asyncio.run(world.store.get_events(AUDIO_FILE, alice_audio))
    assert [e.erased for e in alice_events] == [True, False, True, False]
    created = decode_payload(alice_events[0])
    assert isinstance(created, AudioCreated)
    assert (created.title, created.s3_key) == (None, ERASED_TEXT)
    bob_events = asyncio.run(world.store.get_events(AUDIO_FILE, bob_audio))
    assert not any(e.erased for e in bob_events)
    assert decode_payload(bob_events[0]).model_dump()["title"] == "Bob notes"


def test_after_erasure_commands_for_the_user_answer_410(
    client: TestClient, world: World
) -> None:
    audio_id = transcribed(client, ALICE, "Alice notes", TRANSCRIPT)
    assert client.delete("/commands/users/me", headers=auth(ALICE)).status_code == 200

    again = client.post(f"/commands/audio/{audio_id}/transcribe", headers=auth(ALICE))
    admin = client.delete(f"/commands/audio/{audio_id}", headers=auth(BOB, "admin"))
    new_upload = upload(client, ALICE, "Another")

    for answer in (again, admin, new_upload):
        assert answer.status_code == 410, answer.text
        problem = answer.json()
        assert problem["type"].endswith("/user-erased")
        assert problem["user_id"] == str(ALICE)
        assert TRANSCRIPT not in answer.text
    assert not any(k.startswith(f"audio/{ALICE}/") for k in world.storage.objects)


def test_an_erasure_is_idempotent(client: TestClient, world: World) -> None:
    transcribed(client, ALICE, "Alice notes", TRANSCRIPT)

    first = client.delete("/commands/users/me", headers=auth(ALICE))
    second = client.delete(f"/commands/users/{ALICE}", headers=auth(BOB, "admin"))

    assert first.status_code == second.status_code == 200
    assert second.json()["erased_at"] == first.json()["erased_at"]
    assert second.json()["version"] == 1
    assert second.json()["objects_deleted"] == 0
    assert len(asyncio.run(world.store.get_events(USER, ALICE))) == 1


def test_a_failed_erasure_is_finished_by_a_retry(
    client: TestClient, world: World
) -> None:
    audio_id = transcribed(client, ALICE, "Alice notes", TRANSCRIPT)
    world.storage.failures = 1

    failed = client.delete("/commands/users/me", headers=auth(ALICE))

    assert failed.status_code == 503, failed.text
    # The key went first: the data is unreadable already, the files remain.
    events = asyncio.run(world.store.get_events(AUDIO_FILE, audio_id))
    assert events[0].erased
    assert asyncio.run(world.store.get_events(USER, ALICE)) == []

    retried = client.delete("/commands/users/me", headers=auth(ALICE))

    assert retried.status_code == 200, retried.text
    assert retried.json()["objects_deleted"] == 1
    assert len(asyncio.run(world.store.get_events(USER, ALICE))) == 1


def test_only_an_admin_erases_someone_else(client: TestClient, world: World) -> None:
    transcribed(client, BOB, "Bob notes", "bob keeps his words")

    refused = client.delete(f"/commands/users/{BOB}", headers=auth(ALICE))
    no_scope = client.delete("/commands/users/me", headers=auth(ALICE, "audio:read"))

    assert refused.status_code == 403, refused.text
    assert "admin" in refused.json()["detail"]
    assert no_scope.status_code == 403
    assert asyncio.run(world.store.get_events(USER, BOB)) == []
    assert any(k.startswith(f"audio/{BOB}/") for k in world.storage.objects)


def test_an_appended_commit_returns_open_envelopes(world: World) -> None:
    audio_id = uuid4()
    event = AudioCreated(
        audio_id=audio_id, user_id=ALICE, s3_key="audio/x/y.wav", title="Kept"
    )

    [appended] = asyncio.run(
        world.store.append_events(
            AUDIO_FILE, audio_id, [event], 0, EventMetadata(correlation_id="c")
        )
    )

    assert appended.data["title"] == "Kept"
    [stored] = world.store.stored()
    assert "title" not in stored.data
    assert stored.event_id == appended.event_id
