"""Right to erasure end to end: nothing of an erased user stays readable.

command-api, the relay, both projectors, the integration service and query-api
run as processes on this test's own resources, with a one-second key cache.
Alice and Bob each upload audio, get a transcript and subscribe a webhook
(a loopback receiver). Then Alice deletes her account. Once that settled:

- both projections are rebuilt from the event store (both `rebuild`s), and
  Kafka is replayed from its first record into a fresh table and index
  through the consumers' own decoding (`BatchProcessor`);
- nothing of Alice's personal data (titles, file names, transcripts, storage
  keys) is in the raw event-store items, the raw topic, any read-model table,
  any index, the stored webhook deliveries, what the receiver got after the
  erasure, or any API answer; her files are gone from S3, and her webhook
  subscription is deleted with its deliveries once `user.erased` went out;
- Bob's data is intact everywhere, and both users' streams still load.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from opensearchpy import AsyncOpenSearch

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_events import (
    AUDIO_FILE,
    USER,
    AudioCreated,
    TranscriptionCompleted,
    UserErased,
    decode_payload,
)
from nova_platform.auth.dev_token import issue
from nova_platform.aws import client_kwargs, session
from nova_platform.batches import BatchProcessor, to_record
from nova_platform.parking import InMemoryParking
from nova_platform.personal import open_personal_data
from nova_platform.projections import read_pointer
from nova_platform.resources import (
    ensure_all,
    ensure_table,
    read_model_table,
    search_index_body,
)
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.adapters.dynamodb_read_model import DynamoDBReadModel
from nova_projector_readmodel.application.projector import ReadModelProjector
from nova_projector_readmodel.entrypoints.rebuild import rebuild_read_model
from nova_projector_search.adapters.opensearch_index import OpenSearchIndex
from nova_projector_search.application.projector import SearchProjector
from nova_projector_search.entrypoints.rebuild import rebuild_search_index

from ..audio_samples import sine_wav
from ..backends import Backends
from ..conftest import JWT_SECRET
from ..kafka_reader import read_topic
from ..service_processes import RunningService, running_services
from ..waiting import eventually
from ..webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

WANTED = (
    "command-api",
    "relay",
    "projector-readmodel",
    "projector-search",
    "integration",
    "query-api",
)
KEY_TTL_S = 1.0
POINTER_TTL_S = 1.0
EVENTS_PER_AUDIO = 4  # created, started, transcript, completed
TRANSCRIBER = uuid4()


class Person:
    """A user, and the words that must vanish (or stay) with them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.user_id = uuid4()
        mark = uuid4().hex[:10]
        self.title = f"{name}-title-{mark}"
        self.file_name = f"{name}-file-{mark}.wav"
        self.words = f"{name} whispers {mark}"
        self.audios: list[str] = []
        self.subscription = ""

    @property
    def secrets(self) -> list[str]:
        return [
            self.title,
            self.file_name,
            self.words,
            self.words.split()[-1],
            f"audio/{self.user_id}/",
        ]

    def auth(self, scopes: str = "audio:read audio:write") -> dict[str, str]:
        return bearer(self.user_id, scopes)


def bearer(user: UUID, scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(user, scopes, JWT_SECRET)}"}


def holds_none(where: str, text: str, person: Person) -> None:
    for secret in person.secrets:
        assert secret not in text, f"{where} holds {person.name}'s {secret!r}"


def holds_all(where: str, text: str, person: Person) -> None:
    for secret in (person.title, person.words):
        assert secret in text, f"{where} lost {person.name}'s {secret!r}"


@pytest.fixture
async def own_settings(settings: NovaSettings) -> NovaSettings:
    mine = settings.model_copy(
        update={
            "resource_suffix": settings.resource_suffix + "x",
            "projection_pointer_ttl_s": POINTER_TTL_S,
            "key_cache_ttl_s": KEY_TTL_S,
        }
    )
    await ensure_all(mine)
    return mine


