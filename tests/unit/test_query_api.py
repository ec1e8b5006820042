"""The query API through its real wiring, with in-memory fakes of its ports."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from nova_events import AUDIO_FILE, EventEnvelope, EventMetadata
from nova_platform.auth.dev_token import issue
from nova_query_api.adapters.opensearch_search import search_body
from nova_query_api.application.cursors import CursorCodec, InvalidCursorError
from nova_query_api.application.queries import (
    AudioReadModel,
    CacheLookup,
    IndexedHit,
    IndexedPage,
    ListPage,
)
from nova_query_api.entrypoints.http import create_app
from nova_query_api.settings import QueryApiSettings

SECRET = "unit-test-secret-of-at-least-32-bytes"
USER = UUID("11111111-1111-4111-8111-111111111111")
OTHER = UUID("22222222-2222-4222-8222-222222222222")
ADMIN = UUID("33333333-3333-4333-8333-333333333333")


def item(
    user: UUID = USER,
    *,
    version: int = 1,
    status: str = "completed",
    created_at: str = "2026-01-01T00:00:00+00:00",
    audio_id: UUID | None = None,
) -> AudioReadModel:
    return AudioReadModel(
        audio_id=audio_id or uuid4(),
        user_id=user,
        title="Talk",
        status=status,
        transcription="hello world",
        created_at=created_at,
        version=version,
    )


class FakeRepository:
    def __init__(self) -> None:
        self.items: dict[UUID, AudioReadModel] = {}
        self.reads = 0
        self.after_read: list[Callable[[], None]] = []
        """Each runs once, after the next read took its item (a racing write)."""
        self.error: Exception | None = None
        """Raised by every read while set (a failing DynamoDB)."""

    def add(self, audio: AudioReadModel) -> AudioReadModel:
        self.items[audio.audio_id] = audio
        return audio

    async def get(self, audio_id: UUID) -> AudioReadModel | None:
        self.reads += 1
        if self.error is not None:
            raise self.error
        found = self.items.get(audio_id)
        if self.after_read:
            self.after_read.pop(0)()
        return found

    async def list_by_user(
        self, user_id: UUID, limit: int, after: dict[str, str] | None
    ) -> ListPage:
        mine = sorted(
            (a for a in self.items.values() if a.user_id == user_id),
            key=lambda a: (a.created_at, str(a.audio_id)),
            reverse=True,
        )
        if after is not None:
            mark = (after["created_at"], after["audio_id"])
            mine = [a for a in mine if (a.created_at, str(a.audio_id)) < mark]
        live = [a for a in mine if a.status != "deleted"]
        page = live[:limit]
        more = len(live) > limit
        last = page[-1] if page else None
        position = (
            {"created_at": last.created_at, "audio_id": str(last.audio_id)}
            if more and last
            else None
        )
        return ListPage(page, position)


class FakeCache:
    """Redis as `RedisAudioCache` uses it: entries and their fill tokens;
    `invalidate` is what the projector does after it changed an item."""

    def __init__(self) -> None:
        self.entries: dict[UUID, str] = {}
        self.tokens: dict[UUID, str] = {}
        self.refused = 0

    async def get(self, audio_id: UUID) -> CacheLookup:
        raw = self.entries.get(audio_id)
        if raw:
            return CacheLookup(AudioReadModel.model_validate_json(raw))
        return CacheLookup(None, await self.reserve(audio_id))

    async def reserve(self, audio_id: UUID) -> str:
        return self.tokens.setdefault(audio_id, uuid4().hex)

    async def put(self, audio: AudioReadModel, fill_token: str) -> bool:
        cached = self.entries.get(audio.audio_id)
        if self.tokens.get(audio.audio_id) != fill_token or (
            cached
            and AudioReadModel.model_validate_json(cached).version >= audio.version
        ):
            self.refused += 1
            return False
        self.entries[audio.audio_id] = audio.model_dump_json()
        return True

    def invalidate(self, audio_id: UUID) -> None:
        self.entries.pop(audio_id, None)
        self.tokens.pop(audio_id, None)

    def cached_version(self, audio_id: UUID) -> int | None:
        raw = self.entries.get(audio_id)
        return AudioReadModel.model_validate_json(raw).version if raw else None


class FakeProgress:
    """The transcriber's progress entries in Redis."""

    def __init__(self) -> None:
        self.entries: dict[UUID, dict[str, Any]] = {}
        self.fail = False
        self.reads = 0

    async def get(self, audio_id: UUID) -> dict[str, Any] | None:
        self.reads += 1
        if self.fail:
            raise ConnectionError("redis is down")
        return self.entries.get(audio_id)


