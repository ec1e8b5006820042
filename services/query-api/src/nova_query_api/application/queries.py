"""Queries and the views they return (the seed's section 3.3).

`AudioQueryHandler` knows nothing of HTTP or gRPC: it takes the caller and plain
arguments, talks to its ports (read model, cache, search index, event history)
and raises the `QueryError` subclasses below, which each transport maps to its
own answer (404, 403, 400/422, 503 with `Retry-After`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from nova_events import AUDIO_FILE, EventEnvelope
from nova_events.personal import split_personal
from nova_platform.auth import Principal

from .cursors import CursorCodec, InvalidCursorError

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_QUERY_CHARS = 500
MAX_SEARCH_WINDOW = 10_000
"""OpenSearch's default `max_result_window`: offset + size may not exceed it."""


class SegmentView(BaseModel):
    start: float
    end: float
    text: str
    confidence: float | None = None


class TranscriptionProgress(BaseModel):
    """How far the engine is with the current attempt (while `processing`)."""

    fraction: float
    """`seconds_done / duration_s`, in 0..1: for a progress bar."""
    seconds_done: float
    duration_s: float
    segments_done: int


class AudioReadModel(BaseModel):
    """One audio file as readers see it."""

    model_config = ConfigDict(extra="ignore")

    audio_id: UUID
    user_id: UUID
    s3_key: str | None = None
    title: str | None = None
    file_name: str | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    duration_s: float | None = None
    metadata: dict[str, str] = {}
    status: str
    language: str | None = None
    transcription: str | None = None
    confidence: float | None = None
    segments: list[SegmentView] = []
    failure_reason: str | None = None
    attempts: int = 0
    created_at: str
    updated_at: str | None = None
    completed_at: str | None = None
    version: int
    progress: TranscriptionProgress | None = None
    """Only from get-by-id, only while `processing` (never stored or cached)."""
    personal_data: str | None = None
    """`erased` once the owner was erased: the personal fields are gone."""


class AudioSummary(BaseModel):
    """An audio in a listing: the item without its transcript and segments."""

    model_config = ConfigDict(extra="ignore")

    audio_id: UUID
    user_id: UUID
    title: str | None = None
    file_name: str | None = None
    content_type: str | None = None
    size_bytes: int | None = None
    duration_s: float | None = None
    status: str
    language: str | None = None
    confidence: float | None = None
    failure_reason: str | None = None
    attempts: int = 0
    created_at: str
    updated_at: str | None = None
    completed_at: str | None = None
    version: int
    personal_data: str | None = None
    """`erased` once the owner was erased."""


class AudioPage(BaseModel):
    items: list[AudioSummary]
    next_cursor: str | None = None


class SearchHit(BaseModel):
    audio_id: UUID
    user_id: UUID | None = None
    title: str | None = None
    language: str | None = None
    confidence: float | None = None
    status: str | None = None
    created_at: str | None = None
    version: int
    score: float | None = None
    highlights: list[str] = []


class SearchPage(BaseModel):
    hits: list[SearchHit]
    total: int
    next_cursor: str | None = None


class HistoryEntry(BaseModel):
    event_id: UUID
    event_type: str
    version: int
    occurred_at: str
    schema_version: int
    data: dict[str, Any] | None
    redacted: bool = False
    personal_data: str | None = None
    """`erased` when the owner was erased: `data` holds no personal field."""


class AudioHistory(BaseModel):
    audio_id: UUID
    events: list[HistoryEntry]


# --- errors -----------------------------------------------------------------


class QueryError(Exception):
    """Base of every error a query answers with; the message says what to fix."""


class AudioNotFoundError(QueryError):
    """The audio does not exist, was erased, or is not the caller's."""

    def __init__(self, audio_id: UUID) -> None:
        self.audio_id = audio_id
        super().__init__(f"no audio {audio_id} visible to you")


class QueryForbiddenError(QueryError):
    """The caller may not run this query (e.g. read another user's listing)."""


