"""query-api's gRPC transport through its real wiring, with in-memory fakes.

Each test starts `create_app(..., grpc=True)`'s lifespan, which serves
`nova.query.v1.QueryService` on an ephemeral 127.0.0.1 port, and calls it over a
real `grpc.aio` channel; the REST side of the same app is reached in process
(httpx's ASGITransport), so the parity tests read one set of fakes both ways.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import grpc
import httpx
import pytest
from fastapi import FastAPI
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]
from grpc_reflection.v1alpha import (  # type: ignore[import-untyped]
    reflection_pb2,
    reflection_pb2_grpc,
)
from pydantic import BaseModel

from nova_events import AudioCreated, AudioProcessingStarted
from nova_platform.auth import TokenVerifier
from nova_platform.auth.dev_token import issue
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper
from nova_query_api.application.cursors import CursorCodec
from nova_query_api.application.queries import (
    AudioHistory,
    AudioPage,
    AudioReadModel,
    AudioSummary,
    HistoryEntry,
    SearchHit,
    SearchPage,
    SegmentView,
    TranscriptionProgress,
)
from nova_query_api.entrypoints.grpc_server import SERVICE_NAME, start_grpc_server
from nova_query_api.entrypoints.http import create_app
from nova_query_api.grpc_gen import query_pb2, query_pb2_grpc
from nova_query_api.settings import QueryApiSettings

from .test_query_api import (
    ADMIN,
    OTHER,
    SECRET,
    USER,
    World,
    add_listing,
    add_stream,
    item,
    tampered,
)
from .test_query_erasure import envelope

Metadata = tuple[tuple[str, str], ...]


def bearer(user: UUID = USER, scopes: str = "audio:read") -> Metadata:
    return (("authorization", f"Bearer {issue(user, scopes, SECRET)}"),)


ADMIN_META = bearer(ADMIN, "admin")


@dataclass
class Both:
    """One app, reached over gRPC (`stub`) and over REST (`http`)."""

    world: World
    app: FastAPI
    stub: query_pb2_grpc.QueryServiceAsyncStub
    channel: grpc.aio.Channel
    http: httpx.AsyncClient


@pytest.fixture
async def both() -> AsyncIterator[Both]:
    world = World()
    app = create_app(
        QueryApiSettings(
            jwt_secret=SECRET,
            consistency_wait_s=2.0,
            http_host="127.0.0.1",
            grpc_port=0,
        ),
        repository=world.repository,
        search_index=world.search,
        cache=world.cache,
        history=world.history,
        progress=world.progress,
        sleep=world.time.sleep,
        clock=world.time.clock,
        grpc=True,
    )
    async with app.router.lifespan_context(app):
        port: int = app.state.grpc_port
        assert port > 0
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test"
            ) as http,
        ):
            stub = query_pb2_grpc.QueryServiceStub(channel)
            yield Both(world, app, stub, channel, http)


async def status_of(call: Any) -> grpc.aio.AioRpcError:
    """The error `call` (an awaitable RPC) ends with."""
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


def trailers(error: grpc.aio.AioRpcError) -> dict[str, str]:
    return {k: str(v) for k, v in error.trailing_metadata() or ()}


def as_json(message: Message) -> dict[str, Any]:
    """What a JSON client (grpcurl) sees: every field without presence, the
    optional ones only when set."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


# --- each RPC ---------------------------------------------------------------


async def test_get_audio_returns_the_item(both: Both) -> None:
    audio = both.world.repository.add(item(version=3))

    answer = await both.stub.GetAudio(
        query_pb2.GetAudioRequest(audio_id=str(audio.audio_id)), metadata=bearer()
    )

    assert answer.audio_id == str(audio.audio_id)
    assert answer.user_id == str(USER)
    assert (answer.version, answer.status, answer.title) == (3, "completed", "Talk")
    assert answer.transcription == "hello world"
    assert not answer.HasField("duration_s")


async def test_get_audio_with_min_version_waits_for_the_projection(
    both: Both,
) -> None:
    audio = both.world.repository.add(item(version=1))

    def project() -> None:
        both.world.repository.add(audio.model_copy(update={"version": 2}))

    both.world.time.on_sleep.append(project)

    answer = await both.stub.GetAudio(
        query_pb2.GetAudioRequest(audio_id=str(audio.audio_id), min_version=2),
        metadata=bearer(),
    )

    assert answer.version == 2