class BrokenCache:
    def __init__(self) -> None:
        self.calls = 0

    async def get(self, audio_id: UUID) -> CacheLookup:
        self.calls += 1
        raise ConnectionError("redis is down")

    async def reserve(self, audio_id: UUID) -> str:
        self.calls += 1
        raise ConnectionError("redis is down")

    async def put(self, audio: AudioReadModel, fill_token: str) -> bool:
        self.calls += 1
        raise ConnectionError("redis is down")


class FakeSearch:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, UUID | None, int, int]] = []

    def add(self, user: UUID | None, text: str, **extra: Any) -> str:
        audio_id = str(uuid4())
        doc = {"audio_id": audio_id, "transcription": text, "version": 1, **extra}
        if user is not None:
            doc["user_id"] = str(user)
        self.docs[audio_id] = doc
        return audio_id

    async def search(
        self, text: str, user_id: UUID | None, limit: int, offset: int
    ) -> IndexedPage:
        self.calls.append((text, user_id, limit, offset))
        found = sorted(
            (
                d
                for d in self.docs.values()
                if d.get("status") != "deleted"
                and (user_id is None or d.get("user_id") == str(user_id))
                and text.lower() in d.get("transcription", "").lower()
            ),
            key=lambda d: str(d["audio_id"]),
        )
        hits = [
            IndexedHit(
                {k: v for k, v in d.items() if k != "transcription"},
                1.5,
                [f"<em>{text}</em>"],
            )
            for d in found[offset : offset + limit]
        ]
        return IndexedPage(hits, len(found))

    async def document(self, audio_id: UUID) -> dict[str, Any] | None:
        return self.docs.get(str(audio_id))


class FakeHistory:
    def __init__(self) -> None:
        self.streams: dict[UUID, list[EventEnvelope]] = {}

    def append(self, audio_id: UUID, event_type: str, data: dict[str, Any]) -> None:
        stream = self.streams.setdefault(audio_id, [])
        stream.insert(
            0,  # stored newest first, to prove the handler orders them
            EventEnvelope(
                aggregate_type=AUDIO_FILE,
                aggregate_id=audio_id,
                event_type=event_type,
                schema_version=1,
                version=len(stream) + 1,
                metadata=EventMetadata(correlation_id="c-1"),
                data=data,
            ),
        )

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        assert aggregate_type == AUDIO_FILE
        return list(self.streams.get(aggregate_id, []))


class FakeTime:
    """A clock that moves only when the handler sleeps; hooks run on each sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: list[Any] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for hook in self.on_sleep:
            hook()


class World:
    def __init__(self) -> None:
        self.repository = FakeRepository()
        self.cache: FakeCache | BrokenCache = FakeCache()
        self.search = FakeSearch()
        self.history = FakeHistory()
        self.progress = FakeProgress()
        self.time = FakeTime()

    def client(self) -> TestClient:
        app = create_app(
            QueryApiSettings(jwt_secret=SECRET, consistency_wait_s=2.0),
            repository=self.repository,
            search_index=self.search,
            cache=self.cache,
            history=self.history,
            progress=self.progress,
            sleep=self.time.sleep,
            clock=self.time.clock,
        )
        return TestClient(app)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with world.client() as test_client:
        yield test_client


def auth(user: UUID = USER, scopes: str = "audio:read") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(user, scopes, SECRET)}"}


ADMIN_AUTH = {"Authorization": f"Bearer {issue(ADMIN, 'admin', SECRET)}"}


class Answer(Protocol):
    """What these tests read of a TestClient response (httpx's, whichever)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self) -> Any: ...


def problem_type(response: Answer) -> str:
    assert response.headers["content-type"] == "application/problem+json"
    kind: str = response.json()["type"]
    return kind.rsplit("/", 1)[-1]


# --- get by id --------------------------------------------------------------


def test_owner_reads_the_item_with_its_version_as_etag(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item(version=3))

    response = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())

    assert response.status_code == 200
    assert response.json()["audio_id"] == str(audio.audio_id)
    assert response.json()["version"] == 3
    assert response.headers["etag"] == '"3"'


