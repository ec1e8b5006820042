"""query-api's adapters against the real DynamoDB API, OpenSearch and Redis.

Items and documents are written with the projectors' own adapters, so these
tests read exactly the shapes the projections write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    AudioDeleted,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    TranscriptionCompleted,
    encode_payload,
)
from nova_platform.auth import Principal
from nova_platform.auth.dev_token import issue
from nova_platform.aws import client_kwargs, session
from nova_platform.cache import audio_fill_key, audio_key
from nova_platform.event_items import to_item
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.adapters.dynamodb_read_model import DynamoDBReadModel
from nova_projector_readmodel.adapters.redis_cache import RedisCacheInvalidator
from nova_projector_readmodel.application.projection import change_for
from nova_projector_search.adapters.opensearch_index import OpenSearchIndex
from nova_projector_search.application.documents import Document, apply_event
from nova_query_api.adapters.dynamodb_read_model import DynamoDBReadModelRepository
from nova_query_api.adapters.opensearch_search import OpenSearchTranscripts
from nova_query_api.adapters.redis_cache import RedisAudioCache
from nova_query_api.application.cursors import CursorCodec
from nova_query_api.application.queries import AudioQueryHandler, AudioReadModel
from nova_query_api.entrypoints.http import create_app
from nova_query_api.settings import QueryApiSettings

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 1, tzinfo=UTC)


def envelope(event: DomainEvent, version: int, at: datetime) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=event.audio_id,
        event_type=event.event_type(),
        schema_version=1,
        version=version,
        occurred_at=at,
        metadata=EventMetadata(correlation_id="query-adapters"),
        data=encode_payload(event),
    )


def created(user: UUID, audio_id: UUID, title: str = "Talk") -> AudioCreated:
    return AudioCreated(
        audio_id=audio_id,
        user_id=user,
        s3_key=f"audio/{user}/{audio_id}.wav",
        title=title,
        language="en-US",
    )


# --- DynamoDB ---------------------------------------------------------------


@pytest.fixture
async def ddb(settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("dynamodb", **client_kwargs(settings)) as client:
        yield client


async def test_listing_pages_over_the_user_index_newest_first(
    settings: NovaSettings, ddb: Any
) -> None:
    writer = DynamoDBReadModel(ddb, settings.read_model_table)
    user, other = uuid4(), uuid4()
    ids: list[UUID] = []
    for n in range(5):
        audio_id = uuid4()
        at = START + timedelta(minutes=n)
        event = created(user, audio_id)
        assert await writer.apply(change_for(envelope(event, 1, at), event))
        ids.append(audio_id)
    # An erased audio in the middle, and another user's audio.
    erased = uuid4()
    erasure: list[DomainEvent] = [created(user, erased), AudioDeleted(audio_id=erased)]
    for version, step in enumerate(erasure, start=1):
        at = START + timedelta(minutes=2, seconds=30 + version)
        await writer.apply(change_for(envelope(step, version, at), step))
    theirs = created(other, uuid4())
    await writer.apply(change_for(envelope(theirs, 1, START), theirs))

    repository = DynamoDBReadModelRepository(ddb, settings.read_model_table)
    seen: list[UUID] = []
    after: dict[str, str] | None = None
    pages = 0
    while True:
        page = await repository.list_by_user(user, 2, after)
        pages += 1
        assert len(page.items) <= 2
        seen.extend(item.audio_id for item in page.items)
        after = page.next_position
        if after is None:
            break

    assert seen == list(reversed(ids))
    assert pages <= 4  # 2 + 2 + 1, and perhaps an empty last page


async def test_listing_through_the_handler_with_signed_cursors(
    settings: NovaSettings, ddb: Any
) -> None:
    writer = DynamoDBReadModel(ddb, settings.read_model_table)
    user = uuid4()
    for n in range(3):
        event = created(user, uuid4())
        at = START + timedelta(hours=n)
        await writer.apply(change_for(envelope(event, 1, at), event))
    handler = AudioQueryHandler(
        DynamoDBReadModelRepository(ddb, settings.read_model_table),
        cursors=CursorCodec(b"integration"),
    )
    caller = Principal(user, frozenset({"audio:read"}))

    first = await handler.list_audio(caller, limit=2)
    assert first.next_cursor is not None
    second = await handler.list_audio(caller, limit=2, cursor=first.next_cursor)

    created_at = [i.created_at for i in first.items + second.items]
    assert len(created_at) == 3
    assert created_at == sorted(created_at, reverse=True)


# --- OpenSearch -------------------------------------------------------------


@pytest.fixture
async def opensearch(settings: NovaSettings) -> AsyncIterator[AsyncOpenSearch]:
    client = AsyncOpenSearch(hosts=[settings.opensearch_url])
    try:
        yield client
    finally:
        await client.close()


async def index_stream(
    index: OpenSearchIndex, events: list[DomainEvent]
) -> tuple[str, Document]:
    doc: Document | None = None
    for version, event in enumerate(events, start=1):
        doc = apply_event(doc, envelope(event, version, START), event)
        await index.write({str(event.audio_id): doc}, {str(event.audio_id): version})
    assert doc is not None
    return str(events[0].audio_id), doc


def transcript(audio_id: UUID, text: str, language: str) -> TranscriptionCompleted:
    return TranscriptionCompleted(
        audio_id=audio_id, text=text, confidence=0.9, language=language
    )


async def test_search_in_japanese_and_english_scoped_and_without_tombstones(
    settings: NovaSettings, opensearch: AsyncOpenSearch
) -> None:
    index = OpenSearchIndex(opensearch, settings.search_alias)
    user, other = uuid4(), uuid4()
    ja, en, gone = uuid4(), uuid4(), uuid4()
    await index_stream(
        index,
        [
            created(user, ja, "会議"),
            transcript(ja, "今日は東京で会議があります。", "ja-JP"),
        ],
    )
    await index_stream(
        index,
        [
            created(user, en, "Foxes"),
            transcript(en, "The quick brown foxes jumped over the lazy dog", "en-US"),
        ],
    )
    await index_stream(
        index,
        [
            created(user, gone),
            transcript(gone, "東京の思い出", "ja-JP"),
            AudioDeleted(audio_id=gone),
        ],
    )
    theirs = uuid4()
    await index_stream(
        index,
        [created(other, theirs), transcript(theirs, "東京タワーに行きました", "ja-JP")],
    )
    await opensearch.indices.refresh(index=settings.search_alias)
    search = OpenSearchTranscripts(opensearch, settings.search_alias)

    japanese = await search.search("東京", user, 10, 0)
    english = await search.search("fox", user, 10, 0)
    everyone = await search.search("東京", None, 100, 0)

    assert [h.source["audio_id"] for h in japanese.hits] == [str(ja)]
    hit = japanese.hits[0]
    assert any("<em>" in s and "東" in s for s in hit.highlights), hit.highlights
    assert hit.source["title"] == "会議"
    assert hit.source["language"] == "ja-JP"
    assert hit.source["confidence"] == pytest.approx(0.9)
    assert hit.score is not None
    assert hit.score > 0
    assert [h.source["audio_id"] for h in english.hits] == [str(en)]
    assert any("<em>foxes</em>" in s for s in english.hits[0].highlights)
    found = {h.source["audio_id"] for h in everyone.hits}
    assert {str(ja), str(theirs)} <= found
    assert str(gone) not in found

    document = await search.document(gone)
    assert document is not None
    assert (document["status"], document["version"]) == ("deleted", 3)
    assert await search.document(uuid4()) is None


async def test_search_text_is_never_query_syntax(
    settings: NovaSettings, opensearch: AsyncOpenSearch
) -> None:
    search = OpenSearchTranscripts(opensearch, settings.search_alias)

    # query_string would reject these; match analyses them as plain text.
    for text in ('title:"x', "a AND (b", "*?/\\", "user_id:*"):
        page = await search.search(text, uuid4(), 5, 0)
        assert page.hits == []


# --- Redis ------------------------------------------------------------------


async def test_cache_round_trips_an_item_with_its_version(
    settings: NovaSettings,
) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        cache = RedisAudioCache(redis, settings, ttl_s=30)
        audio = AudioReadModel(
            audio_id=uuid4(),
            user_id=uuid4(),
            status="pending",
            created_at=START.isoformat(),
            version=4,
        )
        miss = await cache.get(audio.audio_id)
        assert miss.audio is None
        assert miss.fill_token
        assert await cache.put(audio, miss.fill_token)

        assert (await cache.get(audio.audio_id)).audio == audio
        for key in (audio_key, audio_fill_key):
            ttl = await redis.pttl(key(settings, str(audio.audio_id)))
            assert 0 < ttl <= 30_000
    finally:
        await redis.aclose()


def read_model(audio_id: UUID, version: int) -> AudioReadModel:
    return AudioReadModel(
        audio_id=audio_id,
        user_id=uuid4(),
        status="processing" if version < 3 else "completed",
        created_at=START.isoformat(),
        version=version,
    )


async def test_a_copy_read_before_an_invalidation_is_never_stored_after_it(
    settings: NovaSettings,
) -> None:
    redis = Redis.from_url(settings.redis_url)
    cache = RedisAudioCache(redis, settings, ttl_s=30)
    projector = RedisCacheInvalidator(redis, settings)
    audio_id = uuid4()
    try:
        # Two readers miss and read version 1; the projector then commits 2.
        first, second = await cache.get(audio_id), await cache.get(audio_id)
        assert first.fill_token
        assert first.fill_token == second.fill_token
        await projector.invalidate([str(audio_id)])
        refused = await cache.put(read_model(audio_id, 1), first.fill_token)

        after = await cache.get(audio_id)
        assert after.fill_token
        assert after.fill_token != first.fill_token
        stored = await cache.put(read_model(audio_id, 2), after.fill_token)
        older = await cache.put(read_model(audio_id, 1), after.fill_token)
        cached = await cache.get(audio_id)
    finally:
        await redis.aclose()

    assert (refused, stored, older) == (False, True, False)
    assert cached.audio is not None
    assert cached.audio.version == 2


async def test_a_refill_replaces_an_older_copy_but_waits_for_its_token(
    settings: NovaSettings,
) -> None:
    redis = Redis.from_url(settings.redis_url)
    cache = RedisAudioCache(redis, settings, ttl_s=30)
    audio_id = uuid4()
    try:
        miss = await cache.get(audio_id)
        assert miss.fill_token
        await cache.put(read_model(audio_id, 1), miss.fill_token)
        token = await cache.reserve(audio_id)
        refilled = await cache.put(read_model(audio_id, 3), token)
        forged = await cache.put(read_model(audio_id, 4), "not-the-token")
        cached = await cache.get(audio_id)
    finally:
        await redis.aclose()

    assert token == miss.fill_token  # still out: the readers share it
    assert (refilled, forged) == (True, False)
    assert cached.audio is not None
    assert cached.audio.version == 3


class RacingRepository:
    """The real repository, with the projector committing `change` (and
    invalidating the cache) right after the first read took its item."""

    def __init__(
        self,
        inner: DynamoDBReadModelRepository,
        commit: Any,
    ) -> None:
        self._inner = inner
        self._commit = commit
        self.reads = 0

    async def get(self, audio_id: UUID) -> AudioReadModel | None:
        found = await self._inner.get(audio_id)
        self.reads += 1
        if self.reads == 1:
            await self._commit()
        return found

    async def list_by_user(self, *args: Any) -> Any:
        raise AssertionError("not used")


async def test_the_handler_never_caches_an_item_the_projector_changed_meanwhile(
    settings: NovaSettings, ddb: Any
) -> None:
    writer = DynamoDBReadModel(ddb, settings.read_model_table)
    user, audio_id = uuid4(), uuid4()
    first = created(user, audio_id)
    await writer.apply(change_for(envelope(first, 1, START), first))
    redis = Redis.from_url(settings.redis_url)
    invalidator = RedisCacheInvalidator(redis, settings)

    async def projector_commits_version_2() -> None:
        event = transcript(audio_id, "spoken words", "en-US")
        await writer.apply(change_for(envelope(event, 2, START), event))
        await invalidator.invalidate([str(audio_id)])

    repository = RacingRepository(
        DynamoDBReadModelRepository(ddb, settings.read_model_table),
        projector_commits_version_2,
    )
    handler = AudioQueryHandler(
        repository,
        cursors=CursorCodec(b"integration"),
        cache=RedisAudioCache(redis, settings, ttl_s=30),
    )
    caller = Principal(user, frozenset({"audio:read"}))
    try:
        racing = await handler.get_by_id(audio_id, caller)
        cached_meanwhile = await redis.get(audio_key(settings, str(audio_id)))
        after = await handler.get_by_id(audio_id, caller)
        cached = await redis.get(audio_key(settings, str(audio_id)))
    finally:
        await redis.aclose()

    assert racing.version == 1
    assert cached_meanwhile is None
    assert after.version == 2
    assert cached is not None
    assert AudioReadModel.model_validate_json(cached).version == 2


async def test_an_unreachable_redis_degrades_to_direct_reads(
    settings: NovaSettings, ddb: Any
) -> None:
    writer = DynamoDBReadModel(ddb, settings.read_model_table)
    user, audio_id = uuid4(), uuid4()
    event = created(user, audio_id)
    await writer.apply(change_for(envelope(event, 1, START), event))
    unreachable = Redis.from_url(
        "redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    try:
        handler = AudioQueryHandler(
            DynamoDBReadModelRepository(ddb, settings.read_model_table),
            cursors=CursorCodec(b"integration"),
            cache=RedisAudioCache(unreachable, settings, ttl_s=30),
        )
        audio = await handler.get_by_id(
            audio_id, Principal(user, frozenset({"audio:read"}))
        )
    finally:
        await unreachable.aclose()

    assert (audio.audio_id, audio.version) == (audio_id, 1)


# --- the real wiring ----------------------------------------------------------


async def test_every_route_through_the_real_wiring(
    settings: NovaSettings, ddb: Any, opensearch: AsyncOpenSearch
) -> None:
    user, audio_id = uuid4(), uuid4()
    stream: list[DomainEvent] = [
        created(user, audio_id, "Wiring"),
        transcript(audio_id, "the wiring test speaks of lighthouses", "en-US"),
    ]
    writer = DynamoDBReadModel(ddb, settings.read_model_table)
    index = OpenSearchIndex(opensearch, settings.search_alias)
    doc: Document | None = None
    for version, event in enumerate(stream, start=1):
        at = START + timedelta(seconds=version)
        env = envelope(event, version, at)
        await ddb.put_item(TableName=settings.event_store_table, Item=to_item(env))
        await writer.apply(change_for(env, event))
        doc = apply_event(doc, env, event)
        await index.write({str(audio_id): doc}, {str(audio_id): version})
    await opensearch.indices.refresh(index=settings.search_alias)

    app_settings = QueryApiSettings(
        **settings.model_dump(), consistency_wait_s=0.2, cache_ttl_s=30
    )
    app = create_app(app_settings)
    token = issue(user, "audio:read", app_settings.jwt_secret or "")
    headers = {"Authorization": f"Bearer {token}"}
    redis = Redis.from_url(settings.redis_url)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://query"
            ) as http,
        ):
            one = await http.get(f"/queries/audio/{audio_id}", headers=headers)
            cached = await redis.get(audio_key(settings, str(audio_id)))
            listed = await http.get("/queries/audio", headers=headers)
            found = await http.get(
                "/queries/search",
                params={"q": "lighthouse", "after_audio": str(audio_id)},
                headers={**headers, "X-Min-Version": "2"},
            )
            history = await http.get(
                f"/queries/audio/{audio_id}/history", headers=headers
            )
            behind = await http.get(
                f"/queries/audio/{audio_id}?min_version=9", headers=headers
            )
            ready = await http.get("/readyz")
    finally:
        await redis.aclose()

    assert one.status_code == 200, one.text
    assert one.headers["etag"] == '"2"'
    assert cached is not None
    assert AudioReadModel.model_validate_json(cached).version == 2
    assert [i["audio_id"] for i in listed.json()["items"]] == [str(audio_id)]
    assert found.status_code == 200, found.text
    assert [h["audio_id"] for h in found.json()["hits"]] == [str(audio_id)]
    assert "<em>lighthouses</em>" in found.json()["hits"][0]["highlights"][0]
    assert [e["event_type"] for e in history.json()["events"]] == [
        "AudioCreated",
        "TranscriptionCompleted",
    ]
    assert behind.status_code == 503
    assert behind.json()["current_version"] == 2
    assert ready.status_code == 200
