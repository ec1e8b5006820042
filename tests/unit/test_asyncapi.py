"""The AsyncAPI documents FastStream generates for the topic's writer and readers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from faststream.asgi import AsgiFastStream

from nova_command_api.adapters.memory_audio_storage import InMemoryAudioStorage
from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore
from nova_command_api.entrypoints.http import create_app as command_app
from nova_command_api.settings import CommandApiSettings
from nova_events import AUDIO_EVENTS, USER_EVENTS
from nova_integration.entrypoints.consumer import create_app as integration_app
from nova_integration.settings import IntegrationSettings
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.entrypoints.consumer import (
    ProjectorSettings as ReadModelSettings,
)
from nova_projector_readmodel.entrypoints.consumer import create_app as readmodel_app
from nova_projector_search.entrypoints.consumer import (
    ProjectorSettings as SearchSettings,
)
from nova_projector_search.entrypoints.consumer import create_app as search_app
from nova_transcriber.entrypoints.consumer import create_app as transcriber_app
from nova_transcriber.settings import TranscriberSettings

SECRET = "s" * 32
EVENT_TYPES = {model.event_type() for model in (*AUDIO_EVENTS, *USER_EVENTS)}
CONSUMERS: dict[str, Callable[[], AsgiFastStream]] = {
    "projector-readmodel": lambda: readmodel_app(ReadModelSettings()),
    "projector-search": lambda: search_app(SearchSettings()),
    "integration": lambda: integration_app(IntegrationSettings()),
    "transcriber": lambda: transcriber_app(TranscriberSettings(jwt_secret=SECRET)),
}

Document = dict[str, Any]


def resolve(document: Document, ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def payload_of(document: Document, operation: Document) -> Document:
    [message_ref] = operation["messages"]
    message = resolve(document, message_ref["$ref"])
    if "$ref" in message:
        message = resolve(document, message["$ref"])
    payload: Document = resolve(document, message["payload"]["$ref"])
    return payload


def event_types_in(document: Document, schema: Document) -> set[str]:
    """The event types a payload schema (a union of messages) allows."""
    if schema.get("type") == "array":
        schema = schema["items"]
    assert schema["discriminator"] == "event_type"
    found = set()
    for option in schema["oneOf"]:
        message = resolve(document, option["$ref"])
        event_type = message["properties"]["event_type"]["const"]
        data = resolve(document, message["properties"]["data"]["$ref"])
        assert data["title"] == event_type
        found.add(event_type)
    return found


def test_command_api_publishes_the_relay_s_document_beside_its_openapi() -> None:
    settings = CommandApiSettings(jwt_secret=SECRET)
    app = command_app(
        settings,
        event_store=InMemoryEventStore(),
        storage=InMemoryAudioStorage(),
        idempotency=InMemoryIdempotencyStore(),
    )
    with TestClient(app) as client:
        assert client.get("/commands/openapi.json").status_code == 200
        response = client.get("/commands/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["asyncapi"].startswith("3.")
    [(name, channel)] = document["channels"].items()
    assert channel["address"] == NovaSettings().events_topic
    [operation] = document["operations"].values()
    assert operation["action"] == "send"
    assert operation["channel"]["$ref"] == f"#/channels/{name}"
    assert event_types_in(document, payload_of(document, operation)) == EVENT_TYPES
    # The personal fields stay marked, as in the committed JSON Schemas.
    created = document["components"]["schemas"]["AudioCreated"]["properties"]
    assert created["title"]["x-personal"] is True
    assert "x-personal" not in created["user_id"]


@pytest.mark.parametrize("service", sorted(CONSUMERS))
async def test_each_consumer_serves_its_own_document(service: str) -> None:
    app = CONSUMERS[service]()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
        response = await http.get("/asyncapi.json")
        page = await http.get("/asyncapi")
        try_it = await http.post("/asyncapi/try", json={})
    assert response.status_code == 200
    assert page.status_code == 200
    assert "asyncapi" in page.text.lower()
    # No page that would publish to Kafka for whoever reaches the port.
    assert try_it.status_code == 404
    document = response.json()
    group = f"nova-{service}"
    assert document["info"]["title"] == f"Nova {service}"
    receive = document["operations"][group]
    assert receive["action"] == "receive"
    channel = resolve(document, receive["channel"]["$ref"])
    assert channel["address"] == NovaSettings().events_topic
    assert event_types_in(document, payload_of(document, receive)) == EVENT_TYPES
    dead_letter = document["operations"][f"{group}:dead-letter"]
    assert dead_letter["action"] == "send"
    assert resolve(document, dead_letter["channel"]["$ref"])["address"] == (
        NovaSettings().dead_letter_topic
    )
    assert document["channels"][group].get("description") or channel.get(
        "description"
    ), f"{service}: the document does not say what it does with the events"