def test_if_none_match_with_the_current_version_is_304(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item(version=2))

    response = client.get(
        f"/queries/audio/{audio.audio_id}",
        headers={**auth(), "If-None-Match": '"2"'},
    )

    assert response.status_code == 304


def test_another_users_erased_or_missing_audio_is_404(
    client: TestClient, world: World
) -> None:
    theirs = world.repository.add(item(OTHER))
    erased = world.repository.add(item(status="deleted", version=5))

    for audio_id in (theirs.audio_id, erased.audio_id, uuid4()):
        response = client.get(f"/queries/audio/{audio_id}", headers=auth())
        assert response.status_code == 404
        assert problem_type(response) == "not-found"


def test_admin_reads_any_users_audio(client: TestClient, world: World) -> None:
    theirs = world.repository.add(item(OTHER))

    response = client.get(f"/queries/audio/{theirs.audio_id}", headers=ADMIN_AUTH)

    assert response.status_code == 200


def test_reading_needs_a_token_with_audio_read(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item())
    path = f"/queries/audio/{audio.audio_id}"

    assert client.get(path).status_code == 401
    forbidden = client.get(path, headers=auth(scopes="audio:write"))
    assert forbidden.status_code == 403
    assert problem_type(forbidden) == "forbidden"


# --- cache ------------------------------------------------------------------


def test_a_second_read_is_served_from_the_cache(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item())
    path = f"/queries/audio/{audio.audio_id}"

    client.get(path, headers=auth())
    client.get(path, headers=auth())

    assert world.repository.reads == 1
    assert isinstance(world.cache, FakeCache)
    assert audio.audio_id in world.cache.entries


def test_a_failing_cache_degrades_to_direct_reads(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.cache = BrokenCache()
    audio = world.repository.add(item())

    with world.client() as client, caplog.at_level(logging.WARNING):
        first = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
        second = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())

    assert (first.status_code, second.status_code) == (200, 200)
    assert world.repository.reads == 2
    assert world.cache.calls == 2  # one failed lookup per read, no write after it
    assert "cache read failed" in caplog.text


def test_an_item_read_just_before_the_projector_changed_it_is_never_cached(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item(version=1, status="processing"))
    changed = audio.model_copy(update={"version": 2, "status": "completed"})
    cache = world.cache
    assert isinstance(cache, FakeCache)

    def projector_writes_and_invalidates() -> None:
        world.repository.add(changed)
        cache.invalidate(audio.audio_id)

    # The miss reads version 1; the projector commits 2 before it is cached.
    world.repository.after_read.append(projector_writes_and_invalidates)
    path = f"/queries/audio/{audio.audio_id}"
    racing = client.get(path, headers=auth())
    after = client.get(path, headers=auth())

    assert racing.json()["version"] == 1  # what that read saw, not stored
    assert cache.refused == 1
    assert after.json()["version"] == 2
    assert cache.cached_version(audio.audio_id) == 2
    assert world.repository.reads == 2


# --- read your writes -------------------------------------------------------


def test_min_version_bypasses_a_stale_cache_entry(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item(version=1))
    path = f"/queries/audio/{audio.audio_id}"
    client.get(path, headers=auth())  # cached at version 1
    world.repository.add(audio.model_copy(update={"version": 2}))

    response = client.get(f"{path}?min_version=2", headers=auth())

    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert world.time.sleeps == []
    assert isinstance(world.cache, FakeCache)
    assert world.cache.cached_version(audio.audio_id) == 2  # refilled


