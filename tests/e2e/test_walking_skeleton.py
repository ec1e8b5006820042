"""One command through every layer, with each service a separate process.

POST /commands/audio -> nova-event-store -> relay -> Kafka -> both projectors ->
GET /queries/audio/{id} (and the same over gRPC), and the document in OpenSearch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import grpc
import httpx
import pytest
from google.protobuf import json_format
from opensearchpy import AsyncOpenSearch

from nova_events import loads
from nova_platform.auth.dev_token import issue
from nova_platform.settings import NovaSettings
from nova_query_api.grpc_gen import query_pb2, query_pb2_grpc

from ..audio_samples import sine_wav
from ..backends import Backends
from ..conftest import JWT_SECRET
from ..kafka_reader import read_topic
from ..service_processes import RunningService, running_services
from ..waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def services(
    request: pytest.FixtureRequest,
    settings: NovaSettings,
    backends: Backends,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RunningService]]:
    env = {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": settings.resource_suffix,
        "NOVA_JWT_SECRET": JWT_SECRET,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
    }
    logs = tmp_path_factory.mktemp("service-logs")
    with running_services(request, env, logs) as running:
        yield running


async def test_created_audio_is_visible_everywhere(
    services: dict[str, RunningService], settings: NovaSettings
) -> None:
    user = uuid4()
    headers = {
        "Authorization": f"Bearer {issue(user, 'audio:read audio:write', JWT_SECRET)}"
    }
    command_api = services["command-api"].url
    query_api = services["query-api"].url

    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(
            f"{command_api}/commands/audio",
            files={"file": ("hello.wav", sine_wav(0.5), "audio/wav")},
            data={"title": "Hello"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        audio_id = created.json()["audio_id"]

        async def read_model() -> dict[str, Any] | None:
            response = await http.get(
                f"{query_api}/queries/audio/{audio_id}", headers=headers
            )
            return response.json() if response.status_code == 200 else None

        audio = await eventually(read_model, what="the audio in query-api")

        metrics = await http.get(f"{services['relay'].url}/metrics")

        stranger = {
            "Authorization": f"Bearer {issue(uuid4(), 'audio:read', JWT_SECRET)}"
        }
        hidden = await http.get(
            f"{query_api}/queries/audio/{audio_id}", headers=stranger
        )

    grpc_port = services["query-api"].grpc_port
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        over_grpc = await query_pb2_grpc.QueryServiceStub(channel).GetAudio(
            query_pb2.GetAudioRequest(audio_id=audio_id),
            metadata=tuple((k.lower(), v) for k, v in headers.items()),
            timeout=10,
        )
    # The same item as REST, but for proto's JSON mapping: absent for null,
    # int64 `size_bytes` as a string.
    assert json_format.MessageToDict(
        over_grpc,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    ) == {
        k: str(v) if k == "size_bytes" else v for k, v in audio.items() if v is not None
    }

    assert audio["audio_id"] == audio_id
    assert audio["user_id"] == str(user)
    assert audio["status"] == "pending"
    assert audio["title"] == "Hello"
    assert audio["version"] == 1
    assert hidden.status_code == 404
    assert "nova_relay_published_events_total" in metrics.text
    assert "nova_relay_active 1.0" in metrics.text
    assert hidden.headers["content-type"] == "application/problem+json"

    records = await read_topic(settings, until=1)
    envelopes = [loads(r.value) for r in records]
    assert [e.event_type for e in envelopes if e.aggregate_id == UUID(audio_id)] == [
        "AudioCreated"
    ]

    search = AsyncOpenSearch(hosts=[settings.opensearch_url])
    try:

        async def indexed() -> dict[str, Any] | None:
            response = await search.get(
                index=settings.search_alias, id=audio_id, ignore=[404]
            )
            return response if response.get("found") else None

        document = await eventually(indexed, what="the document in OpenSearch")
    finally:
        await search.close()
    assert document["_version"] == 1
    assert document["_source"]["user_id"] == str(user)
    assert document["_source"]["status"] == "pending"


async def test_reading_with_the_commands_version_never_shows_an_older_state(
    services: dict[str, RunningService],
) -> None:
    user = uuid4()
    headers = {
        "Authorization": f"Bearer {issue(user, 'audio:read audio:write', JWT_SECRET)}"
    }
    command_api = services["command-api"].url
    query_api = services["query-api"].url
    not_yet = 0

    async with httpx.AsyncClient(timeout=10) as http:

        async def read(audio_id: str, version: int) -> dict[str, Any] | None:
            nonlocal not_yet
            answer = await http.get(
                f"{query_api}/queries/audio/{audio_id}",
                params={"min_version": version},
                headers=headers,
            )
            if answer.status_code == 503:  # allowed: "not yet", never stale data
                assert answer.headers["retry-after"]
                not_yet += 1
                return None
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            assert body["version"] >= version, "an older state was served"
            return body

        for _ in range(10):
            created = await http.post(
                f"{command_api}/commands/audio",
                files={"file": ("a.wav", sine_wav(0.2), "audio/wav")},
                headers=headers,
            )
            audio_id, version = created.json()["audio_id"], created.json()["version"]
            first = await read(audio_id, version)
            started = await http.post(
                f"{command_api}/commands/audio/{audio_id}/transcribe", headers=headers
            )
            second = await read(audio_id, started.json()["version"])

            assert first is None or first["status"] in (
                "pending",
                "processing",
                "failed",
            )
            assert second is None or second["status"] != "pending"

    assert not_yet <= 2, f"{not_yet} of 20 reads were not consistent within the wait"
