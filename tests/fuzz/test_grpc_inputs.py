"""query-api's gRPC service under malformed and boundary inputs.

Hypothesis draws each request field from its boundaries (ids that are not
UUIDs, huge strings, negative and huge int32 page sizes and versions, forged
and foreign cursors) with every kind of metadata (no token, bad schemes,
forged, expired and scopeless tokens), and sends raw bytes that are no
message, messages of the wrong type, and messages over the size limit.

Every answer must be one the service means: OK with a response its view
model accepts, or a status code of `ERROR_STATUS` (or UNAUTHENTICATED,
RESOURCE_EXHAUSTED for an oversized request) with the problem type and the
correlation id in its trailers; never UNKNOWN or INTERNAL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from nova_platform.auth.dev_token import issue
from nova_query_api.application.cursors import CursorCodec
from nova_query_api.application.queries import (
    AudioHistory,
    AudioPage,
    AudioReadModel,
    SearchPage,
)
from nova_query_api.entrypoints.grpc_server import MAX_REQUEST_BYTES, SERVICE_NAME
from nova_query_api.grpc_gen import query_pb2, query_pb2_grpc

from .harness import FUZZ_SETTINGS, SECRET, USER, Backends

pytestmark = pytest.mark.fuzz

GRPC_SETTINGS = settings(FUZZ_SETTINGS, max_examples=FUZZ_SETTINGS.max_examples * 4)
OTHER = UUID("22222222-2222-4222-8222-222222222222")
INT32 = st.integers(-(2**31), 2**31 - 1)


class Served:
    """query-api with its gRPC server on its own thread and event loop, over
    backends seeded through the command side; the tests call it blocking."""

    def __init__(self) -> None:
        self.port = 0
        self.audio_ids: list[UUID] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Served:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"query-api did not start: {self._error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - reported by __enter__
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        backends = Backends()
        self.audio_ids = await backends.seed(6)
        app = backends.query_app(grpc=True)
        async with app.router.lifespan_context(app):
            self.port = app.state.grpc_port
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with Served() as running:
        yield running


@pytest.fixture(scope="module")
def channel(served: Served) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> query_pb2_grpc.QueryServiceStub:
    return query_pb2_grpc.QueryServiceStub(channel)


def bearer(scopes: str = "audio:read", user: UUID = USER, **kw: Any) -> str:
    return f"Bearer {issue(user, scopes, kw.get('secret', SECRET), kw.get('ttl', 600))}"


VALID = "valid"
# Metadata a caller may send, and whether it authenticates `USER` to read.
CALLERS: dict[str, tuple[tuple[str, str | bytes], ...]] = {
    VALID: (("authorization", bearer()),),
    "admin": (("authorization", bearer("admin", OTHER)),),
    "lowercase scheme": (("authorization", bearer().replace("Bearer", "bearer")),),
    "no token": (),
    "empty": (("authorization", ""),),
    "scheme only": (("authorization", "Bearer "),),
    "basic": (("authorization", "Basic dXNlcjpwYXNz"),),
    "garbage": (("authorization", "Bearer not.a.jwt"),),
    "forged": (("authorization", bearer(secret="another-secret-of-32-bytes-or-so")),),
    "expired": (("authorization", bearer(ttl=-60)),),
    "no read scope": (("authorization", bearer("audio:write")),),
    "two tokens": (("authorization", "Bearer a"), ("authorization", bearer())),
    "odd metadata": (
        ("authorization", bearer()),
        ("x-correlation-id", "c" * 300),
        ("nova-trace", " {~} "),
        ("trace-bin", b"\xff\x00 binary"),
    ),
}
callers = st.sampled_from(sorted(CALLERS))

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E))
any_text = st.one_of(
    st.text(),
    printable,
    st.text(max_size=3).map(lambda s: s * 2000),  # long, under the size limit
)
ids = st.one_of(st.uuids().map(str), any_text, st.just(str(USER)).map(str.upper))


def cursors(genuine: str) -> st.SearchStrategy[str]:
    """Cursors a client might send: made up, edited, cut, or signed for
    another query or with another key."""
    body, _, signature = genuine.partition(".")
    other_key = CursorCodec(b"another-key").encode(f"list:{USER}", {"after": None})
    other_scope = CursorCodec(SECRET.encode()).encode(f"list:{OTHER}", {"after": {}})
    edited = st.tuples(st.integers(0, len(genuine) - 1), st.characters()).map(
        lambda at: genuine[: at[0]] + at[1] + genuine[at[0] + 1 :]
    )
    return st.one_of(
        any_text,
        edited,
        st.integers(0, len(genuine)).map(lambda n: genuine[:n]),
        st.sampled_from(
            [genuine, body, f"{body}.", f".{signature}", other_key, other_scope]
        ),
        st.just(genuine * 3),
    )


ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
VIEWS: dict[str, type[BaseModel]] = {
    "GetAudio": AudioReadModel,
    "ListAudio": AudioPage,
    "SearchTranscriptions": SearchPage,
    "GetHistory": AudioHistory,
}


def answered(
    rpc: str, call: Callable[[], Any], caller: str, size: int = 0
) -> grpc.StatusCode:
    """Make the call; check its answer is one the service means; its code."""
    try:
        response = call()
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        details: str = error.details() or ""
        trailers: dict[str, Any] = {
            m.key: m.value for m in error.trailing_metadata() or ()
        }
        assert code in ALLOWED, (rpc, code, details)
        assert details, (rpc, code)
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert size > MAX_REQUEST_BYTES, (rpc, details)
            return code
        assert "x-correlation-id" in trailers, (rpc, code, trailers)
        problem = trailers.get("nova-problem-type")
        assert problem, (rpc, code, trailers)
        if code is grpc.StatusCode.UNAVAILABLE:
            assert problem in ("not-yet-consistent", "not-ready"), trailers
            assert "retry-after" in trailers, trailers
        if caller not in ("admin", VALID, "lowercase scheme", "odd metadata"):
            assert code in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ), (rpc, caller, code)
        return code
    assert isinstance(response, Message)
    assert caller in ("admin", VALID, "lowercase scheme", "odd metadata"), caller
    VIEWS[rpc].model_validate(
        json_format.MessageToDict(
            response,
            preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True,
        )
    )
    return grpc.StatusCode.OK


def test_a_seeded_audio_reads_back(
    stub: query_pb2_grpc.QueryServiceStub, served: Served
) -> None:
    """The oracle accepts real answers (so the fuzz tests can fail)."""
    meta = CALLERS[VALID]
    for audio_id in served.audio_ids[:3]:
        request = query_pb2.GetAudioRequest(audio_id=str(audio_id))

        def call(request: query_pb2.GetAudioRequest = request) -> query_pb2.Audio:
            return stub.GetAudio(request, metadata=meta)

        assert answered("GetAudio", call, VALID) is grpc.StatusCode.OK
    page = stub.ListAudio(query_pb2.ListAudioRequest(limit=1), metadata=meta)
    assert page.next_cursor


@given(audio_id=ids, min_version=st.none() | INT32, caller=callers)
@GRPC_SETTINGS
def test_get_audio_and_history_with_any_id(
    stub: query_pb2_grpc.QueryServiceStub,
    audio_id: str,
    min_version: int | None,
    caller: str,
) -> None:
    request = query_pb2.GetAudioRequest(audio_id=audio_id)
    if min_version is not None:
        request.min_version = min_version
    meta = CALLERS[caller]
    size = request.ByteSize()

    answered("GetAudio", lambda: stub.GetAudio(request, metadata=meta), caller, size)
    history = query_pb2.GetHistoryRequest(audio_id=audio_id)
    answered(
        "GetHistory", lambda: stub.GetHistory(history, metadata=meta), caller, size
    )


@given(data=st.data(), limit=st.none() | INT32, caller=callers)
@GRPC_SETTINGS
def test_list_audio_with_any_page_size_and_cursor(
    stub: query_pb2_grpc.QueryServiceStub,
    data: st.DataObject,
    limit: int | None,
    caller: str,
) -> None:
    genuine = stub.ListAudio(
        query_pb2.ListAudioRequest(limit=1), metadata=CALLERS[VALID]
    ).next_cursor
    request = query_pb2.ListAudioRequest()
    if limit is not None:
        request.limit = limit
    if cursor := data.draw(st.none() | cursors(genuine)):
        request.cursor = cursor
    if user_id := data.draw(st.none() | ids):
        request.user_id = user_id

    answered(
        "ListAudio",
        lambda: stub.ListAudio(request, metadata=CALLERS[caller]),
        caller,
        request.ByteSize(),
    )


@given(
    data=st.data(),
    q=any_text,
    limit=st.none() | INT32,
    min_version=st.none() | INT32,
    all_users=st.booleans(),
    caller=callers,
)
@GRPC_SETTINGS
def test_search_with_any_text_and_arguments(
    stub: query_pb2_grpc.QueryServiceStub,
    data: st.DataObject,
    q: str,
    limit: int | None,
    min_version: int | None,
    all_users: bool,
    caller: str,
) -> None:
    request = query_pb2.SearchTranscriptionsRequest(q=q, all_users=all_users)
    if limit is not None:
        request.limit = limit
    if min_version is not None:
        request.min_version = min_version
    for field in ("user_id", "after_audio"):
        if value := data.draw(st.none() | ids):
            setattr(request, field, value)
    if cursor := data.draw(st.none() | any_text):
        request.cursor = cursor

    answered(
        "SearchTranscriptions",
        lambda: stub.SearchTranscriptions(request, metadata=CALLERS[caller]),
        caller,
        request.ByteSize(),
    )


RESPONSES = {
    "GetAudio": query_pb2.Audio,
    "ListAudio": query_pb2.ListAudioResponse,
    "SearchTranscriptions": query_pb2.SearchTranscriptionsResponse,
    "GetHistory": query_pb2.GetHistoryResponse,
}
# Messages of every request type, to send to the other methods (wrong type).
MESSAGES = [
    query_pb2.GetAudioRequest(audio_id=str(USER), min_version=3).SerializeToString(),
    query_pb2.ListAudioRequest(limit=2, cursor="x.y").SerializeToString(),
    query_pb2.SearchTranscriptionsRequest(q="hello", limit=-1).SerializeToString(),
    query_pb2.GetHistoryRequest(audio_id="nope").SerializeToString(),
]


@given(
    rpc=st.sampled_from(sorted(RESPONSES)),
    raw=st.one_of(
        st.binary(max_size=512),
        st.sampled_from(MESSAGES),
        st.tuples(st.sampled_from(MESSAGES), st.binary(max_size=16)).map(
            lambda parts: parts[0] + parts[1]
        ),
        st.sampled_from(MESSAGES).map(lambda m: m[: len(m) // 2]),
        st.just(b"\x0a\x02\xff\xfe"),  # audio_id: invalid UTF-8
        st.just(b"\x0a\xff\xff\xff\xff\x0f"),  # a length past the end
        st.just(b"\x0a" + bytes([0x80, 0x80, 0x04]) + b"x" * (MAX_REQUEST_BYTES + 1)),
    ),
    caller=st.sampled_from([VALID, "no token"]),
)
@GRPC_SETTINGS
def test_raw_bytes_to_every_method(
    channel: grpc.Channel, rpc: str, raw: bytes, caller: str
) -> None:
    response_type: Any = RESPONSES[rpc]
    send: grpc.UnaryUnaryMultiCallable[bytes, Message] = channel.unary_unary(
        f"/{SERVICE_NAME}/{rpc}",
        request_serializer=None,
        response_deserializer=response_type.FromString,
    )

    answered(rpc, lambda: send(raw, metadata=CALLERS[caller]), caller, len(raw))
