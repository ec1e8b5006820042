"""Two transcriber processes share the queued work; a killed one loses none of it.

Six spoken sentences, one in each partition of the events topic, are queued for
transcription while two `nova-transcriber` processes share the consumer group
(three partitions each). As soon as the first instance has recorded a result,
it is killed with SIGKILL while its other requests are still open (its offset
is committed only after command-api accepted every result of its batch), and a
replacement is started. Every audio must still end `completed`, each with
exactly one `TranscriptionCompleted` in its stream, although a killed batch is
delivered again (a request that already has a result must be skipped, never
transcribed and recorded a second time). At the end every request is published
once more, and each of those duplicates must be skipped too.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import murmur2

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_events import AUDIO_FILE, AudioProcessingStarted, TranscriptionCompleted
from nova_platform.auth.dev_token import issue
from nova_platform.aws import client_kwargs, session
from nova_platform.kafka import (
    make_producer,
    message_headers,
    message_key,
    message_value,
)
from nova_platform.resources import EVENTS_TOPIC_PARTITIONS, ensure_all
from nova_platform.settings import NovaSettings

from ..backends import ROOT, Backends
from ..conftest import JWT_SECRET
from ..net import free_port
from ..service_processes import (
    BIN,
    SERVICES,
    RunningService,
    start_services,
    stop_services,
    wait_healthy,
)
from ..speech import spoken_wav
from ..waiting import eventually

pytestmark = pytest.mark.e2e

PIPELINE = ("command-api", "relay", "projector-readmodel")
TRANSCRIBER = next(s for s in SERVICES if s.name == "transcriber")
SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "she sells sea shells by the sea shore",
    "a stitch in time saves nine",
    "all that glitters is not gold",
    "the early bird catches the worm",
    "every cloud has a silver lining",
)
SKIPPED = "attempt already has a result or was superseded; skipped"
MAX_UPLOADS = 60
"""Uploads until every partition holds one audio (about 15 are needed)."""


@pytest.fixture
async def own_settings(settings: NovaSettings) -> NovaSettings:
    mine = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "i"}
    )
    await ensure_all(mine)
    return mine


@dataclass
class Stack:
    """The pipeline and every transcriber started, each logging to its own file."""

    env: dict[str, str]
    logs: Path
    pipeline: dict[str, RunningService] = field(default_factory=dict)
    transcribers: list[RunningService] = field(default_factory=list)

    def start_transcriber(self) -> RunningService:
        log_dir = self.logs / f"transcriber-{len(self.transcribers) + 1}"
        [started] = start_services(
            BIN, self.env, log_dir, {TRANSCRIBER.name: free_port()}, (TRANSCRIBER,)
        )
        self.transcribers.append(started)
        return started

    def everything(self) -> list[RunningService]:
        return [*self.pipeline.values(), *self.transcribers]


@pytest.fixture
def stack(
    request: pytest.FixtureRequest,
    own_settings: NovaSettings,
    backends: Backends,
    tmp_path: Path,
) -> Iterator[Stack]:
    spoken_wav("check")  # skip before starting anything when espeak-ng is missing
    command_api_port = free_port()
    env = {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": own_settings.resource_suffix,
        "NOVA_JWT_SECRET": JWT_SECRET,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
        "NOVA_COMMAND_API_URL": f"http://127.0.0.1:{command_api_port}",
        "NOVA_WHISPER_MODEL_DIR": str(ROOT / ".nova" / "models" / "whisper-base"),
        # Two recognitions share two cores: one thread each, no oversubscription.
        "NOVA_WHISPER_CPU_THREADS": "1",
    }
    found = Stack(env, tmp_path)
    wanted = tuple(s for s in SERVICES if s.name in PIPELINE)
    ports = {s.name: free_port() for s in wanted}
    ports["command-api"] = command_api_port
    try:
        running = start_services(BIN, env, tmp_path / "pipeline", ports, wanted)
        found.pipeline = {r.service.name: r for r in running}
        found.start_transcriber()
        found.start_transcriber()
        wait_healthy(found.everything(), timeout=120)
        yield found
    finally:
        stop_services(found.everything())
        for item in found.everything() if request.session.testsfailed else ():
            sys.stderr.write(
                f"--- {item.service.name} ({item.log_path.parent.name}) log tail"
                f" ---\n{item.log_tail(30)}\n"
            )


async def test_two_transcribers_share_the_work_and_a_killed_one_loses_none(
    stack: Stack, own_settings: NovaSettings
) -> None:
    first, second = stack.transcribers
    group = own_settings.consumer_group(TRANSCRIBER.name)
    shares = await eventually(
        lambda: assignments(own_settings, group),
        timeout=60,
        interval=0.5,
        what="both transcribers sharing the partitions",
    )

    headers = {"Authorization": f"Bearer {issue(uuid4(), 'audio:write', JWT_SECRET)}"}
    speech = [spoken_wav(text) for text in SENTENCES]
    async with httpx.AsyncClient(
        base_url=stack.pipeline["command-api"].url, headers=headers, timeout=30
    ) as http:
        by_partition: dict[int, UUID] = {}
        for n in range(MAX_UPLOADS):
            audio_id = await upload(http, f"speech-{n}.wav", speech[n % len(speech)])
            by_partition.setdefault(partition_of(audio_id), audio_id)
            if len(by_partition) == EVENTS_TOPIC_PARTITIONS:
                break
        assert len(by_partition) == EVENTS_TOPIC_PARTITIONS, sorted(by_partition)
        audios = list(by_partition.values())
        for audio_id in audios:
            started = await http.post(
                f"/commands/audio/{audio_id}/transcribe", json={"language": "en-US"}
            )
            assert started.status_code == 202, started.text

    async with session().client("dynamodb", **client_kwargs(own_settings)) as ddb:
        store = DynamoDBEventStore(ddb, own_settings.event_store_table)

        async def transcripts(audio_id: UUID) -> int:
            events = await store.get_events(AUDIO_FILE, audio_id)
            wanted = TranscriptionCompleted.event_type()
            return sum(e.event_type == wanted for e in events)

        # Kill the first instance as soon as it has recorded one result.
        async def first_result() -> set[str] | None:
            return recorded(first) or None

        await eventually(
            first_result,
            timeout=90,
            interval=0.05,
            what="a result from the first transcriber",
        )
        first.process.kill()
        first.process.wait()
        done_by_first = recorded(first)
        [its_partitions] = [
            share
            for share in shares
            if partition_of(next(iter(done_by_first))) in share
        ]
        left_open = [
            by_partition[p]
            for p in sorted(its_partitions)
            if await transcripts(by_partition[p]) == 0
        ]
        assert left_open, "the killed transcriber had no open request left"
        replacement = stack.start_transcriber()
        await asyncio.to_thread(wait_healthy, [replacement], 120)

        async def all_completed() -> bool | None:
            statuses = [await read_model_status(ddb, own_settings, a) for a in audios]
            assert "failed" not in statuses, statuses
            return True if statuses == ["completed"] * len(audios) else None

        await eventually(
            all_completed, timeout=120, interval=0.25, what="every audio completed"
        )
        # Deliver every request once more, as a redelivery would: each is skipped.
        live = (second, replacement)
        skips_before = sum((logged(t, SKIPPED) for t in live), Counter[str]())
        await publish_again(own_settings, store, audios)

        async def duplicates_skipped() -> bool | None:
            skips = sum((logged(t, SKIPPED) for t in live), Counter[str]())
            more = all(skips[str(a)] > skips_before[str(a)] for a in audios)
            return True if more else None

        await eventually(
            duplicates_skipped, timeout=30, interval=0.1, what="duplicates skipped"
        )
        counts = {str(a): await transcripts(a) for a in audios}
    assert counts == {str(a): 1 for a in audios}
    assert recorded(second), "the second transcriber recorded no result"
    picked_up = recorded(second) | recorded(replacement)
    assert {str(a) for a in left_open} <= picked_up, (left_open, picked_up)


async def assignments(settings: NovaSettings, group: str) -> list[set[int]] | None:
    """The partitions of each member, once two members share every partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [described] = response.groups
    _error, _group, state, _protocol_type, _protocol, members = described
    if state != "Stable" or len(members) != 2:  # assignments are empty meanwhile
        return None
    shares: list[set[int]] = []
    for member in members:
        assignment = ConsumerProtocolMemberAssignment.decode(member[4])
        shares.append(
            {
                tp.partition
                for tp in assignment.partitions()
                if tp.topic == settings.events_topic
            }
        )
    covered = set().union(*shares)
    if all(shares) and covered == set(range(EVENTS_TOPIC_PARTITIONS)):
        return shares
    return None


