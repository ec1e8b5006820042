"""Webhook routes for an erased user answer 410 and write nothing, through the
real app wiring on in-memory adapters; an admin may still clear what is left."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi.testclient import TestClient

from nova_command_api.adapters.memory_audio_storage import InMemoryAudioStorage
from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore
from nova_command_api.entrypoints.http import create_app
from nova_command_api.settings import CommandApiSettings
from nova_platform.auth.dev_token import issue
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper
from nova_platform.webhooks import Delivery, DeliveryStatus, InMemoryWebhookStore

from ..contracts.idempotency import FakeClock

SECRET = "unit-test-secret-of-at-least-32-bytes"
ALICE = UUID("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa")
BOB = UUID("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb")
ADMIN = UUID("33333333-3333-4333-8333-333333333333")
URL = "https://hooks.example.com/nova"
TTL_S = 30.0
AUDIO = uuid4()


class World:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.keys = InMemoryUserKeys()
        self.wrapper = LocalKeyWrapper(os.urandom(32))
        self.personal = self.key_cache()
        self.webhooks = InMemoryWebhookStore()

    def key_cache(self) -> PersonalData:
        """A process's `PersonalData` on the shared key table."""
        return PersonalData(
            self.keys, self.wrapper, cache_ttl_s=TTL_S, clock=self.clock
        )

    def subscription_ids(self, user_id: UUID) -> list[str]:
        found = asyncio.run(self.webhooks.subscriptions_of(user_id))
        return [str(s.subscription_id) for s in found]

    def park(self, subscription_id: str) -> None:
        parked = Delivery(
            subscription_id=UUID(subscription_id),
            audio_id=AUDIO,
            sequence=1,
            event_id=uuid4(),
            event_type="audio.processing.started",
            body=b"{}",
            created_at=1_700_000_000.0,
            status=DeliveryStatus.PARKED,
        )
        asyncio.run(self.webhooks.add_deliveries([parked]))

    def status(self, subscription_id: str) -> DeliveryStatus:
        found = asyncio.run(self.webhooks.get_delivery(UUID(subscription_id), AUDIO, 1))
        assert found is not None
        return found.status


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    app = create_app(
        CommandApiSettings(jwt_secret=SECRET),
        event_store=InMemoryEventStore(world.personal),
        storage=InMemoryAudioStorage(),
        idempotency=InMemoryIdempotencyStore(FakeClock()),
        webhooks=world.webhooks,
        personal=world.personal,
    )
    with TestClient(app) as test_client:
        yield test_client


def auth(user: UUID, scopes: str = "audio:write") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(user, scopes, SECRET)}"}


def admin() -> dict[str, str]:
    return auth(ADMIN, "admin")


