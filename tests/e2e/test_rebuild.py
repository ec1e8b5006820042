"""Rebuilding both projections while the live services keep running.

The relay, both projectors and query-api run as processes on this test's own
resources. Audios are written to the event store directly; the live projectors
build the read model and the index from Kafka. Then both `rebuild` commands run
(in-process) while more audios are written, and:

- the rebuilt table and index equal the ones they replace, item for item and
  document for document (with `version` and `_version`);
- the pointer and the alias name the new ones, query-api reads from the new
  table, and the live projectors keep writing into it;
- a second rebuild, once all is quiet, equals the live projection entirely.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from opensearchpy import AsyncOpenSearch

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    DomainEvent,
    EventMetadata,
    Segment,
    TranscriptionCompleted,
)
from nova_platform.auth.dev_token import issue
from nova_platform.aws import client_kwargs, session
from nova_platform.projections import ActiveReadModelTable, read_pointer
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.entrypoints.rebuild import rebuild_read_model
from nova_projector_search.entrypoints.rebuild import (
    aliased_indices,
    rebuild_search_index,
)
from nova_query_api.adapters.dynamodb_read_model import DynamoDBReadModelRepository

from ..backends import Backends
from ..conftest import JWT_SECRET
from ..service_processes import BIN, RunningService, running_services
from ..waiting import eventually

pytestmark = pytest.mark.e2e

LIVE = ("relay", "projector-readmodel", "projector-search", "query-api")
POINTER_TTL_S = 1.0
META = EventMetadata(correlation_id="rebuild-test", user_id="u-1")
OWNER = uuid4()

Items = dict[str, dict[str, Any]]
Documents = dict[str, tuple[dict[str, Any], int]]


@pytest.fixture(scope="module")
async def own_settings(settings: NovaSettings) -> NovaSettings:
    """Resources of this module alone: its relay, projectors, table and alias."""
    mine = settings.model_copy(
        update={
            "resource_suffix": settings.resource_suffix + "r",
            "projection_pointer_ttl_s": POINTER_TTL_S,
        }
    )
    await ensure_all(mine)
    return mine


@pytest.fixture(scope="module")
def live_env(own_settings: NovaSettings, backends: Backends) -> dict[str, str]:
    """What this module's processes read: its resources, a short pointer TTL."""
    return {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": own_settings.resource_suffix,
        "NOVA_JWT_SECRET": JWT_SECRET,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
        "NOVA_PROJECTION_POINTER_TTL_S": str(POINTER_TTL_S),
    }


@pytest.fixture(scope="module")
def live(
    request: pytest.FixtureRequest,
    live_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RunningService]]:
    logs = tmp_path_factory.mktemp("rebuild-logs")
    with running_services(request, live_env, logs, LIVE) as running:
        yield running