async def test_list_audio_pages_newest_first(both: Both) -> None:
    expected = add_listing(both.world)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = await both.stub.ListAudio(
            query_pb2.ListAudioRequest(limit=2, cursor=cursor), metadata=bearer()
        )
        seen.extend(i.audio_id for i in page.items)
        if not page.HasField("next_cursor"):
            break
        cursor = page.next_cursor

    assert seen == expected


async def test_list_audio_defaults_to_twenty(both: Both) -> None:
    for n in range(25):
        both.world.repository.add(item(created_at=f"2026-01-01T00:00:{n:02d}+00:00"))

    page = await both.stub.ListAudio(query_pb2.ListAudioRequest(), metadata=bearer())

    assert len(page.items) == 20


async def test_search_finds_the_callers_transcripts_and_pages(both: Both) -> None:
    ids = sorted(both.world.search.add(USER, f"hello {n}") for n in range(3))
    both.world.search.add(OTHER, "hello from them")

    first = await both.stub.SearchTranscriptions(
        query_pb2.SearchTranscriptionsRequest(q="hello", limit=2), metadata=bearer()
    )
    second = await both.stub.SearchTranscriptions(
        query_pb2.SearchTranscriptionsRequest(
            q="hello", limit=2, cursor=first.next_cursor
        ),
        metadata=bearer(),
    )

    assert [h.audio_id for h in [*first.hits, *second.hits]] == ids
    assert first.total == 3
    assert list(first.hits[0].highlights) == ["<em>hello</em>"]
    assert not second.HasField("next_cursor")


async def test_get_history_lists_events_and_withholds_erased_payloads(
    both: Both,
) -> None:
    live = add_stream(both.world, USER)
    erased = add_stream(both.world, USER, erased=True)

    events = (
        await both.stub.GetHistory(
            query_pb2.GetHistoryRequest(audio_id=str(live)), metadata=bearer()
        )
    ).events
    withheld = (
        await both.stub.GetHistory(
            query_pb2.GetHistoryRequest(audio_id=str(erased)), metadata=bearer()
        )
    ).events

    assert [(e.version, e.event_type) for e in events] == [
        (1, "AudioCreated"),
        (2, "AudioProcessingStarted"),
    ]
    assert json_format.MessageToDict(events[0].data)["title"] == "T"
    assert all(e.redacted and not e.HasField("data") for e in withheld)


# --- errors -----------------------------------------------------------------


