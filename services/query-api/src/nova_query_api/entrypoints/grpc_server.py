"""gRPC entrypoint: `nova.query.v1.QueryService` on `NOVA_GRPC_PORT` (50051).

Like the REST routes, the servicer only translates: request messages into
`AudioQueryHandler` calls, the handler's views into response messages, and its
`QueryError`s into status codes (one table, `ERROR_STATUS`). The caller is the
`authorization: Bearer <token>` metadata, verified by the same `TokenVerifier`.
The standard health (`grpc.health.v1.Health`) and reflection services run
beside it, without authentication; health follows the same readiness check as
REST `/readyz`. query-api's HTTP lifespan starts the server
(`start_grpc_server`) once the handler's backends are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import (  # type: ignore[import-untyped]
    health,
    health_pb2,
    health_pb2_grpc,
)
from grpc_reflection.v1alpha import reflection  # type: ignore[import-untyped]
from pydantic import BaseModel

from nova_platform.auth import AuthError, Principal, Scope, TokenVerifier
from nova_platform.batches import is_transient
from nova_platform.logging import correlation_id
from nova_platform.stopping import stop_task

from ..application.queries import (
    DEFAULT_PAGE_SIZE,
    MAX_QUERY_CHARS,
    AudioNotFoundError,
    AudioQueryHandler,
    InvalidArgumentError,
    InvalidCursorArgumentError,
    NotYetConsistentError,
    QueryError,
    QueryForbiddenError,
)
from ..grpc_gen import query_pb2, query_pb2_grpc

__all__ = [
    "ERROR_STATUS",
    "SERVICE_NAME",
    "GrpcServer",
    "QueryServicer",
    "start_grpc_server",
]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = query_pb2.DESCRIPTOR.services_by_name["QueryService"].full_name
RETRY_AFTER_S = 1
MAX_REQUEST_BYTES = 64 * 1024
"""Every request is a few ids, a cursor (at most 4 KiB) and a query (500
characters): anything larger is refused before it is parsed."""
HEALTH_INTERVAL_S = 5.0
CORRELATION_KEY = "x-correlation-id"

ERROR_STATUS: tuple[tuple[type[QueryError], grpc.StatusCode, str], ...] = (
    # (error, status code, the REST problem type it shares), first match wins.
    (AudioNotFoundError, grpc.StatusCode.NOT_FOUND, "not-found"),
    (QueryForbiddenError, grpc.StatusCode.PERMISSION_DENIED, "forbidden"),
    (InvalidCursorArgumentError, grpc.StatusCode.INVALID_ARGUMENT, "invalid-cursor"),
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT, "invalid-request"),
    (NotYetConsistentError, grpc.StatusCode.UNAVAILABLE, "not-yet-consistent"),
)
"""How each query error answers over gRPC; `_status` adds its details.