def partition_of(audio_id: UUID | str) -> int:
    """The partition the relay's producer picks for the audio's key."""
    hashed = int(murmur2(str(audio_id).encode())) & 0x7FFFFFFF
    return hashed % EVENTS_TOPIC_PARTITIONS


async def upload(http: httpx.AsyncClient, name: str, content: bytes) -> UUID:
    created = await http.post(
        "/commands/audio",
        files={"file": (name, content, "audio/wav")},
        data={"title": name, "language": "en-US"},
    )
    assert created.status_code == 201, created.text
    return UUID(created.json()["audio_id"])


async def publish_again(
    settings: NovaSettings, store: DynamoDBEventStore, audios: list[UUID]
) -> None:
    """Each audio's `AudioProcessingStarted` sent to the topic a second time."""
    producer = make_producer(settings)
    await producer.start()
    try:
        for audio_id in audios:
            [started] = [
                e
                for e in await store.get_events(AUDIO_FILE, audio_id)
                if e.event_type == AudioProcessingStarted.event_type()
            ]
            await producer.send_and_wait(
                settings.events_topic,
                message_value(started),
                key=message_key(started),
                headers=message_headers(started),
            )
    finally:
        await producer.stop()


def recorded(transcriber: RunningService) -> set[str]:
    """The audios whose result this instance logged as recorded by command-api."""
    return set(logged(transcriber, "result recorded"))


def logged(transcriber: RunningService, message: str) -> Counter[str]:
    """How many of this instance's log lines say `message`, per audio."""
    done: Counter[str] = Counter()
    try:
        lines = transcriber.log_path.read_text(errors="replace").splitlines()
    except OSError:
        return done
    for line in lines:
        try:
            entry: Any = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("message") == message:
            done[str(entry.get("audio_id"))] += 1
    return done


async def read_model_status(ddb: Any, settings: NovaSettings, audio_id: UUID) -> str:
    found = await ddb.get_item(
        TableName=settings.read_model_table,
        Key={"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}},
        ConsistentRead=True,
    )
    item = found.get("Item")
    return str(item["status"]["S"]) if item else "missing"