@pytest.fixture
async def ddb(own_settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("dynamodb", **client_kwargs(own_settings)) as client:
        yield client


@pytest.fixture
async def search(own_settings: NovaSettings) -> AsyncIterator[AsyncOpenSearch]:
    client = AsyncOpenSearch(hosts=[own_settings.opensearch_url])
    try:
        yield client
    finally:
        await client.close()


class Streams:
    """Writes audios' events to the store and remembers each final version."""

    def __init__(self, store: DynamoDBEventStore) -> None:
        self.store = store
        self.versions: dict[UUID, int] = {}

    async def commit(self, audio_id: UUID, *events: DomainEvent) -> None:
        version = self.versions.get(audio_id, 0)
        await self.store.append_events(AUDIO_FILE, audio_id, events, version, META)
        self.versions[audio_id] = version + len(events)

    async def created(self, title: str) -> UUID:
        audio_id = uuid4()
        await self.commit(
            audio_id,
            AudioCreated(
                audio_id=audio_id,
                user_id=OWNER,
                s3_key=f"audio/{OWNER}/{audio_id}.wav",
                title=title,
                file_name=f"{title}.wav",
                content_type="audio/wav",
                size_bytes=32044,
                duration_s=1.0,
                language="en-US",
            ),
        )
        return audio_id

    async def transcribed(self, audio_id: UUID, text: str, language: str) -> None:
        await self.commit(
            audio_id, AudioProcessingStarted(audio_id=audio_id, language=language)
        )
        await self.commit(
            audio_id,
            TranscriptionCompleted(
                audio_id=audio_id,
                text=text,
                confidence=0.93,
                language=language,
                segments=(Segment(start=0.0, end=0.5, text=text, confidence=0.93),),
            ),
            AudioProcessingCompleted(audio_id=audio_id),
        )


async def write_first_audios(streams: Streams) -> dict[str, UUID]:
    done = await streams.created("Meeting")
    await streams.transcribed(done, "hello rebuilt world", "en-US")
    japanese = await streams.created("会議")
    await streams.transcribed(japanese, "音声認識のテスト", "ja-JP")
    processing = await streams.created("Pending")
    await streams.commit(processing, AudioProcessingStarted(audio_id=processing))
    failed = await streams.created("Broken")
    await streams.commit(failed, AudioProcessingStarted(audio_id=failed))
    await streams.commit(
        failed,
        AudioProcessingFailed(audio_id=failed, reason="decoder", retryable=False),
    )
    erased = await streams.created("Erased")
    await streams.transcribed(erased, "secret words", "en-US")
    await streams.commit(erased, AudioDeleted(audio_id=erased))
    return {"japanese": japanese, "processing": processing}


async def scan_table(ddb: Any, table: str) -> Items:
    items: Items = {}
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = await ddb.scan(**request)
        items.update({item["pk"]["S"]: item for item in page.get("Items", [])})
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


async def all_documents(search: AsyncOpenSearch, index: str) -> Documents:
    await search.indices.refresh(index=index)
    found = await search.search(
        index=index, body={"query": {"match_all": {}}, "size": 10_000, "version": True}
    )
    return {h["_id"]: (h["_source"], h["_version"]) for h in found["hits"]["hits"]}


async def settled(
    ddb: Any,
    search: AsyncOpenSearch,
    table: str,
    index: str,
    versions: dict[UUID, int],
) -> None:
    """Wait until `table` and `index` hold every audio at its final version."""

    async def probe() -> bool | None:
        items = await scan_table(ddb, table)
        docs = await all_documents(search, index)
        for audio_id, version in versions.items():
            item = items.get(f"AUDIO#{audio_id}")
            # moto applies an update's attributes one by one, so a scan can
            # see an item half written, without its version yet.
            if item is None or int(item.get("version", {}).get("N", -1)) != version:
                return None
            doc = docs.get(str(audio_id))
            if doc is None or doc[1] != version:
                return None
        return True

    await eventually(probe, timeout=60, interval=0.2, what=f"{table} and {index}")


def only(items: dict[str, Any], audio_ids: set[UUID], prefix: str = "") -> Any:
    return {k: v for k, v in items.items() if UUID(k.removeprefix(prefix)) in audio_ids}


async def test_rebuilt_projections_equal_the_live_ones(
    live: dict[str, RunningService],
    live_env: dict[str, str],
    own_settings: NovaSettings,
    ddb: Any,
    search: AsyncOpenSearch,
) -> None:
    settings = own_settings
    streams = Streams(DynamoDBEventStore(ddb, settings.event_store_table))
    [old_index] = await aliased_indices(search, settings.search_alias)
    old_table = settings.read_model_table

    named = await write_first_audios(streams)
    first = set(streams.versions)
    await settled(ddb, search, old_table, old_index, streams.versions)

    # Rebuild both while audios keep arriving.
    writing = True

    async def keep_writing() -> None:
        while writing:
            audio_id = await streams.created("During")
            await streams.transcribed(audio_id, "written during the rebuild", "en-US")
            await asyncio.sleep(0.1)

    writer = asyncio.create_task(keep_writing())
    try:
        table_report, index_report = await asyncio.gather(
            rebuild_read_model(settings), rebuild_search_index(settings)
        )
    finally:
        writing = False
        await writer
    assert len(streams.versions) > len(first), "nothing was written during it"
    new_table, new_index = table_report.target, index_report.target
    assert table_report.skipped == index_report.skipped == {}
    # Audios kept arriving through the grace period: the topic was followed.
    assert table_report.from_topic > 0
    assert index_report.from_topic > 0
    assert table_report.from_store >= sum(streams.versions[a] for a in first)

    # Readers are switched.
    assert await read_pointer(ddb, settings) == new_table
    assert await aliased_indices(search, settings.search_alias) == [new_index]
    assert table_report.previous == [old_table]
    assert index_report.previous == [old_index]

    # What existed before the rebuild is the same in the old and the new.
    old_items, new_items = (
        await scan_table(ddb, old_table),
        await scan_table(ddb, new_table),
    )
    assert only(new_items, first, "AUDIO#") == only(old_items, first, "AUDIO#")
    assert len(only(new_items, first, "AUDIO#")) == len(first)
    old_docs = await all_documents(search, old_index)
    new_docs = await all_documents(search, new_index)
    assert only(new_docs, first) == only(old_docs, first)
    assert len(only(new_docs, first)) == len(first)

    # Everything written during the rebuild reached the new ones.
    await settled(ddb, search, new_table, new_index, streams.versions)

    # The live projectors write into the new ones, and query-api reads them.
    japanese, processing = named["japanese"], named["processing"]
    await streams.commit(
        processing,
        AudioProcessingFailed(audio_id=processing, reason="timeout", retryable=True),
    )
    await settled(ddb, search, new_table, new_index, streams.versions)
    resolver = ActiveReadModelTable(ddb, settings)
    assert await resolver.table_name() == new_table
    repository = DynamoDBReadModelRepository(ddb, resolver)
    audio = await repository.get(processing)
    assert audio is not None
    assert (audio.status, audio.version) == ("failed", streams.versions[processing])

    token = issue(OWNER, "audio:read", JWT_SECRET)
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(
            f"{live['query-api'].url}/queries/audio/{japanese}",
            headers={"Authorization": f"Bearer {token}"},
        )
        ready = await http.get(f"{live['query-api'].url}/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json()["transcription"] == "音声認識のテスト"
    assert ready.status_code == 200

    # Once all is quiet, the commands rebuild what equals the live projection.
    second_table, second_index = await asyncio.gather(
        run_command("nova-projector-readmodel", live_env),
        run_command("nova-projector-search", live_env),
    )
    assert second_table.startswith(f"{settings.read_model_table}-r")
    assert second_index.startswith(f"{settings.search_alias}-r")
    assert await scan_table(ddb, second_table) == await scan_table(ddb, new_table)
    rebuilt_docs = await all_documents(search, second_index)
    assert rebuilt_docs == await all_documents(search, new_index)
    assert len(rebuilt_docs) == len(streams.versions)
    assert await read_pointer(ddb, settings) == second_table
    assert await aliased_indices(search, settings.search_alias) == [second_index]


async def run_command(command: str, env: dict[str, str]) -> str:
    """Run `<command> rebuild`; returns the first line it prints (the new name)."""
    process = await asyncio.create_subprocess_exec(
        str(BIN / command),
        "rebuild",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()[-3000:]
    lines = out.decode().splitlines()
    assert any("no longer used" in line for line in lines), lines
    return lines[0]