async def test_missing_erased_or_another_users_audio_is_not_found(
    both: Both,
) -> None:
    theirs = both.world.repository.add(item(OTHER))
    erased = both.world.repository.add(item(status="deleted", version=5))

    for audio_id in (theirs.audio_id, erased.audio_id, uuid4()):
        error = await status_of(
            both.stub.GetAudio(
                query_pb2.GetAudioRequest(audio_id=str(audio_id)), metadata=bearer()
            )
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert trailers(error)["nova-problem-type"] == "not-found"
    history = await status_of(
        both.stub.GetHistory(
            query_pb2.GetHistoryRequest(audio_id=str(uuid4())), metadata=bearer()
        )
    )
    assert history.code() == grpc.StatusCode.NOT_FOUND


async def test_an_admin_reads_any_users_audio(both: Both) -> None:
    theirs = both.world.repository.add(item(OTHER))

    answer = await both.stub.GetAudio(
        query_pb2.GetAudioRequest(audio_id=str(theirs.audio_id)), metadata=ADMIN_META
    )

    assert answer.user_id == str(OTHER)


@pytest.mark.parametrize(
    "metadata",
    [
        (),
        (("authorization", "Bearer not-a-jwt"),),
        (("authorization", f"Basic {issue(USER, 'audio:read', SECRET)}"),),
        (("authorization", f"Bearer {issue(USER, 'audio:read', 'x' * 64)}"),),
    ],
    ids=["missing", "garbage", "not-bearer", "wrong-key"],
)
async def test_a_missing_or_invalid_token_is_unauthenticated(
    both: Both, metadata: Metadata
) -> None:
    audio = both.world.repository.add(item())

    error = await status_of(
        both.stub.GetAudio(
            query_pb2.GetAudioRequest(audio_id=str(audio.audio_id)), metadata=metadata
        )
    )

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details()


async def test_a_token_without_audio_read_or_another_users_listing_is_denied(
    both: Both,
) -> None:
    audio = both.world.repository.add(item())

    no_scope = await status_of(
        both.stub.GetAudio(
            query_pb2.GetAudioRequest(audio_id=str(audio.audio_id)),
            metadata=bearer(scopes="audio:write"),
        )
    )
    listing = await status_of(
        both.stub.ListAudio(
            query_pb2.ListAudioRequest(user_id=str(OTHER)), metadata=bearer()
        )
    )
    search = await status_of(
        both.stub.SearchTranscriptions(
            query_pb2.SearchTranscriptionsRequest(q="x", all_users=True),
            metadata=bearer(),
        )
    )

    assert no_scope.code() == grpc.StatusCode.PERMISSION_DENIED
    assert listing.code() == grpc.StatusCode.PERMISSION_DENIED
    assert trailers(listing)["nova-problem-type"] == "forbidden"
    assert search.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("rpc", "request_", "field"),
    [
        ("GetAudio", query_pb2.GetAudioRequest(audio_id="nope"), "audio_id"),
        (
            "GetAudio",
            query_pb2.GetAudioRequest(audio_id=str(USER), min_version=0),
            "min_version",
        ),
        ("GetHistory", query_pb2.GetHistoryRequest(audio_id=""), "audio_id"),
        ("ListAudio", query_pb2.ListAudioRequest(limit=0), "limit"),
        ("ListAudio", query_pb2.ListAudioRequest(limit=101), "limit"),
        ("ListAudio", query_pb2.ListAudioRequest(user_id="me"), "user_id"),
        ("SearchTranscriptions", query_pb2.SearchTranscriptionsRequest(), "q"),
        (
            "SearchTranscriptions",
            query_pb2.SearchTranscriptionsRequest(q="   "),
            "q",
        ),
        (
            "SearchTranscriptions",
            query_pb2.SearchTranscriptionsRequest(q="x" * 501),
            "q",
        ),
        (
            "SearchTranscriptions",
            query_pb2.SearchTranscriptionsRequest(q=" " * 499 + "xx"),
            "q",
        ),
        (
            "SearchTranscriptions",
            query_pb2.SearchTranscriptionsRequest(q="x", limit=101),
            "limit",
        ),
        (
            "SearchTranscriptions",
            query_pb2.SearchTranscriptionsRequest(q="x", after_audio=str(USER)),
            "min_version",
        ),
        (
            "SearchTranscriptions",
            query_pb2.SearchTranscriptionsRequest(
                q="x", after_audio="?", min_version=1
            ),
            "after_audio",
        ),
    ],
)
async def test_invalid_arguments_are_invalid_argument(
    both: Both, rpc: str, request_: Message, field: str
) -> None:
    error = await status_of(getattr(both.stub, rpc)(request_, metadata=bearer()))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert trailers(error)["nova-problem-type"] == "invalid-request"
    assert trailers(error)["nova-field"] == field
    assert f"`{field}`" in (error.details() or "")


async def test_a_forged_or_foreign_cursor_is_invalid_argument_never_internal(
    both: Both,
) -> None:
    add_listing(both.world)
    add_listing(both.world, OTHER)
    cursor = (
        await both.stub.ListAudio(
            query_pb2.ListAudioRequest(limit=1), metadata=bearer()
        )
    ).next_cursor
    theirs = (
        await both.stub.ListAudio(
            query_pb2.ListAudioRequest(limit=1), metadata=bearer(OTHER)
        )
    ).next_cursor
    signed_but_bad = CursorCodec(SECRET.encode()).encode(f"list:{USER}", {"after": 1})

    for bad in [*tampered(cursor), theirs, signed_but_bad, "x" * 5000]:
        error = await status_of(
            both.stub.ListAudio(
                query_pb2.ListAudioRequest(cursor=bad), metadata=bearer()
            )
        )
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert trailers(error)["nova-problem-type"] == "invalid-cursor"
        assert "next_cursor" in (error.details() or "")
    as_search = await status_of(
        both.stub.SearchTranscriptions(
            query_pb2.SearchTranscriptionsRequest(q="hello", cursor=cursor),
            metadata=bearer(),
        )
    )
    assert as_search.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_not_yet_consistent_is_unavailable_with_the_current_version(
    both: Both,
) -> None:
    audio = both.world.repository.add(item(version=2))
    indexed = both.world.search.add(USER, "hello")

    error = await status_of(
        both.stub.GetAudio(
            query_pb2.GetAudioRequest(audio_id=str(audio.audio_id), min_version=3),
            metadata=bearer(),
        )
    )
    search = await status_of(
        both.stub.SearchTranscriptions(
            query_pb2.SearchTranscriptionsRequest(
                q="hello", after_audio=indexed, min_version=4
            ),
            metadata=bearer(),
        )
    )
    never = await status_of(
        both.stub.GetAudio(
            query_pb2.GetAudioRequest(audio_id=str(uuid4()), min_version=1),
            metadata=bearer(),
        )
    )

    assert error.code() == grpc.StatusCode.UNAVAILABLE
    meta = trailers(error)
    assert meta["nova-problem-type"] == "not-yet-consistent"
    assert (meta["nova-current-version"], meta["nova-min-version"]) == ("2", "3")
    assert meta["retry-after"] == "1"
    assert search.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers(search)["nova-current-version"] == "1"
    assert never.code() == grpc.StatusCode.UNAVAILABLE
    assert "nova-current-version" not in trailers(never)