def create(client: TestClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    payload = {"url": URL, "event_types": ["audio.processing.started"], **body}
    response: httpx.Response = client.post(
        "/commands/webhooks", json=payload, headers=headers
    )
    return response


def created(client: TestClient, user: UUID) -> str:
    response = create(client, auth(user))
    assert response.status_code == 201, response.text
    subscription_id: str = response.json()["subscription_id"]
    return subscription_id


def erase(client: TestClient, user: UUID) -> None:
    answer = client.delete("/commands/users/me", headers=auth(user))
    assert answer.status_code == 200, answer.text


def assert_erased(answer: httpx.Response, user: UUID) -> None:
    assert answer.status_code == 410, answer.text
    problem = answer.json()
    assert problem["type"].endswith("/user-erased")
    assert problem["user_id"] == str(user)
    assert problem["erased_at"]
    assert "secret" not in problem


def every_route(
    client: TestClient, subscription_id: str, headers: dict[str, str]
) -> dict[str, httpx.Response]:
    base = f"/commands/webhooks/{subscription_id}"
    return {
        "create": create(client, headers),
        "list": client.get("/commands/webhooks", headers=headers),
        "get": client.get(base, headers=headers),
        "deliveries": client.get(f"{base}/deliveries", headers=headers),
        "resend": client.post(f"{base}/deliveries/{AUDIO}/1/resend", headers=headers),
        "delete": client.delete(base, headers=headers),
    }


def test_an_erased_user_gets_410_on_every_route_and_nothing_is_written(
    client: TestClient, world: World
) -> None:
    mine = created(client, ALICE)
    world.park(mine)
    bobs = created(client, BOB)
    erase(client, ALICE)

    answers = every_route(client, mine, auth(ALICE))

    for route, answer in answers.items():
        assert answer.status_code == 410, route
        assert_erased(answer, ALICE)
    assert world.subscription_ids(ALICE) == [mine], "neither created nor deleted"
    assert world.status(mine) is DeliveryStatus.PARKED, "not re-sent"
    assert world.subscription_ids(BOB) == [bobs]
    assert client.get(f"/commands/webhooks/{bobs}", headers=auth(BOB)).is_success


def test_a_replay_of_a_create_recorded_before_the_erasure_is_refused(
    client: TestClient, world: World
) -> None:
    headers = {**auth(ALICE), "Idempotency-Key": "create-alice-hook"}
    first = create(client, headers)
    assert first.status_code == 201, first.text
    erase(client, ALICE)

    again = create(client, headers)

    assert_erased(again, ALICE)
    assert first.json()["secret"] not in again.text
    assert "idempotent-replayed" not in again.headers


def test_a_malformed_idempotency_key_is_refused_before_the_erasure(
    client: TestClient, world: World
) -> None:
    mine = created(client, ALICE)
    erase(client, ALICE)
    headers = {**auth(ALICE), "Idempotency-Key": "two words"}

    answers = [
        create(client, headers),
        client.post(
            f"/commands/webhooks/{mine}/deliveries/{AUDIO}/1/resend", headers=headers
        ),
    ]

    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert answer.json()["type"].endswith("/invalid-idempotency-key")
    assert world.subscription_ids(ALICE) == [mine]


def test_an_admin_may_clear_an_erased_users_leftovers_but_act_for_them_no_more(
    client: TestClient, world: World
) -> None:
    leftover = created(client, ALICE)
    world.park(leftover)
    erase(client, ALICE)
    base = f"/commands/webhooks/{leftover}"

    for refused in (
        create(client, admin(), user_id=str(ALICE)),
        client.get(f"{base}/deliveries", headers=admin()),
        client.post(f"{base}/deliveries/{AUDIO}/1/resend", headers=admin()),
    ):
        assert_erased(refused, ALICE)
    assert world.status(leftover) is DeliveryStatus.PARKED
    assert world.subscription_ids(ALICE) == [leftover]

    listed = client.get(
        "/commands/webhooks", params={"user_id": str(ALICE)}, headers=admin()
    )
    assert listed.status_code == 200, listed.text
    assert [s["subscription_id"] for s in listed.json()["items"]] == [leftover]
    everyone = client.get("/commands/webhooks", headers=admin())
    assert [s["subscription_id"] for s in everyone.json()["items"]] == [leftover]
    assert client.get(base, headers=admin()).status_code == 200
    assert client.delete(base, headers=admin()).status_code == 204
    assert world.subscription_ids(ALICE) == []
    assert create(client, admin(), user_id=str(BOB)).status_code == 201


def test_another_user_learns_nothing_of_an_erasure(
    client: TestClient, world: World
) -> None:
    alices = created(client, ALICE)
    erase(client, ALICE)

    named = client.get(
        "/commands/webhooks", params={"user_id": str(ALICE)}, headers=auth(BOB)
    )
    theirs = client.get(f"/commands/webhooks/{alices}", headers=auth(BOB))

    assert named.status_code == 403, named.text
    assert theirs.status_code == 404, theirs.text


def test_an_erased_admin_is_refused_too(client: TestClient, world: World) -> None:
    bobs = created(client, BOB)
    erased_admin = auth(ADMIN, "admin")
    assert client.delete("/commands/users/me", headers=erased_admin).is_success

    answers = every_route(client, bobs, erased_admin)

    for answer in answers.values():
        assert_erased(answer, ADMIN)
    assert world.subscription_ids(BOB) == [bobs]


def test_an_erasure_by_another_process_is_seen_within_the_key_cache_ttl(
    client: TestClient, world: World
) -> None:
    mine = created(client, ALICE)
    reads = world.keys.reads
    for _ in range(5):
        assert client.get("/commands/webhooks", headers=auth(ALICE)).is_success
    assert world.keys.reads == reads, "the erasure check is served from the cache"

    asyncio.run(world.key_cache().erase(ALICE))
    world.clock.advance(TTL_S - 1)
    late = create(client, auth(ALICE))
    assert late.status_code == 201, "another process's erasure: cached up to the TTL"
    world.clock.advance(1.1)
    answer = client.get(f"/commands/webhooks/{mine}", headers=auth(ALICE))
    assert_erased(answer, ALICE)
    assert world.keys.reads == reads + 1


def test_every_webhook_route_documents_the_410(client: TestClient) -> None:
    paths = client.get("/commands/openapi.json").json()["paths"]
    operations = [
        (path, method, operation)
        for path, item in paths.items()
        if path.startswith("/commands/webhooks")
        for method, operation in item.items()
    ]

    assert len(operations) == 6
    for path, method, operation in operations:
        documented = operation["responses"].get("410")
        assert documented is not None, f"{method.upper()} {path}"
        assert "`user-erased`" in documented["description"]