def test_min_version_waits_until_the_projection_catches_up(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item(version=1))

    def project_after_three_sleeps() -> None:
        if len(world.time.sleeps) == 3:
            world.repository.add(audio.model_copy(update={"version": 2}))

    world.time.on_sleep.append(project_after_three_sleeps)

    response = client.get(
        f"/queries/audio/{audio.audio_id}", headers={**auth(), "X-Min-Version": "2"}
    )

    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.headers["etag"] == '"2"'
    assert len(world.time.sleeps) == 3


def test_min_version_never_reached_is_503_not_yet_consistent(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item(version=2))

    response = client.get(
        f"/queries/audio/{audio.audio_id}?min_version=3", headers=auth()
    )

    assert response.status_code == 503
    assert problem_type(response) == "not-yet-consistent"
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert (body["current_version"], body["min_version"]) == (2, 3)
    assert "transcription" not in body
    assert 2.0 <= world.time.now < 2.5


def test_min_version_of_an_audio_not_projected_yet_is_503(
    client: TestClient, world: World
) -> None:
    response = client.get(f"/queries/audio/{uuid4()}?min_version=1", headers=auth())

    assert response.status_code == 503
    assert response.json()["current_version"] is None


def test_min_version_does_not_wait_for_another_users_audio(
    client: TestClient, world: World
) -> None:
    theirs = world.repository.add(item(OTHER, version=1))

    response = client.get(
        f"/queries/audio/{theirs.audio_id}?min_version=5", headers=auth()
    )

    assert response.status_code == 404
    assert world.time.sleeps == []


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("?min_version=0", {}),
        ("", {"X-Min-Version": "x"}),
        ("?min_version=2", {"X-Min-Version": "3"}),
    ],
)
def test_invalid_min_version_is_422(
    client: TestClient, world: World, query: str, headers: dict[str, str]
) -> None:
    audio = world.repository.add(item())

    response = client.get(
        f"/queries/audio/{audio.audio_id}{query}", headers={**auth(), **headers}
    )

    assert response.status_code == 422
    assert problem_type(response) == "invalid-request"


# --- listing ----------------------------------------------------------------


def add_listing(world: World, user: UUID = USER, count: int = 5) -> list[str]:
    """`count` live audios of `user` (newest first) and one erased in between."""
    ids = []
    for n in range(count):
        audio = world.repository.add(
            item(user, created_at=f"2026-01-0{n + 1}T00:00:00+00:00")
        )
        ids.append(str(audio.audio_id))
    world.repository.add(
        item(user, status="deleted", created_at="2026-01-03T12:00:00+00:00")
    )
    return list(reversed(ids))


