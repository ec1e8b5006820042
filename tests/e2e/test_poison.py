"""A poison event parks only its audio; a redrive makes both projections converge."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from aiokafka import AIOKafkaProducer
from opensearchpy import AsyncOpenSearch

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_events import AUDIO_FILE, AudioProcessingStarted, DomainEvent
from nova_platform.aws import client_kwargs, session
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from ..backends import Backends
from ..contracts.event_store import META, created
from ..service_processes import BIN, RunningService, running_services
from ..waiting import eventually

pytestmark = pytest.mark.e2e

PROJECTORS = ("projector-readmodel", "projector-search")


@pytest.fixture
async def own_settings(settings: NovaSettings) -> NovaSettings:
    mine = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "p"}
    )
    await ensure_all(mine)
    return mine


@pytest.fixture
def env(own_settings: NovaSettings, backends: Backends) -> dict[str, str]:
    return {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": own_settings.resource_suffix,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
    }


@pytest.fixture
def pipeline(
    request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path
) -> Iterator[list[RunningService]]:
    with running_services(request, env, tmp_path, ("relay", *PROJECTORS)) as running:
        yield list(running.values())


async def test_poison_parks_one_audio_and_redrive_converges(
    pipeline: list[RunningService], own_settings: NovaSettings, env: dict[str, str]
) -> None:
    poisoned, healthy = uuid4(), uuid4()
    async with session().client("dynamodb", **client_kwargs(own_settings)) as ddb:
        store = DynamoDBEventStore(ddb, own_settings.event_store_table)
        views = Views(ddb, own_settings)

        for audio_id in (poisoned, healthy):
            await store.append_events(
                AUDIO_FILE, audio_id, [created(audio_id)], 0, META
            )
        await eventually(lambda: views.both_at(poisoned, 1), what="v1 projected")

        # A record no reader can decode, in the poisoned audio's partition.
        await inject_garbage(own_settings, key=poisoned)
        for audio_id in (poisoned, healthy):
            await append(store, audio_id, AudioProcessingStarted(audio_id=audio_id), 1)

        await eventually(lambda: views.both_at(healthy, 2), what="healthy audio flows")
        await eventually(lambda: views.parked(poisoned), what="poisoned audio parked")
        assert await views.read_model_version(poisoned) == 1
        assert await views.index_version(poisoned) == 1

        for service in PROJECTORS:
            redriven = subprocess.run(
                [str(BIN / f"nova-{service}"), "redrive"],
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert redriven.returncode == 0, redriven.stderr[-2000:]
            assert str(poisoned) in redriven.stdout

        await eventually(lambda: views.both_at(poisoned, 2), what="redrive converges")
        assert await views.marks(poisoned) == 0
        await append(store, poisoned, AudioProcessingStarted(audio_id=poisoned), 2)
        await eventually(lambda: views.both_at(poisoned, 3), what="audio flows again")
        await views.close()


async def append(
    store: DynamoDBEventStore, audio_id: UUID, event: DomainEvent, after: int
) -> None:
    await store.append_events(AUDIO_FILE, audio_id, [event], after, META)


async def inject_garbage(settings: NovaSettings, key: UUID) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.events_topic, b"\x00 not an envelope", key=str(key).encode()
        )
    finally:
        await producer.stop()


class Views:
    """What both projections and the parking table say about one audio."""

    def __init__(self, ddb: Any, settings: NovaSettings) -> None:
        self._ddb = ddb
        self._settings = settings
        self._search = AsyncOpenSearch(hosts=[settings.opensearch_url])

    async def close(self) -> None:
        await self._search.close()

    async def read_model_version(self, audio_id: UUID) -> int | None:
        found = await self._ddb.get_item(
            TableName=self._settings.read_model_table,
            Key={"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}},
            ConsistentRead=True,
        )
        item = found.get("Item")
        return int(item["version"]["N"]) if item else None

    async def index_version(self, audio_id: UUID) -> int | None:
        doc = await self._search.get(
            index=self._settings.search_alias, id=str(audio_id), ignore=[404]
        )
        return int(doc["_version"]) if doc.get("found") else None

    async def both_at(self, audio_id: UUID, version: int) -> bool | None:
        at = (
            await self.read_model_version(audio_id),
            await self.index_version(audio_id),
        )
        return True if at == (version, version) else None

    async def parked(self, audio_id: UUID) -> bool | None:
        """True once every projector parked the audio."""
        return True if await self.marks(audio_id) == len(PROJECTORS) else None

    async def marks(self, audio_id: UUID) -> int:
        marks = 0
        for service in PROJECTORS:
            found = await self._ddb.get_item(
                TableName=self._settings.parking_table,
                Key={
                    "pk": {"S": self._settings.consumer_group(service)},
                    "sk": {"S": str(audio_id)},
                },
                ConsistentRead=True,
            )
            marks += "Item" in found
        return marks