async def test_a_request_larger_than_the_limit_is_refused(both: Both) -> None:
    error = await status_of(
        both.stub.SearchTranscriptions(
            query_pb2.SearchTranscriptionsRequest(q="x" * 100_000), metadata=bearer()
        )
    )

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize(
    ("error", "code", "problem"),
    [
        (
            RuntimeError("table arn:aws:dynamodb:eu-west-1:123:table/x is broken"),
            grpc.StatusCode.INTERNAL,
            "internal",
        ),
        (
            ConnectionError("dynamodb.eu-west-1.amazonaws.com:443 refused"),
            grpc.StatusCode.UNAVAILABLE,
            "not-ready",
        ),
    ],
    ids=["a-bug", "a-transient-outage"],
)
async def test_an_unexpected_error_is_logged_and_answered_without_its_text(
    both: Both,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    code: grpc.StatusCode,
    problem: str,
) -> None:
    both.world.repository.error = error

    with caplog.at_level(logging.WARNING):
        failure = await status_of(
            both.stub.GetAudio(
                query_pb2.GetAudioRequest(audio_id=str(uuid4())),
                metadata=(*bearer(), ("x-correlation-id", "c-77")),
            )
        )

    assert failure.code() == code
    details = failure.details() or ""
    assert str(error) not in details
    assert "retry" in details
    meta = trailers(failure)
    assert (meta["nova-problem-type"], meta["x-correlation-id"]) == (problem, "c-77")
    if code == grpc.StatusCode.INTERNAL:
        assert "c-77" in details  # something to quote to support
    else:
        assert meta["retry-after"] == "1"
    [logged] = [r for r in caplog.records if r.getMessage() == "query failed"]
    fields = vars(logged)
    assert (fields["correlation_id"], fields["rpc"]) == ("c-77", "GetAudio")
    if code == grpc.StatusCode.INTERNAL:
        assert logged.exc_info is not None
        assert logged.exc_info[1] is error
    else:  # an outage is a warning with the error, not a traceback per call
        assert str(error) in fields["error"]


async def test_the_correlation_id_comes_back_in_the_trailers(both: Both) -> None:
    error = await status_of(
        both.stub.GetAudio(
            query_pb2.GetAudioRequest(audio_id=str(uuid4())),
            metadata=(*bearer(), ("x-correlation-id", "c-42")),
        )
    )

    assert trailers(error)["x-correlation-id"] == "c-42"


# --- health and reflection --------------------------------------------------


async def test_health_is_serving_for_the_server_and_the_service(both: Both) -> None:
    health = health_pb2_grpc.HealthStub(both.channel)

    for service in ("", SERVICE_NAME):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


class Readiness:
    """The read model's readiness check: raises while `down`, hangs while
    `hung`; while `losing`, hangs until cancelled and then returns normally,
    as a call bounded by `asyncio.wait_for` can on Python 3.11."""

    def __init__(self) -> None:
        self.down = False
        self.hung = False
        self.losing = False
        self.checks = 0
        self.hanging = asyncio.Event()
        self.lost = 0

    async def __call__(self) -> None:
        self.checks += 1
        if self.losing:
            self.hanging.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.lost += 1
            return
        if self.hung:
            await asyncio.Event().wait()
        if self.down:
            raise ConnectionError("DynamoDB is unreachable")