def test_listing_pages_newest_first_without_erased_audio(
    client: TestClient, world: World
) -> None:
    expected = add_listing(world)
    add_listing(world, OTHER, 2)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        response = client.get("/queries/audio", params=params, headers=auth())
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(i["audio_id"] for i in page["items"])
        assert all("transcription" not in i for i in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == expected
    assert pages == 3


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
def test_listing_page_size_must_be_1_to_100(client: TestClient, limit: str) -> None:
    response = client.get("/queries/audio", params={"limit": limit}, headers=auth())

    assert response.status_code == 422
    assert problem_type(response) == "invalid-request"


def test_listing_defaults_to_twenty(client: TestClient, world: World) -> None:
    for n in range(25):
        world.repository.add(item(created_at=f"2026-01-01T00:00:{n:02d}+00:00"))

    page = client.get("/queries/audio", headers=auth()).json()

    assert len(page["items"]) == 20
    assert page["next_cursor"]


def test_only_an_admin_lists_another_users_audio(
    client: TestClient, world: World
) -> None:
    theirs = add_listing(world, OTHER, 2)

    refused = client.get(
        "/queries/audio", params={"user_id": str(OTHER)}, headers=auth()
    )
    allowed = client.get(
        "/queries/audio", params={"user_id": str(OTHER)}, headers=ADMIN_AUTH
    )

    assert refused.status_code == 403
    assert problem_type(refused) == "forbidden"
    assert [i["audio_id"] for i in allowed.json()["items"]] == theirs


# --- cursors ----------------------------------------------------------------


def first_cursor(client: TestClient, headers: dict[str, str], **params: str) -> str:
    response = client.get(
        "/queries/audio", params={"limit": "1", **params}, headers=headers
    )
    cursor: str = response.json()["next_cursor"]
    assert cursor
    return cursor


def tampered(cursor: str) -> list[str]:
    body, _, signature = cursor.partition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return [
        "garbage",
        "",
        "...",
        "%%%%.****",
        f"{body}.{flipped}",
        f"{body[:-2]}.{signature}",
        body,
        cursor + "x",
    ]


def test_a_tampered_cursor_is_400_invalid_cursor(
    client: TestClient, world: World
) -> None:
    add_listing(world)
    cursor = first_cursor(client, auth())

    for bad in tampered(cursor):
        response = client.get("/queries/audio", params={"cursor": bad}, headers=auth())
        assert response.status_code == 400, bad
        assert problem_type(response) == "invalid-cursor"
        assert "next_cursor" in response.json()["detail"]


@pytest.mark.parametrize(
    ("route", "params"), [("/queries/audio", {}), ("/queries/search", {"q": "hi"})]
)
def test_a_cursor_longer_than_any_issued_is_400_invalid_cursor(
    client: TestClient, route: str, params: dict[str, str]
) -> None:
    response = client.get(
        route, params={**params, "cursor": "x" * 5000}, headers=auth()
    )

    assert response.status_code == 400
    assert problem_type(response) == "invalid-cursor"
    assert (
        "5000 characters, more than any this API issues" in (response.json()["detail"])
    )


def test_another_users_cursor_is_400(client: TestClient, world: World) -> None:
    add_listing(world, OTHER)
    theirs = first_cursor(client, auth(OTHER))

    mine = client.get("/queries/audio", params={"cursor": theirs}, headers=auth())
    # Even an admin cannot move a cursor to another listing.
    admin_own = client.get(
        "/queries/audio", params={"cursor": theirs}, headers=ADMIN_AUTH
    )

    assert mine.status_code == 400
    assert problem_type(mine) == "invalid-cursor"
    assert admin_own.status_code == 400


def test_a_listing_cursor_is_not_a_search_cursor(
    client: TestClient, world: World
) -> None:
    add_listing(world)
    cursor = first_cursor(client, auth())

    response = client.get(
        "/queries/search", params={"q": "hello", "cursor": cursor}, headers=auth()
    )

    assert response.status_code == 400
    assert problem_type(response) == "invalid-cursor"


def test_cursor_codec_round_trips_and_binds_the_scope() -> None:
    codec = CursorCodec(b"key")
    cursor = codec.encode("list:a", {"after": {"pk": "x"}})

    assert codec.decode("list:a", cursor) == {"after": {"pk": "x"}}
    with pytest.raises(InvalidCursorError):
        codec.decode("list:b", cursor)
    with pytest.raises(InvalidCursorError):
        CursorCodec(b"other key").decode("list:a", cursor)


# --- search -----------------------------------------------------------------


def test_search_finds_only_the_callers_transcripts(
    client: TestClient, world: World
) -> None:
    mine = world.search.add(USER, "hello from me", title="Mine", language="en-US")
    world.search.add(OTHER, "hello from them")
    world.search.add(None, "hello", status="deleted")

    response = client.get("/queries/search", params={"q": "hello"}, headers=auth())

    assert response.status_code == 200, response.text
    page = response.json()
    assert [h["audio_id"] for h in page["hits"]] == [mine]
    hit = page["hits"][0]
    assert (hit["title"], hit["language"], hit["score"]) == ("Mine", "en-US", 1.5)
    assert hit["highlights"] == ["<em>hello</em>"]
    assert page["total"] == 1
    assert world.search.calls[-1][1] == USER


def test_admin_searches_one_user_or_everyone(client: TestClient, world: World) -> None:
    world.search.add(USER, "hello one")
    world.search.add(OTHER, "hello two")

    one = client.get(
        "/queries/search",
        params={"q": "hello", "user_id": str(OTHER)},
        headers=ADMIN_AUTH,
    )
    everyone = client.get(
        "/queries/search",
        params={"q": "hello", "all_users": "true"},
        headers=ADMIN_AUTH,
    )

    assert one.json()["total"] == 1
    assert everyone.json()["total"] == 2
    assert world.search.calls[-1][1] is None


@pytest.mark.parametrize("params", [{"all_users": "true"}, {"user_id": str(OTHER)}])
def test_a_user_cannot_search_beyond_their_audio(
    client: TestClient, params: dict[str, str]
) -> None:
    response = client.get(
        "/queries/search", params={"q": "hello", **params}, headers=auth()
    )

    assert response.status_code == 403
    assert problem_type(response) == "forbidden"


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 501},
        {"q": "x", "limit": "0"},
        {"q": "x", "limit": "101"},
        {"q": "x", "after_audio": str(USER)},
        {"q": "x", "min_version": "2"},
    ],
)
def test_invalid_search_parameters_are_422(
    client: TestClient, params: dict[str, str]
) -> None:
    response = client.get("/queries/search", params=params, headers=auth())

    assert response.status_code == 422, response.text
    assert problem_type(response) == "invalid-request"


