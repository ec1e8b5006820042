"""Two relays run side by side (one active, one standby); kill them again and
again while writers commit: nothing lost, nothing doubled, every audio in
version order."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_events import AUDIO_FILE, AudioProcessingStarted, loads
from nova_platform.aws import client_kwargs, session
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from ..backends import Backends
from ..contracts.event_store import META, created
from ..kafka_reader import read_topic
from ..net import free_port
from ..service_processes import (
    BIN,
    SERVICES,
    RunningService,
    start_services,
    wait_healthy,
)

pytestmark = pytest.mark.e2e

RELAY = next(s for s in SERVICES if s.name == "relay")
WRITERS = 8
WRITE_SECONDS = 10.0
KILLS = 4


@pytest.fixture
async def own_settings(settings: NovaSettings) -> NovaSettings:
    """Resources of this test alone, so no other relay holds the lease."""
    mine = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "k"}
    )
    await ensure_all(mine)
    return mine


def start_relay(
    backends: Backends, settings: NovaSettings, logs: Path
) -> RunningService:
    env = {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": settings.resource_suffix,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
        "NOVA_RELAY_LEASE_TTL_S": "1.5",
    }
    [relay] = start_services(BIN, env, logs, {"relay": free_port()}, (RELAY,))
    wait_healthy([relay], timeout=60)
    return relay


async def test_killed_relay_loses_and_doubles_nothing(
    own_settings: NovaSettings, backends: Backends, tmp_path: Path
) -> None:
    committed: dict[UUID, list[UUID]] = defaultdict(list)  # audio -> event ids
    stop_writing = asyncio.Event()

    async def writer(store: DynamoDBEventStore) -> None:
        while not stop_writing.is_set():
            audio_id = uuid4()
            events = await store.append_events(
                AUDIO_FILE, audio_id, [created(audio_id)], 0, META
            )
            committed[audio_id].extend(e.event_id for e in events)
            for version in range(1, 4):
                started = AudioProcessingStarted(audio_id=audio_id)
                events = await store.append_events(
                    AUDIO_FILE, audio_id, [started], version, META
                )
                committed[audio_id].extend(e.event_id for e in events)

    relays: list[RunningService] = []  # every relay started, newest last
    pair: list[RunningService] = []  # the two running: one active, one standby

    def launch() -> RunningService:
        relay = start_relay(backends, own_settings, tmp_path)
        relays.append(relay)
        return relay

    async with session().client("dynamodb", **client_kwargs(own_settings)) as ddb:
        store = DynamoDBEventStore(ddb, own_settings.event_store_table)
        pair.extend([launch(), launch()])
        writing = [asyncio.create_task(writer(store)) for _ in range(WRITERS)]
        for kill in range(KILLS):
            await asyncio.sleep(WRITE_SECONDS / KILLS)
            victim = pair.pop(kill % 2)
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait()
            pair.insert(kill % 2, await asyncio.to_thread(launch))
        stop_writing.set()
        await asyncio.gather(*writing)

    expected = sum(len(ids) for ids in committed.values())
    try:
        records = await read_topic(own_settings, until=expected, timeout=60)
    finally:
        for relay in relays:
            relay.stop()

    seen: dict[UUID, list[int]] = defaultdict(list)
    ids = []
    for record in records:
        envelope = loads(record.value)
        seen[envelope.aggregate_id].append(envelope.version)
        ids.append(envelope.event_id)
    assert expected > 200, f"only {expected} events committed: too light a load"
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert set(ids) == {i for event_ids in committed.values() for i in event_ids}
    for audio_id, event_ids in committed.items():
        assert seen[audio_id] == list(range(1, len(event_ids) + 1))