@asynccontextmanager
async def served(
    readiness: Readiness, interval_s: float = 60.0
) -> AsyncIterator[tuple[FastAPI, health_pb2_grpc.HealthStub]]:
    world = World()
    app = create_app(
        QueryApiSettings(
            jwt_secret=SECRET,
            http_host="127.0.0.1",
            grpc_port=0,
            grpc_health_interval_s=interval_s,
        ),
        repository=world.repository,
        grpc=True,
        ready_check=readiness,
    )
    async with (
        app.router.lifespan_context(app),
        grpc.aio.insecure_channel(f"127.0.0.1:{app.state.grpc_port}") as channel,
    ):
        yield app, health_pb2_grpc.HealthStub(channel)


async def health_of(health: health_pb2_grpc.HealthStub) -> set[int]:
    """The status of "" and of the service (one value when they agree)."""
    return {
        (await health.Check(health_pb2.HealthCheckRequest(service=s))).status
        for s in ("", SERVICE_NAME)
    }


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_health_follows_the_readiness_check_like_readyz() -> None:
    readiness = Readiness()
    async with served(readiness) as (app, health):
        server = app.state.grpc_server
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as http:
            serving = await health_of(health)
            readiness.down = True
            assert await server.check_health() is False
            down = await health_of(health)
            ready_while_down = (await http.get("/readyz")).status_code
            readiness.down = False
            assert await server.check_health() is True
            back = await health_of(health)

    assert (serving, down, back) == ({SERVING}, {NOT_SERVING}, {SERVING})
    assert ready_while_down == 503


async def test_health_is_not_serving_from_the_start_while_the_check_fails() -> None:
    readiness = Readiness()
    readiness.down = True
    async with served(readiness) as (_, health):
        assert await health_of(health) == {NOT_SERVING}


async def test_a_check_that_hangs_longer_than_the_interval_means_not_serving() -> None:
    readiness = Readiness()
    async with served(readiness, interval_s=0.05) as (app, health):
        readiness.hung = True
        assert await app.state.grpc_server.check_health() is False
        assert await health_of(health) == {NOT_SERVING}


async def test_health_is_checked_again_periodically() -> None:
    readiness = Readiness()
    async with served(readiness, interval_s=0.02) as (_, health):
        readiness.down = True
        deadline = asyncio.get_running_loop().time() + 10
        while await health_of(health) != {NOT_SERVING}:
            assert asyncio.get_running_loop().time() < deadline, "never NOT_SERVING"
            await asyncio.sleep(0.01)
        readiness.down = False
        while await health_of(health) != {SERVING}:
            assert asyncio.get_running_loop().time() < deadline, "never SERVING again"
            await asyncio.sleep(0.01)

    assert readiness.checks >= 3


async def test_a_stop_ends_the_health_watcher_although_its_cancellation_was_lost() -> (
    None
):
    readiness = Readiness()

    async def serve_then_stop() -> None:
        # The check's own bound (the interval) is far off: the stop's
        # cancellation is what reaches the watcher inside the check.
        async with served(readiness, interval_s=2.0):
            readiness.losing = True
            await readiness.hanging.wait()

    stopping = asyncio.create_task(serve_then_stop())
    done, _ = await asyncio.wait({stopping}, timeout=10)

    assert readiness.lost == 1
    assert stopping in done, "the shutdown waited for a watcher that went on"
    assert stopping.exception() is None