def test_admin_cannot_send_user_id_and_all_users(client: TestClient) -> None:
    response = client.get(
        "/queries/search",
        params={"q": "x", "user_id": str(OTHER), "all_users": "true"},
        headers=ADMIN_AUTH,
    )

    assert response.status_code == 422


def test_search_pages_with_a_cursor_bound_to_the_query(
    client: TestClient, world: World
) -> None:
    ids = sorted(world.search.add(USER, f"hello {n}") for n in range(5))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"q": "hello", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = client.get("/queries/search", params=params, headers=auth()).json()
        seen.extend(h["audio_id"] for h in page["hits"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    other_query = client.get(
        "/queries/search",
        params={"q": "goodbye", "cursor": first_search_cursor(client)},
        headers=auth(),
    )

    assert seen == ids
    assert other_query.status_code == 400
    assert problem_type(other_query) == "invalid-cursor"


def first_search_cursor(client: TestClient) -> str:
    page = client.get(
        "/queries/search", params={"q": "hello", "limit": "1"}, headers=auth()
    ).json()
    cursor: str = page["next_cursor"]
    return cursor


def test_search_after_a_write_waits_for_that_version(
    client: TestClient, world: World
) -> None:
    audio_id = world.search.add(USER, "hello again")

    def index_version_two() -> None:
        world.search.docs[audio_id]["version"] = 2

    world.time.on_sleep.append(index_version_two)

    response = client.get(
        "/queries/search",
        params={"q": "hello", "after_audio": audio_id, "min_version": "2"},
        headers=auth(),
    )

    assert response.status_code == 200
    assert response.json()["hits"][0]["version"] == 2


def test_search_after_a_write_never_indexed_is_503(
    client: TestClient, world: World
) -> None:
    audio_id = world.search.add(USER, "hello again")

    response = client.get(
        "/queries/search",
        params={"q": "hello", "after_audio": audio_id},
        headers={**auth(), "X-Min-Version": "4"},
    )

    assert response.status_code == 503
    assert problem_type(response) == "not-yet-consistent"
    assert response.headers["retry-after"] == "1"
    assert response.json()["current_version"] == 1


def test_search_body_matches_text_and_never_parses_it() -> None:
    body = search_body('title:x OR "*', USER, 20, 40)

    text = str(body)
    assert "query_string" not in text
    should = body["query"]["bool"]["should"]
    assert {next(iter(s["match"])) for s in should} == {
        "transcription",
        "transcription.cjk",
    }
    assert body["query"]["bool"]["filter"] == [{"term": {"user_id": str(USER)}}]
    assert body["query"]["bool"]["must_not"] == [{"term": {"status": "deleted"}}]
    assert (body["from"], body["size"]) == (40, 20)
    assert search_body("x", None, 1, 0)["query"]["bool"]["filter"] == []


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("fox", ["transcription"]),
        ("quick fox 42", ["transcription"]),
        ("東京", ["transcription.cjk"]),
        ("とうきょう タワー", ["transcription.cjk"]),
        ("서울", ["transcription.cjk"]),
        ("東京 tower", ["transcription", "transcription.cjk"]),
    ],
)
def test_search_highlights_the_field_that_fits_the_script(
    text: str, fields: list[str]
) -> None:
    body = search_body(text, USER, 20, 0)

    assert list(body["highlight"]["fields"]) == fields
    should = body["query"]["bool"]["should"]
    assert len(should) == 2