Not yet consistent is UNAVAILABLE, not FAILED_PRECONDITION: the client can
retry the very same call. No query error is a FAILED_PRECONDITION (a state
the client must fix before retrying): a cursor of another query or user is
wrong whatever the state, so INVALID_ARGUMENT; REST's 412 and 409 belong to
the command API. Missing or invalid tokens answer UNAUTHENTICATED and a token
without `audio:read` PERMISSION_DENIED, before the handler runs. Any other
error is INTERNAL, or UNAVAILABLE when it is transient (`_unexpected`).
"""

Metadata = tuple[tuple[str, str], ...]
T = TypeVar("T")
M = TypeVar("M", bound=Message)


def _status(exc: QueryError) -> tuple[grpc.StatusCode, str, Metadata]:
    """Status code, details and trailing metadata of a query error."""
    code, problem = next(
        (
            (code, problem)
            for kind, code, problem in ERROR_STATUS
            if isinstance(exc, kind)
        ),
        (grpc.StatusCode.INTERNAL, "internal"),  # every subclass is in the table
    )
    details = str(exc)
    trailers: list[tuple[str, str]] = [("nova-problem-type", problem)]
    if isinstance(exc, InvalidArgumentError):
        trailers.append(("nova-field", exc.field))
        if not isinstance(exc, InvalidCursorArgumentError):
            details = f"fix `{exc.field}`: {exc}"
    if isinstance(exc, NotYetConsistentError):
        trailers += [
            ("nova-min-version", str(exc.wanted)),
            ("retry-after", str(RETRY_AFTER_S)),
        ]
        if exc.current is not None:
            trailers.append(("nova-current-version", str(exc.current)))
    return code, details, tuple(trailers)


def _unexpected(exc: Exception, cid: str) -> tuple[grpc.StatusCode, str, Metadata]:
    """Status code, details and trailing metadata of an error no query
    raises on purpose: never its own text (it may name internals)."""
    if is_transient(exc):
        return (
            grpc.StatusCode.UNAVAILABLE,
            "a backend of the query API is unreachable right now; retry in a second",
            (("nova-problem-type", "not-ready"), ("retry-after", str(RETRY_AFTER_S))),
        )
    return (
        grpc.StatusCode.INTERNAL,
        f"the query failed on the server; retry later, and quote correlation id "
        f"{cid} if it keeps failing",
        (("nova-problem-type", "internal"),),
    )


def _metadata(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value if isinstance(value, str) else value.decode()
    return None


def _uuid(field: str, value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as exc:
        raise InvalidArgumentError(
            field, f"`{field}` must be a UUID, got {value[:64]!r}"
        ) from exc


def _json(value: Any, *, keep: bool = False) -> Any:
    """A view's JSON without nulls (proto's absent fields); `keep` leaves an
    event payload (a Struct, where null is a value) as it is."""
    if keep:
        return value
    if isinstance(value, dict):
        return {
            k: _json(v, keep=k == "data") for k, v in value.items() if v is not None
        }
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def _message(view: BaseModel, message: M) -> M:
    """`view` (a handler's pydantic view) as the proto message that mirrors it.

    Fields map by name. Unknown fields raise: a field added to a view must be
    added to the .proto (a unit test compares each view with its message).
    """
    return json_format.ParseDict(_json(view.model_dump(mode="json")), message)


class QueryServicer(query_pb2_grpc.QueryServiceServicer):
    """`nova.query.v1.QueryService` over one `AudioQueryHandler`."""

    def __init__(self, queries: AudioQueryHandler, verifier: TokenVerifier) -> None:
        self._queries = queries
        self._verifier = verifier

    async def GetAudio(  # noqa: N802 - the RPC's name
        self,
        request: query_pb2.GetAudioRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> query_pb2.Audio:
        async def call(caller: Principal) -> query_pb2.Audio:
            audio = await self._queries.get_by_id(
                _uuid("audio_id", request.audio_id),
                caller,
                min_version=(
                    request.min_version if request.HasField("min_version") else None
                ),
            )
            return _message(audio, query_pb2.Audio())

        return await self._answer("GetAudio", context, call)

    async def ListAudio(  # noqa: N802 - the RPC's name
        self,
        request: query_pb2.ListAudioRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> query_pb2.ListAudioResponse:
        async def call(caller: Principal) -> query_pb2.ListAudioResponse:
            page = await self._queries.list_audio(
                caller,
                user_id=(
                    _uuid("user_id", request.user_id)
                    if request.HasField("user_id")
                    else None
                ),
                limit=request.limit if request.HasField("limit") else DEFAULT_PAGE_SIZE,
                cursor=request.cursor if request.HasField("cursor") else None,
            )
            return _message(page, query_pb2.ListAudioResponse())

        return await self._answer("ListAudio", context, call)

    async def SearchTranscriptions(  # noqa: N802 - the RPC's name
        self,
        request: query_pb2.SearchTranscriptionsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> query_pb2.SearchTranscriptionsResponse:
        async def call(caller: Principal) -> query_pb2.SearchTranscriptionsResponse:
            if len(request.q) > MAX_QUERY_CHARS:  # as REST's `max_length`
                raise InvalidArgumentError(
                    "q",
                    f"the search text must be at most {MAX_QUERY_CHARS} characters, "
                    f"got {len(request.q)}",
                )
            page = await self._queries.search(
                caller,
                request.q,
                user_id=(
                    _uuid("user_id", request.user_id)
                    if request.HasField("user_id")
                    else None
                ),
                all_users=request.all_users,
                limit=request.limit if request.HasField("limit") else DEFAULT_PAGE_SIZE,
                cursor=request.cursor if request.HasField("cursor") else None,
                after_audio=(
                    _uuid("after_audio", request.after_audio)
                    if request.HasField("after_audio")
                    else None
                ),
                min_version=(
                    request.min_version if request.HasField("min_version") else None
                ),
            )
            return _message(page, query_pb2.SearchTranscriptionsResponse())

        return await self._answer("SearchTranscriptions", context, call)

    async def GetHistory(  # noqa: N802 - the RPC's name
        self,
        request: query_pb2.GetHistoryRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> query_pb2.GetHistoryResponse:
        async def call(caller: Principal) -> query_pb2.GetHistoryResponse:
            history = await self._queries.history(
                _uuid("audio_id", request.audio_id), caller
            )
            return _message(history, query_pb2.GetHistoryResponse())

        return await self._answer("GetHistory", context, call)

    async def refuse_malformed(
        self,
        rpc: str,
        request: MalformedRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Message:
        """INVALID_ARGUMENT (once the caller is authenticated) for bytes that
        are no request message; grpc itself would answer UNKNOWN."""

        async def call(caller: Principal) -> Message:
            raise InvalidArgumentError(
                "request",
                f"the request is not a {request.message_type} message "
                f"({request.error}); build it from nova/query/v1/query.proto",
            )

        return await self._answer(rpc, context, call)

    async def _answer(
        self,
        rpc: str,
        context: grpc.aio.ServicerContext[Any, Any],
        call: Callable[[Principal], Awaitable[T]],
    ) -> T:
        """Authenticate, run `call`, and map its errors to status codes."""
        cid = (_metadata(context, CORRELATION_KEY) or str(uuid.uuid4()))[:128]
        token = correlation_id.set(cid)
        try:
            caller = await self._caller(context, cid)
            try:
                return await call(caller)
            except QueryError as exc:
                code, details, trailers = _status(exc)
            except Exception as exc:
                code, details, trailers = _unexpected(exc, cid)
                fields = {"correlation_id": cid, "rpc": rpc, "grpc_status": code.name}
                if code == grpc.StatusCode.UNAVAILABLE:  # an outage: no traceback
                    logger.warning(
                        "query failed", extra={**fields, "error": repr(exc)[:500]}
                    )
                else:
                    logger.exception("query failed", extra=fields)
            await context.abort(
                code, details, trailing_metadata=((CORRELATION_KEY, cid), *trailers)
            )
        finally:
            correlation_id.reset(token)

    async def _caller(
        self, context: grpc.aio.ServicerContext[Any, Any], cid: str
    ) -> Principal:
        trailers = ((CORRELATION_KEY, cid),)
        scheme, _, token = (_metadata(context, "authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "send metadata `authorization: Bearer <token>`; `make token` prints "
                "one for development",
                trailing_metadata=(*trailers, ("nova-problem-type", "unauthorized")),
            )
        try:
            caller = self._verifier.verify(token.strip())
        except AuthError as exc:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                str(exc),
                trailing_metadata=(*trailers, ("nova-problem-type", "unauthorized")),
            )
        if not caller.has(Scope.AUDIO_READ):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "this query needs a token with the `audio:read` scope",
                trailing_metadata=(*trailers, ("nova-problem-type", "forbidden")),
            )
        return caller


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """What a method receives for request bytes that do not parse as its type."""

    message_type: str
    error: str


def _lenient(message_type: type[M]) -> Callable[[bytes], M | MalformedRequest]:
    def decode(raw: bytes) -> M | MalformedRequest:
        try:
            return message_type.FromString(raw)
        except DecodeError as exc:
            return MalformedRequest(message_type.DESCRIPTOR.full_name, str(exc))

    return decode


def _add_servicer(servicer: QueryServicer, server: grpc.aio.Server) -> None:
    """As the generated `add_QueryServiceServicer_to_server`, but a request
    that does not parse reaches `refuse_malformed` instead of failing in grpc."""

    def handle(name: str) -> Callable[..., Awaitable[Message]]:
        method = getattr(servicer, name)

        async def behaviour(request: Any, context: Any) -> Message:
            if isinstance(request, MalformedRequest):
                return await servicer.refuse_malformed(name, request, context)
            answer: Message = await method(request, context)
            return answer

        return behaviour

    handlers = {
        method.name: grpc.unary_unary_rpc_method_handler(
            handle(method.name),
            request_deserializer=_lenient(getattr(query_pb2, method.input_type.name)),
            response_serializer=getattr(
                query_pb2, method.output_type.name
            ).SerializeToString,
        )
        for method in query_pb2.DESCRIPTOR.services_by_name["QueryService"].methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
    )
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


ReadyCheck = Callable[[], Awaitable[object]]
"""Raises when a backend the queries need is unreachable (REST `/readyz`)."""


class GrpcServer:
    """A started server: its bound port, its health, and how to stop it.

    With a `ready_check`, health reports NOT_SERVING (for "" and the service)
    while the check fails, checked every `health_interval_s` (and bounded by
    it); without one, SERVING while the server runs.
    """

    def __init__(
        self,
        server: grpc.aio.Server,
        health: Any,  # grpc_health.v1.health.aio.HealthServicer (untyped)
        port: int,
        ready_check: ReadyCheck | None = None,
        health_interval_s: float = HEALTH_INTERVAL_S,
    ) -> None:
        self.server = server
        self.health = health
        self.port = port
        self._ready_check = ready_check
        self._interval_s = health_interval_s
        self._serving: bool | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    async def check_health(self) -> bool:
        """Run the readiness check once and report its outcome as the health
        status; True when SERVING."""
        serving, error = True, ""
        if self._ready_check is not None:
            try:
                async with asyncio.timeout(self._interval_s):
                    await self._ready_check()
            except Exception as exc:  # noqa: BLE001 - any failure is "not ready"
                serving, error = False, repr(exc)[:300]
        if serving != self._serving:
            if serving:
                logger.info("gRPC health: SERVING")
            else:
                logger.warning(
                    "gRPC health: NOT_SERVING, the read model is not reachable",
                    extra={"error": error},
                )
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)
        return serving

    def watch_health(self) -> None:
        """Re-run `check_health` every `health_interval_s` until `stop`."""
        if self._ready_check is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        # Ends on `_stopped`, not on its cancellation alone: on Python 3.11 a
        # ready check bounded by asyncio.wait_for (redis-py, aiobotocore) can
        # swallow the cancellation, and the loop would then go on forever.
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self._interval_s)
            if not self._stopped.is_set():
                await self.check_health()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, let running calls finish (up to `grace_s`), stop."""
        self._stopped.set()
        if self._watcher is not None:
            await stop_task(
                self._watcher, what="the gRPC health watcher", backstop_s=grace_s
            )
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_grpc_server(
    queries: AudioQueryHandler,
    verifier: TokenVerifier,
    host: str,
    port: int,
    ready_check: ReadyCheck | None = None,
    health_interval_s: float = HEALTH_INTERVAL_S,
) -> GrpcServer:
    """Serve QueryService, health and reflection on `host:port` (0: a free port).

    Health for "" and the service follows `ready_check` (see `GrpcServer`),
    checked once before this returns; without one it is SERVING once the
    server listens. Raises RuntimeError when the port cannot be bound (also
    when another process holds it: port sharing is switched off, so two
    servers never split the calls).
    """
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ]
    )
    _add_servicer(QueryServicer(queries, verifier), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(
            f"gRPC cannot listen on {address} ({exc}); set NOVA_GRPC_PORT to a free "
            "port"
        ) from exc
    if not bound:
        raise RuntimeError(
            f"gRPC cannot listen on {address}; set NOVA_GRPC_PORT to a free port"
        )
    await server.start()
    started = GrpcServer(server, health_servicer, bound, ready_check, health_interval_s)
    await started.check_health()
    started.watch_health()
    logger.info("gRPC listening", extra={"address": f"{host}:{bound}"})
    return started