@pytest.fixture
def env(own_settings: NovaSettings, backends: Backends) -> dict[str, str]:
    return {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": own_settings.resource_suffix,
        "NOVA_JWT_SECRET": JWT_SECRET,
        "NOVA_KEY_CACHE_TTL_S": str(KEY_TTL_S),
        "NOVA_PROJECTION_POINTER_TTL_S": str(POINTER_TTL_S),
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
        "NOVA_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the receiver is on loopback
        "NOVA_WEBHOOK_BASE_DELAY_S": "0.2",
        "NOVA_WEBHOOK_MAX_DELAY_S": "1",
        "NOVA_WEBHOOK_POLL_INTERVAL_S": "0.5",
    }


@pytest.fixture
def pipeline(
    request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path
) -> Iterator[dict[str, RunningService]]:
    with running_services(request, env, tmp_path, WANTED) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    found = WebhookReceiver()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def ddb(own_settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("dynamodb", **client_kwargs(own_settings)) as client:
        yield client


@pytest.fixture
async def s3(own_settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("s3", **client_kwargs(own_settings)) as client:
        yield client


@pytest.fixture
async def search(own_settings: NovaSettings) -> AsyncIterator[AsyncOpenSearch]:
    client = AsyncOpenSearch(hosts=[own_settings.opensearch_url])
    try:
        yield client
    finally:
        await client.close()


async def transcribed_audio(http: httpx.AsyncClient, base: str, person: Person) -> str:
    created = await http.post(
        f"{base}/commands/audio",
        files={"file": (person.file_name, sine_wav(0.2), "audio/wav")},
        data={"title": person.title, "language": "en-US"},
        headers=person.auth(),
    )
    assert created.status_code == 201, created.text
    audio_id: str = created.json()["audio_id"]
    started = await http.post(
        f"{base}/commands/audio/{audio_id}/transcribe", headers=person.auth()
    )
    assert started.status_code == 202, started.text
    done = await http.post(
        f"{base}/commands/audio/{audio_id}/transcription-result",
        json={
            "outcome": "completed",
            "attempt": 1,
            "text": person.words,
            "confidence": 0.9,
            "language": "en-US",
            "segments": [{"start": 0, "end": 0.2, "text": person.words}],
        },
        headers=bearer(TRANSCRIBER, "service:transcriber"),
    )
    assert done.status_code == 200, done.text
    person.audios.append(audio_id)
    return audio_id


async def scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    request: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = await ddb.scan(**request)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def raw(items: list[dict[str, Any]]) -> str:
    """Items as text, binary attributes (webhook bodies) decoded."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes | bytearray):
            return bytes(value).decode(errors="replace")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return json.dumps([plain(i) for i in items], ensure_ascii=False, default=str)


async def documents(search: AsyncOpenSearch, index: str) -> dict[str, dict[str, Any]]:
    await search.indices.refresh(index=index)
    found = await search.search(
        index=index, body={"query": {"match_all": {}}, "size": 1000}
    )
    return {h["_id"]: h["_source"] for h in found["hits"]["hits"]}


async def test_an_erased_user_leaves_nothing_readable_anywhere(
    pipeline: dict[str, RunningService],
    own_settings: NovaSettings,
    receiver: WebhookReceiver,
    ddb: Any,
    s3: Any,
    search: AsyncOpenSearch,
) -> None:
    settings = own_settings
    command, query = pipeline["command-api"].url, pipeline["query-api"].url
    alice, bob = Person("alice"), Person("bob")
    async with httpx.AsyncClient(timeout=30) as http:
        for person in (alice, bob):
            url = receiver.endpoint(person.name, "")
            answer = await http.post(
                f"{command}/commands/webhooks",
                json={"url": url, "event_types": ["*"]},
                headers=person.auth(),
            )
            assert answer.status_code == 201, answer.text
            person.subscription = answer.json()["subscription_id"]
            receiver.endpoints[person.name].secret = answer.json()["secret"]
        for person in (alice, alice, bob):
            await transcribed_audio(http, command, person)

        # Everything is projected and delivered before the erasure.
        async def all_delivered() -> bool | None:
            for person in (alice, bob):
                got = receiver.endpoints[person.name].accepted
                if len(got) < EVENTS_PER_AUDIO * len(person.audios):
                    return None
            return True

        await eventually(all_delivered, timeout=90, what="every webhook")
        for person in (alice, bob):
            for audio_id in person.audios:
                await eventually(
                    partial(_completed, http, query, audio_id, person),
                    timeout=60,
                    what=f"{person.name}'s audio in the read model",
                )
        received_before = len(receiver.endpoints["alice"].order)

        # Alice deletes her account.
        erased = await http.delete(f"{command}/commands/users/me", headers=alice.auth())
        assert erased.status_code == 200, erased.text
        assert erased.json()["objects_deleted"] == len(alice.audios)
        again = await http.delete(f"{command}/commands/users/me", headers=alice.auth())
        assert again.json()["erased_at"] == erased.json()["erased_at"]

        # The projections and the webhooks honour it.
        async def user_erased_arrived() -> dict[str, Any] | None:
            return next(
                (
                    p
                    for p in receiver.endpoints["alice"].order
                    if p["type"] == "user.erased"
                ),
                None,
            )

        notice = await eventually(user_erased_arrived, timeout=60, what="user.erased")
        assert notice["user_id"] == str(alice.user_id)
        for audio_id in alice.audios:
            await eventually(
                partial(_erased, http, query, audio_id, alice),
                timeout=60,
                what="the read model's erasure",
            )

        async def index_erased() -> bool | None:
            docs = await documents(search, settings.search_alias)
            mine = [docs.get(a, {}) for a in alice.audios]
            return (
                True if all(d.get("personal_data") == "erased" for d in mine) else None
            )

        await eventually(index_erased, timeout=60, what="the index's erasure")

        async def deliveries_purged() -> bool | None:
            stored = raw(await scan(ddb, settings.webhooks_table))
            return None if alice.words in stored else True

        await eventually(deliveries_purged, timeout=60, what="the deliveries' purge")

        # Once user.erased went out, her subscription went with its deliveries.
        async def subscription_deleted() -> bool | None:
            stored = raw(await scan(ddb, settings.webhooks_table))
            return None if alice.subscription in stored else True

        await eventually(subscription_deleted, timeout=60, what="her subscription")
        assert bob.subscription in raw(await scan(ddb, settings.webhooks_table))

        # Later commands for Alice or her audio are refused.
        refused = await http.post(
            f"{command}/commands/audio/{alice.audios[0]}/transcribe",
            headers=alice.auth(),
        )
        assert refused.status_code == 410, refused.text
        assert refused.json()["type"].endswith("/user-erased")

        # Rebuild both projections from the store (readers switch to them).
        old_table = await read_pointer(ddb, settings) or settings.read_model_table
        table_report, index_report = (
            await rebuild_read_model(settings),
            await rebuild_search_index(settings),
        )
        assert table_report.skipped == index_report.skipped == {}
        assert await read_pointer(ddb, settings) == table_report.target

        # Replay Kafka from its first record into a fresh table and index.
        store_items = await scan(ddb, settings.event_store_table)
        records = await read_topic(settings, until=len(store_items))
        assert len(records) == len(store_items)
        replay_table = f"{settings.read_model_table}-replay"
        replay_index = f"{settings.search_alias}-replay"
        await ensure_table(ddb, read_model_table(settings, replay_table))
        await search.indices.create(index=replay_index, body=search_index_body())
        async with AsyncExitStack() as stack:
            # A fresh process's view of the keys: nothing cached.
            personal = await open_personal_data(settings, stack)
            table_projector = ReadModelProjector(DynamoDBReadModel(ddb, replay_table))
            index_projector = SearchProjector(OpenSearchIndex(search, replay_index))

            async def both(envelopes: Any) -> None:
                await table_projector.project(envelopes)
                await index_projector.project(envelopes)

            parking = InMemoryParking()
            replay = BatchProcessor(both, parking, personal=personal)
            await replay.process([to_record(r) for r in records])
            assert parking.dead_letters == []
            assert replay.applied == len(records)

            # Both users' streams still load from the store.
            store = DynamoDBEventStore(
                ddb, settings.event_store_table, personal=personal
            )
            for person in (alice, bob):
                for audio_id in person.audios:
                    stream = await store.get_events(AUDIO_FILE, UUID(audio_id))
                    assert len(stream) == EVENTS_PER_AUDIO
                    assert all(e.erased == (person is alice) for e in stream[::2])
                    events = [decode_payload(e) for e in stream]
                    created, transcript = events[0], events[2]
                    assert isinstance(created, AudioCreated)
                    assert isinstance(transcript, TranscriptionCompleted)
                    assert created.user_id == person.user_id
                    if person is bob:
                        assert (created.title, transcript.text) == (
                            bob.title,
                            bob.words,
                        )
            [erasure] = await store.get_events(USER, alice.user_id)
            assert decode_payload(erasure, UserErased).user_id == alice.user_id

        # Nothing of Alice anywhere; Bob intact.
        topic = "\n".join(r.value.decode(errors="replace") for r in records)
        store_text = raw(store_items)
        holds_none("the event store", store_text, alice)
        holds_none("the topic", topic, alice)
        holds_none("the event store", store_text, bob)  # sealed, both
        tables = {old_table, table_report.target, replay_table}
        for table in tables:
            text = raw(await scan(ddb, table))
            holds_none(f"read model {table}", text, alice)
            holds_all(f"read model {table}", text, bob)
        indices = {*index_report.previous, index_report.target, replay_index}
        for index in indices:
            text = json.dumps(await documents(search, index), ensure_ascii=False)
            holds_none(f"index {index}", text, alice)
            holds_all(f"index {index}", text, bob)
        holds_none(
            "stored deliveries", raw(await scan(ddb, settings.webhooks_table)), alice
        )
        after = receiver.endpoints["alice"].order[received_before:]
        holds_none("webhooks received after the erasure", json.dumps(after), alice)
        # Webhooks carry the transcript, never the title.
        assert bob.words in json.dumps(receiver.endpoints["bob"].order)
        objects = await s3.list_objects_v2(Bucket=settings.audio_bucket)
        keys = [o["Key"] for o in objects.get("Contents", [])]
        assert not [k for k in keys if k.startswith(f"audio/{alice.user_id}/")]
        assert [k for k in keys if k.startswith(f"audio/{bob.user_id}/")]

        # What the APIs answer, after the rebuild too.
        for audio_id in alice.audios:
            await eventually(
                partial(_erased, http, query, audio_id, alice),
                timeout=30,
                what="the rebuilt read model's answer",
            )
            history = await http.get(
                f"{query}/queries/audio/{audio_id}/history", headers=alice.auth()
            )
            assert history.status_code == 200, history.text
            holds_none("history", history.text, alice)
            assert history.json()["events"][0]["personal_data"] == "erased"
        listed = await http.get(f"{query}/queries/audio", headers=alice.auth())
        holds_none("the listing", listed.text, alice)
        found = await http.get(
            f"{query}/queries/search",
            params={"q": alice.words.split()[-1], "all_users": "true"},
            headers=bearer(uuid4(), "admin"),
        )
        assert found.status_code == 200, found.text
        assert found.json()["hits"] == []
        found = await http.get(
            f"{query}/queries/search",
            params={"q": bob.words.split()[-1]},
            headers=bob.auth(),
        )
        assert [h["audio_id"] for h in found.json()["hits"]] == bob.audios
        [bobs] = bob.audios
        answer = await http.get(f"{query}/queries/audio/{bobs}", headers=bob.auth())
        assert (answer.json()["title"], answer.json()["transcription"]) == (
            bob.title,
            bob.words,
        )
        history = await http.get(
            f"{query}/queries/audio/{bobs}/history", headers=bob.auth()
        )
        holds_all("bob's history", history.text, bob)


async def _completed(
    http: httpx.AsyncClient, query: str, audio_id: str, person: Person
) -> bool | None:
    answer = await http.get(f"{query}/queries/audio/{audio_id}", headers=person.auth())
    if answer.status_code != 200 or answer.json()["status"] != "completed":
        return None
    return True if answer.json().get("transcription") == person.words else None


async def _erased(
    http: httpx.AsyncClient, query: str, audio_id: str, person: Person
) -> bool | None:
    answer = await http.get(f"{query}/queries/audio/{audio_id}", headers=person.auth())
    if answer.status_code != 200 or answer.json().get("personal_data") != "erased":
        return None
    holds_none("the audio's answer", answer.text, person)
    return True