async def test_reflection_lists_the_service_and_serves_its_file(both: Both) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(both.channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
    ]

    answers = [a async for a in reflection.ServerReflectionInfo(iter(requests))]

    names = {s.name for s in answers[0].list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    assert SERVICE_NAME == "nova.query.v1.QueryService"
    assert answers[1].file_descriptor_response.file_descriptor_proto


async def test_a_taken_port_fails_loudly_instead_of_sharing_it(both: Both) -> None:
    port: int = both.app.state.grpc_port

    with pytest.raises(RuntimeError, match="NOVA_GRPC_PORT"):
        await start_grpc_server(
            both.app.state.queries,
            TokenVerifier(QueryApiSettings(jwt_secret=SECRET)),
            "127.0.0.1",
            port,
        )


async def test_shutdown_stops_the_server() -> None:
    world = World()
    app = create_app(
        QueryApiSettings(jwt_secret=SECRET, http_host="127.0.0.1", grpc_port=0),
        repository=world.repository,
        grpc=True,
    )
    async with app.router.lifespan_context(app):
        port: int = app.state.grpc_port

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        error = await status_of(
            health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        )
    assert error.code() in {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }


def test_fakes_alone_start_no_grpc_server() -> None:
    world = World()
    with world.client() as client:
        assert not hasattr(client.app.state, "grpc_port")  # type: ignore[attr-defined]


# --- parity with REST -------------------------------------------------------
#
# The same fakes, read through REST and through gRPC, give the same fields and
# values. Intentional differences, all from proto3's JSON mapping:
# - REST writes `null` for an absent value; gRPC leaves the optional field out
#   (compare `rest_json` below, which drops the nulls).
# - `size_bytes` is int64, which the mapping writes as a string ("32044").
# - A history event's `data` is a google.protobuf.Struct: its numbers are
#   doubles (1 reads back as 1.0, equal in Python); an erased event has no
#   `data` instead of `"data": null`.


def rest_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (v if k == "data" else rest_json(v))
            for k, v in value.items()
            if v is not None
        }
    if isinstance(value, list):
        return [rest_json(v) for v in value]
    return value