# --- history ----------------------------------------------------------------


def add_stream(world: World, owner: UUID, *, erased: bool = False) -> UUID:
    audio_id = uuid4()
    world.history.append(
        audio_id, "AudioCreated", {"user_id": str(owner), "title": "T"}
    )
    world.history.append(audio_id, "AudioProcessingStarted", {"attempt": 1})
    if erased:
        world.history.append(audio_id, "AudioDeleted", {"audio_id": str(audio_id)})
    return audio_id


def test_history_lists_the_events_oldest_first(
    client: TestClient, world: World
) -> None:
    audio_id = add_stream(world, USER)

    response = client.get(f"/queries/audio/{audio_id}/history", headers=auth())

    assert response.status_code == 200
    events = response.json()["events"]
    assert [(e["version"], e["event_type"]) for e in events] == [
        (1, "AudioCreated"),
        (2, "AudioProcessingStarted"),
    ]
    assert events[0]["data"]["title"] == "T"
    assert {"event_id", "occurred_at"} <= set(events[0])


def test_history_is_for_the_owner_or_an_admin(client: TestClient, world: World) -> None:
    audio_id = add_stream(world, OTHER)
    path = f"/queries/audio/{audio_id}/history"

    assert client.get(path, headers=auth()).status_code == 404
    assert client.get(path, headers=ADMIN_AUTH).status_code == 200
    assert (
        client.get(f"/queries/audio/{uuid4()}/history", headers=auth()).status_code
        == 404
    )


def test_history_of_an_erased_audio_withholds_the_payloads(
    client: TestClient, world: World
) -> None:
    audio_id = add_stream(world, USER, erased=True)

    events = client.get(f"/queries/audio/{audio_id}/history", headers=auth()).json()[
        "events"
    ]

    assert [e["event_type"] for e in events][-1] == "AudioDeleted"
    assert all(e["data"] is None and e["redacted"] for e in events)


# --- settings ---------------------------------------------------------------


def test_cursor_key_falls_back_to_the_jwt_secret_and_else_says_what_to_set() -> None:
    assert QueryApiSettings(jwt_secret="j").cursor_key() == b"j"
    assert QueryApiSettings(jwt_secret="j", cursor_secret="c").cursor_key() == b"c"
    with pytest.raises(ValueError, match="NOVA_CURSOR_SECRET"):
        QueryApiSettings(
            jwt_jwks_url="https://idp/jwks", jwt_secret=None, cursor_secret=None
        ).cursor_key()


@pytest.mark.parametrize("position", [{"after": "x"}, {"after": {"k": 1}}, {}])
def test_a_signed_cursor_with_a_bad_position_is_still_400(
    client: TestClient, position: dict[str, Any]
) -> None:
    forged = CursorCodec(SECRET.encode()).encode(f"list:{USER}", position)

    response = client.get("/queries/audio", params={"cursor": forged}, headers=auth())

    assert response.status_code == 400
    assert problem_type(response) == "invalid-cursor"


def test_the_openapi_document_lists_every_query(client: TestClient) -> None:
    paths = client.get("/queries/openapi.json").json()["paths"]

    assert {
        "/queries/audio/{audio_id}",
        "/queries/audio",
        "/queries/search",
        "/queries/audio/{audio_id}/history",
    } <= set(paths)


# --- transcription progress ---------------------------------------------------


def processing(attempts: int = 2) -> AudioReadModel:
    return item(status="processing", version=3).model_copy(
        update={"attempts": attempts, "transcription": None}
    )