class InvalidArgumentError(QueryError):
    """An argument is out of range; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class InvalidCursorArgumentError(InvalidArgumentError):
    """The cursor was not issued by this API for this very query."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "cursor",
            f"{reason}; send the `next_cursor` of the previous page of the same "
            "query unchanged, or leave it out to start again",
        )


class NotYetConsistentError(QueryError):
    """The projection has not reached `wanted` yet; ask again shortly."""

    def __init__(
        self, audio_id: UUID, wanted: int, current: int | None, waited_s: float
    ) -> None:
        self.audio_id = audio_id
        self.wanted = wanted
        self.current = current
        super().__init__(
            f"audio {audio_id} is at version {current or 'none yet'} here, not yet "
            f"at {wanted} (waited {waited_s:g}s); retry after a second"
        )


# --- ports ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListPage:
    items: list[AudioReadModel]
    next_position: dict[str, str] | None = None


class ReadModelRepository(Protocol):
    """The read-model table (DynamoDB `nova-audio-read-model`)."""

    async def get(self, audio_id: UUID) -> AudioReadModel | None: ...

    async def list_by_user(
        self, user_id: UUID, limit: int, after: dict[str, str] | None
    ) -> ListPage:
        """Up to `limit` items of `user_id`, newest first, none with status
        `deleted`, starting after `after` (a `next_position` of an earlier page)."""
        ...


@dataclass(frozen=True, slots=True)
class CacheLookup:
    """What the cache holds for one audio."""

    audio: AudioReadModel | None
    fill_token: str | None = None
    """On a miss: what `AudioCache.put` needs to store the item read next."""


class AudioCache(Protocol):
    """A best-effort cache of read-model items; any method may raise.

    A copy is stored only with a fill token taken *before* the read model was
    read, and only if the projector did not invalidate the audio since: an
    item read just before a change is never cached after the change.
    """

    async def get(self, audio_id: UUID) -> CacheLookup:
        """The cached item; on a miss, a fill token."""
        ...

    async def reserve(self, audio_id: UUID) -> str:
        """A fill token, taken before reading the read model."""
        ...

    async def put(self, audio: AudioReadModel, fill_token: str) -> bool:
        """Store `audio` unless its audio was invalidated since `fill_token`
        was taken or the cache holds it at the same or a newer version;
        True when stored."""
        ...


class ProgressSource(Protocol):
    """The transcriber's progress entries (Redis); any method may raise."""

    async def get(self, audio_id: UUID) -> dict[str, Any] | None:
        """The entry (`attempt`, `seconds_done`, `duration_s`, ...), if any."""
        ...


def merge_progress(
    audio: AudioReadModel, entry: dict[str, Any] | None
) -> TranscriptionProgress | None:
    """The progress to show with `audio`: only while it is `processing` and
    only an entry of its current attempt; None for anything malformed."""
    if entry is None or audio.status != "processing":
        return None
    try:
        attempt = entry["attempt"]
        seconds_done = float(entry["seconds_done"])
        duration_s = float(entry["duration_s"])
        segments_done = int(entry.get("segments_done", 0))
    except (KeyError, TypeError, ValueError):
        return None
    if isinstance(attempt, bool) or attempt != audio.attempts or duration_s <= 0:
        return None
    seconds_done = min(max(seconds_done, 0.0), duration_s)
    return TranscriptionProgress(
        fraction=round(seconds_done / duration_s, 4),
        seconds_done=seconds_done,
        duration_s=duration_s,
        segments_done=max(segments_done, 0),
    )


@dataclass(frozen=True, slots=True)
class IndexedHit:
    source: dict[str, Any]
    score: float | None
    highlights: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IndexedPage:
    hits: list[IndexedHit]
    total: int


class SearchIndex(Protocol):
    """The transcript index (OpenSearch alias `audio-transcriptions`)."""

    async def search(
        self, text: str, user_id: UUID | None, limit: int, offset: int
    ) -> IndexedPage:
        """Documents whose transcript matches `text`, best first, of `user_id`
        only (all users when None), never tombstones (status `deleted`)."""
        ...

    async def document(self, audio_id: UUID) -> dict[str, Any] | None:
        """The document of `audio_id` (with `version`) as searches see it
        (after the index refreshed), if indexed."""
        ...