def grpc_json(message: Message) -> dict[str, Any]:
    found = as_json(message)

    def fix(value: Any) -> Any:
        if isinstance(value, dict):  # a Struct (`data`) keeps its JSON values
            return {
                k: int(v) if k == "size_bytes" else v if k == "data" else fix(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    fixed: dict[str, Any] = fix(found)
    return fixed


async def test_get_audio_is_the_same_over_rest_and_grpc(both: Both) -> None:
    full = item(version=4).model_copy(
        update={
            "s3_key": "audio/x/y.wav",
            "file_name": "y.wav",
            "content_type": "audio/wav",
            "size_bytes": 3_000_000_000,
            "duration_s": 1.5,
            "metadata": {"k": "v"},
            "language": "ja-JP",
            "confidence": 0.75,
            "segments": [
                SegmentView(start=0, end=1.25, text="こんにちは", confidence=0.5),
                SegmentView(start=1.25, end=1.5, text="<b>&"),
            ],
            "attempts": 2,
            "updated_at": "2026-01-02T03:04:05.678901+00:00",
            "completed_at": "2026-01-02T03:04:05+00:00",
        }
    )
    sparse = item(status="pending")
    running = item(status="processing", version=3).model_copy(
        update={"attempts": 1, "duration_s": 12.0}
    )
    both.world.progress.entries[running.audio_id] = {
        "attempt": 1,
        "seconds_done": 4.5,
        "duration_s": 12.0,
        "segments_done": 3,
        "updated_at": "2026-01-01T00:00:05Z",
    }
    for audio in (full, sparse, running):
        both.world.repository.add(audio)
        rest = await both.http.get(
            f"/queries/audio/{audio.audio_id}", headers=dict(bearer())
        )
        over_grpc = await both.stub.GetAudio(
            query_pb2.GetAudioRequest(audio_id=str(audio.audio_id)), metadata=bearer()
        )
        assert rest.status_code == 200
        assert grpc_json(over_grpc) == rest_json(rest.json())
        if audio is running:
            assert over_grpc.HasField("progress")
            assert over_grpc.progress.fraction == 0.375
            assert over_grpc.progress.segments_done == 3
        else:
            assert not over_grpc.HasField("progress")
    assert grpc_json(over_grpc)["segments"] == []  # no presence: always there


async def test_list_search_and_history_are_the_same_over_rest_and_grpc(
    both: Both,
) -> None:
    add_listing(both.world)
    both.world.search.add(USER, "hello one", title="One", language="en-US")
    both.world.search.add(USER, "hello two", confidence=0.5, status="completed")
    audio_id = add_stream(both.world, USER)
    erased = add_stream(both.world, USER, erased=True)
    headers = dict(bearer())

    pairs: list[tuple[httpx.Response, Message]] = [
        (
            await both.http.get("/queries/audio?limit=2", headers=headers),
            await both.stub.ListAudio(
                query_pb2.ListAudioRequest(limit=2), metadata=bearer()
            ),
        ),
        (
            await both.http.get("/queries/search?q=hello&limit=1", headers=headers),
            await both.stub.SearchTranscriptions(
                query_pb2.SearchTranscriptionsRequest(q="hello", limit=1),
                metadata=bearer(),
            ),
        ),
    ]
    for history_of in (audio_id, erased):
        pairs.append(
            (
                await both.http.get(
                    f"/queries/audio/{history_of}/history", headers=headers
                ),
                await both.stub.GetHistory(
                    query_pb2.GetHistoryRequest(audio_id=str(history_of)),
                    metadata=bearer(),
                ),
            )
        )

    for rest, over_grpc in pairs:
        assert rest.status_code == 200, rest.text
        assert grpc_json(over_grpc) == rest_json(rest.json())
    # Cursors are the handler's: each transport accepts the other's.
    rest_cursor = pairs[0][0].json()["next_cursor"]
    next_page = await both.stub.ListAudio(
        query_pb2.ListAudioRequest(limit=2, cursor=rest_cursor), metadata=bearer()
    )
    assert len(next_page.items) == 2


async def test_an_erased_users_audio_and_history_are_the_same_over_rest_and_grpc(
    both: Both,
) -> None:
    erased_user = uuid4()
    audio = both.world.repository.add(
        AudioReadModel(
            audio_id=uuid4(),
            user_id=erased_user,
            status="completed",
            language="en-US",
            created_at="2026-03-09T08:00:00+00:00",
            version=4,
            personal_data="erased",
        )
    )
    personal = PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
    created = AudioCreated(
        audio_id=audio.audio_id,
        user_id=erased_user,
        s3_key=f"audio/{erased_user}/{audio.audio_id}.wav",
        title="Diagnosis call",
        duration_s=4.0,
    )
    sealed = await personal.seal(envelope(audio.audio_id, 1, created), erased_user)
    started = envelope(
        audio.audio_id, 2, AudioProcessingStarted(audio_id=audio.audio_id)
    )
    await personal.erase(erased_user)
    both.world.history.streams[audio.audio_id] = await personal.open_all(
        [sealed, started]
    )
    admin = dict(ADMIN_META)

    one = await both.http.get(f"/queries/audio/{audio.audio_id}", headers=admin)
    one_grpc = await both.stub.GetAudio(
        query_pb2.GetAudioRequest(audio_id=str(audio.audio_id)), metadata=ADMIN_META
    )
    listed = await both.http.get(f"/queries/audio?user_id={erased_user}", headers=admin)
    listed_grpc = await both.stub.ListAudio(
        query_pb2.ListAudioRequest(user_id=str(erased_user)), metadata=ADMIN_META
    )
    history = await both.http.get(
        f"/queries/audio/{audio.audio_id}/history", headers=admin
    )
    history_grpc = await both.stub.GetHistory(
        query_pb2.GetHistoryRequest(audio_id=str(audio.audio_id)), metadata=ADMIN_META
    )

    for rest, over_grpc in (
        (one, one_grpc),
        (listed, listed_grpc),
        (history, history_grpc),
    ):
        assert rest.status_code == 200, rest.text
        assert grpc_json(over_grpc) == rest_json(rest.json())
    assert one_grpc.personal_data == "erased"
    assert not one_grpc.HasField("title")
    assert [i.personal_data for i in listed_grpc.items] == ["erased"]
    first, second = history_grpc.events
    assert first.personal_data == "erased"
    assert "title" not in first.data
    assert first.data["duration_s"] == 4.0
    assert not second.HasField("personal_data")
    assert "Diagnosis" not in str(history_grpc)


@pytest.mark.parametrize(
    ("view", "message"),
    [
        (AudioReadModel, query_pb2.Audio),
        (SegmentView, query_pb2.Segment),
        (TranscriptionProgress, query_pb2.TranscriptionProgress),
        (AudioSummary, query_pb2.AudioSummary),
        (AudioPage, query_pb2.ListAudioResponse),
        (SearchHit, query_pb2.SearchHit),
        (SearchPage, query_pb2.SearchTranscriptionsResponse),
        (HistoryEntry, query_pb2.HistoryEvent),
        (AudioHistory, query_pb2.GetHistoryResponse),
    ],
)
def test_every_field_of_a_view_is_in_its_message(
    view: type[BaseModel], message: type[Message]
) -> None:
    # A view field missing from the .proto would fail every answer carrying it
    # (INTERNAL), as `personal_data` did before it was added.
    assert set(view.model_fields) == set(message.DESCRIPTOR.fields_by_name)