def progress_entry(attempt: int = 2, seconds_done: float = 3.0) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "seconds_done": seconds_done,
        "duration_s": 12.0,
        "segments_done": 2,
        "updated_at": "2026-01-01T00:00:05Z",
    }


def test_processing_item_shows_the_progress_of_its_attempt(
    world: World, client: TestClient
) -> None:
    audio = world.repository.add(processing())
    world.progress.entries[audio.audio_id] = progress_entry()
    response = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    assert response.status_code == 200
    assert response.json()["progress"] == {
        "fraction": 0.25,
        "seconds_done": 3.0,
        "duration_s": 12.0,
        "segments_done": 2,
    }
    # Progress moves without a new version: no 304 while it is shown.
    again = client.get(
        f"/queries/audio/{audio.audio_id}",
        headers={**auth(), "If-None-Match": response.headers["ETag"]},
    )
    assert again.status_code == 200


@pytest.mark.parametrize(
    ("status", "attempt", "entry_attempt"),
    [
        ("processing", 2, 1),  # an older attempt's entry
        ("processing", 2, 3),  # a newer attempt the read model has not seen
        ("completed", 2, 2),  # finished: progress no longer applies
        ("failed", 2, 2),
        ("pending", 0, 0),
    ],
)
def test_progress_only_while_processing_the_same_attempt(
    world: World, client: TestClient, status: str, attempt: int, entry_attempt: int
) -> None:
    audio = world.repository.add(
        processing(attempt).model_copy(update={"status": status})
    )
    world.progress.entries[audio.audio_id] = progress_entry(entry_attempt)
    response = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    assert response.status_code == 200
    assert response.json()["progress"] is None


def test_no_progress_entry_means_no_progress(world: World, client: TestClient) -> None:
    audio = world.repository.add(processing())
    response = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    assert response.json()["progress"] is None


def test_malformed_progress_is_left_out(world: World, client: TestClient) -> None:
    audio = world.repository.add(processing())
    world.progress.entries[audio.audio_id] = {"attempt": 2, "seconds_done": "x"}
    response = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    assert response.status_code == 200
    assert response.json()["progress"] is None


def test_progress_fraction_is_clamped(world: World, client: TestClient) -> None:
    audio = world.repository.add(processing())
    world.progress.entries[audio.audio_id] = progress_entry(seconds_done=20.0)
    response = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    assert response.json()["progress"]["fraction"] == 1.0


def test_a_redis_error_means_no_progress_not_an_error(
    world: World, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    audio = world.repository.add(processing())
    world.progress.entries[audio.audio_id] = progress_entry()
    world.progress.fail = True
    with caplog.at_level(logging.WARNING):
        response = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    assert response.status_code == 200
    assert response.json()["progress"] is None
    assert "progress read failed" in caplog.text


def test_progress_is_never_cached_with_the_item(
    world: World, client: TestClient
) -> None:
    audio = world.repository.add(processing())
    world.progress.entries[audio.audio_id] = progress_entry()
    client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    del world.progress.entries[audio.audio_id]
    response = client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    assert response.json()["progress"] is None


def test_listing_has_no_progress(world: World, client: TestClient) -> None:
    audio = world.repository.add(processing())
    world.progress.entries[audio.audio_id] = progress_entry()
    response = client.get("/queries/audio", headers=auth())
    assert "progress" not in response.json()["items"][0]
    assert world.progress.reads == 0


def test_metrics_count_reads_by_route_template(
    client: TestClient, world: World
) -> None:
    audio = world.repository.add(item(version=1))
    client.get(f"/queries/audio/{audio.audio_id}", headers=auth())
    client.get(f"/queries/audio/{uuid4()}", headers=auth())

    text = client.get("/metrics").text

    route = "/queries/audio/{audio_id}"
    for status in ("200", "404"):
        labels = f'method="GET",route="{route}",status="{status}"'
        assert f"nova_http_requests_total{{{labels}}} 1.0" in text
    assert str(audio.audio_id) not in text  # ids never become labels