class EventHistory(Protocol):
    """The event store, read per stream (`nova_platform.event_reader`)."""

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]: ...


Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


# --- the handler ------------------------------------------------------------


def _page_size(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidArgumentError(
            "limit", f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        )
    return limit


class AudioQueryHandler:
    """Every read of Nova: by id, per user, full text, and an audio's events.

    `cache`, `search_index` and `history` are optional so a transport can be
    wired with just what it serves; a query whose port is missing raises
    RuntimeError. `sleep` and `clock` are injectable for read-your-writes tests.
    """

    def __init__(
        self,
        repository: ReadModelRepository,
        *,
        cursors: CursorCodec,
        cache: AudioCache | None = None,
        search_index: SearchIndex | None = None,
        history: EventHistory | None = None,
        progress: ProgressSource | None = None,
        consistency_wait_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
    ) -> None:
        self._repository = repository
        self._cursors = cursors
        self._cache = cache
        self._search = search_index
        self._history = history
        self._progress = progress
        self._wait_s = consistency_wait_s
        self._sleep = sleep
        self._clock = clock

    # get by id

    async def get_by_id(
        self, audio_id: UUID, caller: Principal, min_version: int | None = None
    ) -> AudioReadModel:
        """The audio's item, at `min_version` or later when given.

        While it is `processing`, `progress` tells how far the transcriber is
        (when it reported any for the current attempt).

        Raises AudioNotFoundError (missing, erased, or another user's) and
        NotYetConsistentError (still older than `min_version` after the wait).
        """
        audio = await self._get_by_id(audio_id, caller, min_version)
        return await self._with_progress(audio)

    async def _with_progress(self, audio: AudioReadModel) -> AudioReadModel:
        if self._progress is None or audio.status != "processing":
            return audio
        try:
            entry = await self._progress.get(audio.audio_id)
        except Exception as exc:  # noqa: BLE001 - progress is best effort
            logger.warning(
                "progress read failed; answering without it",
                extra={"audio_id": str(audio.audio_id), "error": repr(exc)},
            )
            return audio
        progress = merge_progress(audio, entry)
        if progress is None:
            return audio
        return audio.model_copy(update={"progress": progress})

    async def _get_by_id(
        self, audio_id: UUID, caller: Principal, min_version: int | None
    ) -> AudioReadModel:
        if min_version is not None and min_version < 1:
            raise InvalidArgumentError("min_version", "min_version must be 1 or more")
        lookup = await self._cached(audio_id)
        audio = lookup.audio if lookup else None
        if audio is None:
            audio = await self._direct(audio_id, lookup.fill_token if lookup else None)
        elif min_version and audio.version < min_version:
            audio = await self._refill(audio_id)
        self._check_visible(audio_id, audio, caller)
        if min_version is None or (audio and audio.version >= min_version):
            return self._found(audio_id, audio)

        started = self._clock()
        delay = 0.02
        while self._clock() - started < self._wait_s:
            await self._sleep(min(delay, max(self._wait_s / 10, 0.001)))
            delay = min(delay * 2, 0.2)
            if lookup is None:  # the cache failed: leave it alone
                audio = await self._direct(audio_id, None)
            else:
                audio = await self._refill(audio_id)
            self._check_visible(audio_id, audio, caller)
            if audio is not None and audio.version >= min_version:
                return self._found(audio_id, audio)
        raise NotYetConsistentError(
            audio_id,
            min_version,
            audio.version if audio else None,
            round(self._clock() - started, 3),
        )

    @staticmethod
    def _check_visible(
        audio_id: UUID, audio: AudioReadModel | None, caller: Principal
    ) -> None:
        # Another user's audio answers exactly like a missing one: no enumeration.
        if audio is None:
            return
        if audio.status == "deleted":
            raise AudioNotFoundError(audio_id)
        if audio.user_id != caller.user_id and not caller.is_admin:
            raise AudioNotFoundError(audio_id)

    @staticmethod
    def _found(audio_id: UUID, audio: AudioReadModel | None) -> AudioReadModel:
        if audio is None:
            raise AudioNotFoundError(audio_id)
        return audio

    async def _cached(self, audio_id: UUID) -> CacheLookup | None:
        """The cache's answer; None without a cache or when it failed."""
        if self._cache is None:
            return None
        try:
            return await self._cache.get(audio_id)
        except Exception as exc:  # noqa: BLE001 - the cache is best effort
            logger.warning(
                "cache read failed; reading the read model directly",
                extra={"audio_id": str(audio_id), "error": repr(exc)},
            )
            return None

    async def _refill(self, audio_id: UUID) -> AudioReadModel | None:
        """A direct read that replaces an older cached copy."""
        assert self._cache is not None
        try:
            token: str | None = await self._cache.reserve(audio_id)
        except Exception as exc:  # noqa: BLE001 - the cache is best effort
            logger.warning(
                "cache reservation failed; reading the read model directly",
                extra={"audio_id": str(audio_id), "error": repr(exc)},
            )
            token = None
        return await self._direct(audio_id, token)

    async def _direct(
        self, audio_id: UUID, fill_token: str | None
    ) -> AudioReadModel | None:
        """The read model's item, cached when `fill_token` (taken before this
        read) is given."""
        audio = await self._repository.get(audio_id)
        if audio is not None and self._cache is not None and fill_token is not None:
            try:
                await self._cache.put(audio, fill_token)
            except Exception as exc:  # noqa: BLE001 - the cache is best effort
                logger.warning(
                    "cache write failed; serving the read model's item",
                    extra={"audio_id": str(audio_id), "error": repr(exc)},
                )
        return audio

    # listing

    async def list_audio(
        self,
        caller: Principal,
        user_id: UUID | None = None,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
    ) -> AudioPage:
        """`user_id`'s audios (the caller's by default), newest first.

        Only an admin may list another user's. Erased audios are left out.
        """
        limit = _page_size(limit)
        owner = user_id or caller.user_id
        if owner != caller.user_id and not caller.is_admin:
            raise QueryForbiddenError(
                "you may list only your own audio; leave out `user_id` (listing "
                "another user's needs the `admin` scope)"
            )
        scope = f"list:{owner}"
        after: dict[str, str] | None = None
        if cursor is not None:
            position = self._decode(scope, cursor)
            after = position.get("after")
            if not isinstance(after, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in after.items()
            ):
                raise InvalidCursorArgumentError("the cursor is malformed")
        page = await self._repository.list_by_user(owner, limit, after)
        next_cursor = (
            self._cursors.encode(scope, {"after": page.next_position})
            if page.next_position
            else None
        )
        return AudioPage(
            items=[
                AudioSummary.model_validate(item.model_dump())
                for item in page.items
                if item.status != "deleted"
            ],
            next_cursor=next_cursor,
        )

    # search

    async def search(
        self,
        caller: Principal,
        text: str,
        user_id: UUID | None = None,
        all_users: bool = False,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        after_audio: UUID | None = None,
        min_version: int | None = None,
    ) -> SearchPage:
        """Transcripts matching `text` (analysed, never a query language).

        Scoped to the caller's audio, or `user_id`'s / everyone's for an admin.
        Eventually consistent (the index refreshes about every second) unless
        `after_audio` and `min_version` are given: then it first waits until that
        audio's document is at `min_version` (NotYetConsistentError otherwise).
        """
        if self._search is None:
            raise RuntimeError("this handler was built without a search index")
        limit = _page_size(limit)
        text = text.strip()
        if not 1 <= len(text) <= MAX_QUERY_CHARS:
            raise InvalidArgumentError(
                "q",
                f"the search text must be 1 to {MAX_QUERY_CHARS} characters "
                f"(not counting surrounding spaces), got {len(text)}",
            )
        if (after_audio is None) != (min_version is None):
            raise InvalidArgumentError(
                "min_version",
                "send `after_audio` and `min_version` together (the audio you "
                "changed and the version your command returned), or neither",
            )
        if all_users and user_id is not None:
            raise InvalidArgumentError(
                "all_users", "send either `user_id` or `all_users=true`, not both"
            )
        if (all_users or (user_id and user_id != caller.user_id)) and (
            not caller.is_admin
        ):
            raise QueryForbiddenError(
                "you may search only your own audio; leave out `user_id` and "
                "`all_users` (they need the `admin` scope)"
            )
        scope_user = None if all_users else (user_id or caller.user_id)
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        scope = f"search:{scope_user or '*'}:{digest}"
        offset = 0
        if cursor is not None:
            position = self._decode(scope, cursor)
            offset = position.get("offset", -1)
            if not isinstance(offset, int) or not 0 <= offset < MAX_SEARCH_WINDOW:
                raise InvalidCursorArgumentError("the cursor is malformed")
        limit = min(limit, MAX_SEARCH_WINDOW - offset)
        if after_audio is not None and min_version is not None:
            await self._wait_indexed(after_audio, min_version, caller)
        page = await self._search.search(text, scope_user, limit, offset)
        end = offset + len(page.hits)
        more = end < min(page.total, MAX_SEARCH_WINDOW) and len(page.hits) == limit
        return SearchPage(
            hits=[
                SearchHit.model_validate(
                    {**hit.source, "score": hit.score, "highlights": hit.highlights}
                )
                for hit in page.hits
            ],
            total=page.total,
            next_cursor=self._cursors.encode(scope, {"offset": end}) if more else None,
        )

    async def _wait_indexed(
        self, audio_id: UUID, min_version: int, caller: Principal
    ) -> None:
        assert self._search is not None
        if min_version < 1:
            raise InvalidArgumentError("min_version", "min_version must be 1 or more")
        started = self._clock()
        delay = 0.02
        while True:
            document = await self._search.document(audio_id)
            owner = (document or {}).get("user_id")
            mine = owner is None or owner == str(caller.user_id)
            if not mine and not caller.is_admin:
                raise AudioNotFoundError(audio_id)
            version = int((document or {}).get("version", 0)) or None
            if version is not None and version >= min_version:
                return
            if self._clock() - started >= self._wait_s:
                raise NotYetConsistentError(
                    audio_id, min_version, version, round(self._clock() - started, 3)
                )
            await self._sleep(min(delay, max(self._wait_s / 10, 0.001)))
            delay = min(delay * 2, 0.2)

    # history

    async def history(self, audio_id: UUID, caller: Principal) -> AudioHistory:
        """The audio's events, oldest first, for its owner or an admin.

        After erasure (`AudioDeleted`) the payloads are withheld (`data` is
        null, `redacted` true): they hold what the user said and typed. Once
        the owner was erased, each event's `data` holds only its non-personal
        fields and `personal_data` says `erased`.
        """
        if self._history is None:
            raise RuntimeError("this handler was built without an event history")
        events = await self._history.get_events(AUDIO_FILE, audio_id)
        if not events:
            raise AudioNotFoundError(audio_id)
        ordered = sorted(events, key=lambda e: e.version)
        owner = ordered[0].data.get("user_id")
        if owner != str(caller.user_id) and not caller.is_admin:
            raise AudioNotFoundError(audio_id)
        erased = any(e.event_type == "AudioDeleted" for e in ordered)
        return AudioHistory(
            audio_id=audio_id,
            events=[
                HistoryEntry(
                    event_id=e.event_id,
                    event_type=e.event_type,
                    version=e.version,
                    occurred_at=e.occurred_at.isoformat(),
                    schema_version=e.schema_version,
                    data=None if erased else _shown(e),
                    redacted=erased,
                    personal_data="erased" if e.erased else None,
                )
                for e in ordered
            ],
        )

    def _decode(self, scope: str, cursor: str) -> dict[str, Any]:
        try:
            return self._cursors.decode(scope, cursor)
        except InvalidCursorError as exc:
            raise InvalidCursorArgumentError(str(exc)) from exc


def _shown(envelope: EventEnvelope) -> dict[str, Any]:
    """What history shows of an event's data: all of it, or, once the owner
    was erased, the fields that were never personal."""
    if not envelope.erased:
        return dict(envelope.data)
    public, _ = split_personal(
        envelope.event_type, envelope.schema_version, envelope.data
    )
    return public
