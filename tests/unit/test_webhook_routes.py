"""Webhook subscription routes through the real app, on in-memory adapters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from fastapi.testclient import TestClient

from nova_command_api.adapters.memory_audio_storage import InMemoryAudioStorage
from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore
from nova_command_api.application import webhooks as command_webhooks
from nova_command_api.entrypoints.http import create_app
from nova_command_api.settings import CommandApiSettings
from nova_integration.domain.payload import PUBLIC_EVENT_TYPES
from nova_platform.auth.dev_token import issue
from nova_platform.webhooks import (
    Attempt,
    Delivery,
    DeliveryStatus,
    InMemoryWebhookStore,
)

SECRET = "unit-test-secret-of-at-least-32-bytes"
USER = UUID("11111111-1111-4111-8111-111111111111")
OTHER = UUID("22222222-2222-4222-8222-222222222222")
ADMIN = UUID("33333333-3333-4333-8333-333333333333")
URL = "https://hooks.example.com/nova"


class World:
    def __init__(self) -> None:
        self.webhooks = InMemoryWebhookStore()

    def app(self, allow_private: bool = False) -> Any:
        settings = CommandApiSettings(
            jwt_secret=SECRET, webhook_allow_private_targets=allow_private
        )
        return create_app(
            settings,
            event_store=InMemoryEventStore(),
            storage=InMemoryAudioStorage(),
            idempotency=InMemoryIdempotencyStore(),
            webhooks=self.webhooks,
        )

    def seed(self, *deliveries: Delivery) -> None:
        asyncio.run(self.webhooks.add_deliveries(deliveries))

    def delivery(self, subscription_id: str, audio_id: UUID, sequence: int) -> Delivery:
        found = asyncio.run(
            self.webhooks.get_delivery(UUID(subscription_id), audio_id, sequence)
        )
        assert found is not None
        return found


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(world.app()) as test_client:
        yield test_client


def auth(scopes: str = "audio:write", user: UUID = USER) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(user, scopes, SECRET)}"}


def admin() -> dict[str, str]:
    return auth("admin", ADMIN)


def create(
    client: TestClient, headers: dict[str, str] | None = None, **body: Any
) -> httpx.Response:
    payload = {"url": URL, "event_types": ["audio.transcription.completed"], **body}
    response: httpx.Response = client.post(
        "/commands/webhooks", json=payload, headers=headers or auth()
    )
    return response


def created(client: TestClient, **body: Any) -> str:
    response = create(client, **body)
    assert response.status_code == 201, response.text
    subscription_id: str = response.json()["subscription_id"]
    return subscription_id


def delivery(
    subscription_id: str,
    audio_id: UUID,
    sequence: int,
    status: DeliveryStatus = DeliveryStatus.PARKED,
    **fields: Any,
) -> Delivery:
    return Delivery(
        subscription_id=UUID(subscription_id),
        audio_id=audio_id,
        sequence=sequence,
        event_id=uuid4(),
        event_type="audio.processing.started",
        body=b'{"secret": "body bytes"}',
        created_at=1_700_000_000.0 + sequence,
        status=status,
        **fields,
    )


def test_public_event_types_match_integration() -> None:
    assert set(command_webhooks.PUBLIC_EVENT_TYPES) == set(PUBLIC_EVENT_TYPES.values())
    assert len(command_webhooks.PUBLIC_EVENT_TYPES) == len(PUBLIC_EVENT_TYPES)


def test_create_generates_a_secret_shown_only_once(client: TestClient) -> None:
    before = time.time()
    response = create(
        client,
        event_types=["audio.deleted", "audio.created"],
        description="CRM sync",
    )

    assert response.status_code == 201, response.text
    body = response.json()
    sid = body["subscription_id"]
    assert response.headers["location"] == f"/commands/webhooks/{sid}"
    assert body["user_id"] == str(USER)
    assert body["url"] == URL
    assert body["event_types"] == ["audio.created", "audio.deleted"]
    assert body["description"] == "CRM sync"
    assert body["secret"].startswith("whsec_")
    assert len(body["secret"]) > 40
    assert body["created_at"].endswith("Z")
    created_at = body["created_at"].replace("Z", "+00:00")
    assert datetime.fromisoformat(created_at).timestamp() >= before - 1

    one = client.get(f"/commands/webhooks/{sid}", headers=auth())
    listed = client.get("/commands/webhooks", headers=auth())
    assert one.status_code == 200
    assert "secret" not in one.json()
    assert {k: v for k, v in body.items() if k != "secret"} == one.json()
    assert listed.json() == {"items": [one.json()]}
    assert body["secret"] not in listed.text


def test_create_with_a_given_secret_and_all_types(client: TestClient) -> None:
    response = create(client, event_types=["*"], secret="my own secret 1234")

    assert response.status_code == 201, response.text
    assert response.json()["secret"] == "my own secret 1234"
    assert response.json()["event_types"] == ["*"]
    assert response.json()["description"] == ""


def test_idempotency_key_replays_the_created_subscription(
    client: TestClient, world: World
) -> None:
    headers = {**auth(), "Idempotency-Key": "create-1"}

    first = create(client, headers)
    second = create(client, headers)

    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert len(asyncio.run(world.webhooks.subscriptions_of(USER))) == 1


def test_users_see_only_their_own_and_admins_see_all(client: TestClient) -> None:
    mine = created(client)
    theirs = created(client, headers=auth(user=OTHER))

    own_list = client.get("/commands/webhooks", headers=auth()).json()["items"]
    all_list = client.get("/commands/webhooks", headers=admin()).json()["items"]
    by_user = client.get(
        "/commands/webhooks", params={"user_id": str(OTHER)}, headers=admin()
    ).json()["items"]
    foreign = client.get(f"/commands/webhooks/{theirs}", headers=auth())
    foreign_delete = client.delete(f"/commands/webhooks/{theirs}", headers=auth())
    foreign_deliveries = client.get(
        f"/commands/webhooks/{theirs}/deliveries", headers=auth()
    )
    as_admin = client.get(f"/commands/webhooks/{mine}", headers=admin())

    assert [s["subscription_id"] for s in own_list] == [mine]
    assert {s["subscription_id"] for s in all_list} == {mine, theirs}
    assert [s["subscription_id"] for s in by_user] == [theirs]
    for response in (foreign, foreign_delete, foreign_deliveries):
        assert response.status_code == 404, response.text
        assert response.json()["type"].endswith("/not-found")
        assert response.json()["subscription_id"] == theirs
    assert as_admin.status_code == 200
    assert client.get(
        f"/commands/webhooks/{theirs}", headers=auth(user=OTHER)
    ).is_success


def test_admin_creates_for_another_user_and_users_cannot(client: TestClient) -> None:
    for_other = create(client, admin(), user_id=str(OTHER))
    by_user = create(client, auth(), user_id=str(OTHER))
    for_self = create(client, auth(), user_id=str(USER))
    listing_other = client.get(
        "/commands/webhooks", params={"user_id": str(OTHER)}, headers=auth()
    )

    assert for_other.status_code == 201, for_other.text
    assert for_other.json()["user_id"] == str(OTHER)
    owned = client.get("/commands/webhooks", headers=auth(user=OTHER)).json()
    assert [s["subscription_id"] for s in owned["items"]] == [
        for_other.json()["subscription_id"]
    ]
    assert by_user.status_code == 403
    assert by_user.json()["type"].endswith("/forbidden")
    assert "user_id" in by_user.json()["detail"]
    assert for_self.status_code == 201
    assert listing_other.status_code == 403


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://example.com/hook", "http"),
        ("http://127.0.0.1/hook", "127.0.0.1"),
        ("http://10.0.0.1/hook", "10.0.0.1"),
        ("http://[::1]/hook", "::1"),
        ("http://user:pw@example.com/hook", "credentials"),
        ("http://localhost:8080/hook", "127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("https://example.com/hook#part", "fragment"),
        ("not a url", "spaces"),
    ],
)
def test_refused_urls_say_what_to_fix(client: TestClient, url: str, says: str) -> None:
    response = create(client, url=url)

    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/invalid-request")
    assert problem["errors"][0]["location"] == "body.url"
    assert says in problem["errors"][0]["message"]
    assert says in problem["detail"]


def test_private_targets_when_the_deployment_allows_them(world: World) -> None:
    with TestClient(world.app(allow_private=True)) as client:
        loopback = create(client, url="http://127.0.0.1:9/hook")
        local = create(client, url="http://localhost:9/hook")
        multicast = create(client, url="http://224.0.0.1/hook")

    assert loopback.status_code == 201, loopback.text
    assert local.status_code == 201, local.text
    assert multicast.status_code == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event_types": ["audio.exploded"]}, "body.event_types"),
        ({"event_types": []}, "body.event_types"),
        ({"event_types": ["*", "audio.created"]}, "body.event_types"),
        ({"secret": "too-short"}, "body.secret"),
        ({"secret": "x" * 201}, "body.secret"),
        ({"secret": "non-ascii-secret-é-1234"}, "body.secret"),
        ({"secret": "tab\tin-the-secret-1234"}, "body.secret"),
        ({"description": "d" * 201}, "body.description"),
        ({"description": "line\nbreak"}, "body.description"),
        ({"colour": "red"}, "body.colour"),
        ({"user_id": "not-a-uuid"}, "body.user_id"),
    ],
)
def test_invalid_requests_name_the_field(
    client: TestClient, world: World, body: dict[str, Any], field: str
) -> None:
    response = create(client, **body)

    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/invalid-request")
    assert field in [e["location"] for e in response.json()["errors"]]
    assert field in response.json()["detail"]
    assert asyncio.run(world.webhooks.subscriptions_of(None)) == []


def test_unknown_event_type_names_the_known_ones(client: TestClient) -> None:
    response = create(client, event_types=["audio.created", "audio.exploded"])

    message = response.json()["errors"][0]["message"]
    assert "audio.exploded" in message
    assert "audio.transcription.completed" in message


def test_at_most_ten_subscriptions_per_user(client: TestClient) -> None:
    for _ in range(10):
        created(client)

    eleventh = create(client)
    others = create(client, auth(user=OTHER))

    assert eleventh.status_code == 409
    assert eleventh.json()["type"].endswith("/subscription-limit")
    assert "10" in eleventh.json()["detail"]
    assert others.status_code == 201


def test_delete_then_not_found(client: TestClient, world: World) -> None:
    sid = created(client)

    deleted = client.delete(f"/commands/webhooks/{sid}", headers=auth())
    again = client.delete(f"/commands/webhooks/{sid}", headers=auth())
    read = client.get(f"/commands/webhooks/{sid}", headers=auth())

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert again.status_code == 404
    assert read.status_code == 404
    assert read.json()["type"].endswith("/not-found")
    assert asyncio.run(world.webhooks.subscriptions_of(USER)) == []


def test_deliveries_page_with_attempts_and_a_cursor(
    client: TestClient, world: World
) -> None:
    sid = created(client)
    audio = uuid4()
    attempt = Attempt(
        at=1_700_000_100.5,
        latency_ms=12.5,
        response_code=None,
        outcome="retry",
        error="connection refused",
    )
    world.seed(
        delivery(sid, audio, 1, DeliveryStatus.DELIVERED),
        delivery(
            sid,
            audio,
            2,
            DeliveryStatus.PENDING,
            next_attempt_at=1_700_000_200.0,
            attempts_used=1,
            attempts=(attempt,),
        ),
        delivery(sid, audio, 3, parked_reason="behind earlier"),
        delivery(sid, audio, 10),
    )

    first = client.get(
        f"/commands/webhooks/{sid}/deliveries", params={"limit": 2}, headers=auth()
    )
    cursor = first.json()["next_cursor"]
    second = client.get(
        f"/commands/webhooks/{sid}/deliveries",
        params={"limit": 2, "cursor": cursor},
        headers=auth(),
    )
    parked = client.get(
        f"/commands/webhooks/{sid}/deliveries",
        params={"status": "parked"},
        headers=auth(),
    )

    assert first.status_code == 200, first.text
    assert [d["sequence"] for d in first.json()["items"]] == [1, 2]
    assert cursor
    assert [d["sequence"] for d in second.json()["items"]] == [3, 10]
    assert second.json()["next_cursor"] is None
    assert [d["sequence"] for d in parked.json()["items"]] == [3, 10]
    delivered, pending = first.json()["items"]
    assert delivered["next_attempt_at"] is None
    assert delivered["status"] == "delivered"
    assert pending == {
        "event_id": pending["event_id"],
        "event_type": "audio.processing.started",
        "audio_id": str(audio),
        "sequence": 2,
        "status": "pending",
        "attempts_used": 1,
        "next_attempt_at": "2023-11-14T22:16:40Z",
        "parked_reason": "",
        "created_at": "2023-11-14T22:13:22Z",
        "attempts": [
            {
                "at": "2023-11-14T22:15:00.500000Z",
                "latency_ms": 12.5,
                "response_code": None,
                "outcome": "retry",
                "error": "connection refused",
            }
        ],
    }
    assert "body" not in first.text
    assert second.json()["items"][0]["parked_reason"] == "behind earlier"


@pytest.mark.parametrize(
    ("params", "status", "kind"),
    [
        ({"cursor": "forged"}, 400, "invalid-cursor"),
        ({"cursor": "!!!"}, 400, "invalid-cursor"),
        ({"limit": 0}, 422, "invalid-request"),
        ({"limit": 101}, 422, "invalid-request"),
        ({"status": "lost"}, 422, "invalid-request"),
    ],
)
def test_bad_delivery_queries(
    client: TestClient, params: dict[str, Any], status: int, kind: str
) -> None:
    sid = created(client)

    response = client.get(
        f"/commands/webhooks/{sid}/deliveries", params=params, headers=auth()
    )

    assert response.status_code == status, response.text
    assert response.json()["type"].endswith(f"/{kind}")


def test_resend_requeues_the_parked_delivery_and_those_behind_it(
    client: TestClient, world: World
) -> None:
    sid = created(client)
    audio, other_audio = uuid4(), uuid4()
    failed = Attempt(
        at=1_700_000_100.0,
        latency_ms=30.0,
        response_code=500,
        outcome="parked",
        error="HTTP 500",
    )
    world.seed(
        delivery(sid, audio, 1, DeliveryStatus.DELIVERED),
        delivery(
            sid,
            audio,
            2,
            attempts_used=8,
            attempts=(failed,),
            parked_reason="8 attempts failed",
        ),
        delivery(sid, audio, 3, parked_reason="behind 2"),
        delivery(sid, audio, 10, parked_reason="behind 2"),
        delivery(sid, other_audio, 4, parked_reason="other lane"),
    )
    before = time.time()

    response = client.post(
        f"/commands/webhooks/{sid}/deliveries/{audio}/2/resend", headers=auth()
    )

    assert response.status_code == 202, response.text
    requeued = response.json()["requeued"]
    assert [(r["audio_id"], r["sequence"]) for r in requeued] == [
        (str(audio), 2),
        (str(audio), 3),
        (str(audio), 10),
    ]
    for sequence, entry in zip((2, 3, 10), requeued, strict=True):
        stored = world.delivery(sid, audio, sequence)
        assert entry["event_id"] == str(stored.event_id)
        assert stored.status is DeliveryStatus.PENDING
        assert stored.attempts_used == 0
        assert stored.parked_reason == ""
        assert stored.lease_until == 0
        assert before - 1 <= stored.next_attempt_at <= time.time() + 1
    assert world.delivery(sid, audio, 2).attempts == (failed,)
    assert world.delivery(sid, audio, 1).status is DeliveryStatus.DELIVERED
    assert world.delivery(sid, other_audio, 4).status is DeliveryStatus.PARKED


def test_resend_must_start_at_the_lanes_first_parked_delivery(
    client: TestClient, world: World
) -> None:
    sid = created(client)
    audio = uuid4()
    world.seed(delivery(sid, audio, 1), delivery(sid, audio, 2))

    response = client.post(
        f"/commands/webhooks/{sid}/deliveries/{audio}/2/resend", headers=auth()
    )

    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith("/earlier-delivery-parked")
    assert response.json()["first_parked_sequence"] == 1
    assert world.delivery(sid, audio, 1).status is DeliveryStatus.PARKED
    assert world.delivery(sid, audio, 2).status is DeliveryStatus.PARKED


def test_resend_of_a_delivery_that_is_not_parked(
    client: TestClient, world: World
) -> None:
    sid = created(client)
    audio = uuid4()
    world.seed(delivery(sid, audio, 1, DeliveryStatus.DELIVERED))

    delivered = client.post(
        f"/commands/webhooks/{sid}/deliveries/{audio}/1/resend", headers=auth()
    )
    missing = client.post(
        f"/commands/webhooks/{sid}/deliveries/{audio}/7/resend", headers=auth()
    )
    foreign = client.post(
        f"/commands/webhooks/{sid}/deliveries/{audio}/1/resend",
        headers=auth(user=OTHER),
    )

    assert delivered.status_code == 409
    assert delivered.json()["type"].endswith("/delivery-not-parked")
    assert delivered.json()["status_now"] == "delivered"
    assert "delivered" in delivered.json()["detail"]
    assert missing.status_code == 404
    assert missing.json()["type"].endswith("/not-found")
    assert foreign.status_code == 404
    assert world.delivery(sid, audio, 1).status is DeliveryStatus.DELIVERED


def test_admin_resends_a_users_delivery(client: TestClient, world: World) -> None:
    sid = created(client)
    audio = uuid4()
    world.seed(delivery(sid, audio, 1))

    response = client.post(
        f"/commands/webhooks/{sid}/deliveries/{audio}/1/resend", headers=admin()
    )

    assert response.status_code == 202
    assert world.delivery(sid, audio, 1).status is DeliveryStatus.PENDING


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/commands/webhooks"),
        ("get", "/commands/webhooks"),
        ("get", f"/commands/webhooks/{uuid4()}"),
        ("delete", f"/commands/webhooks/{uuid4()}"),
        ("get", f"/commands/webhooks/{uuid4()}/deliveries"),
        ("post", f"/commands/webhooks/{uuid4()}/deliveries/{uuid4()}/1/resend"),
    ],
)
def test_routes_need_a_token_with_audio_write(
    client: TestClient, world: World, method: str, path: str
) -> None:
    body = {"url": URL, "event_types": ["*"]} if path.endswith("webhooks") else None
    kwargs: dict[str, Any] = {"json": body} if method == "post" else {}

    anonymous = client.request(method, path, **kwargs)
    reader = client.request(method, path, headers=auth("audio:read"), **kwargs)

    assert anonymous.status_code == 401
    assert anonymous.json()["type"].endswith("/unauthorized")
    assert reader.status_code == 403
    assert reader.json()["type"].endswith("/forbidden")
    assert "audio:write" in reader.json()["detail"]
    assert asyncio.run(world.webhooks.subscriptions_of(None)) == []


def test_the_openapi_document_describes_the_routes(client: TestClient) -> None:
    document = client.get("/commands/openapi.json").json()

    schemas = document["components"]["schemas"]
    assert "/commands/webhooks/{subscription_id}/deliveries" in document["paths"]
    assert schemas["CreateWebhookRequest"]["additionalProperties"] is False
    assert "description" in schemas["CreateWebhookRequest"]["properties"]["secret"]
    assert "secret" not in schemas["WebhookOut"]["properties"]
