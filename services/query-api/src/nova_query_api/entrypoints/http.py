"""REST entrypoint: `/queries/*` on port 8002, and the gRPC server beside it.

The routes only translate: HTTP parameters into `AudioQueryHandler` calls, and
its `QueryError`s into problem documents (see `_problem`). The lifespan also
starts `nova.query.v1.QueryService` (`grpc_server.py`) on `NOVA_GRPC_PORT` over
the same handler, so both transports always answer alike.
"""

# No `from __future__ import annotations` here: FastAPI evaluates the
# `Depends(...)` annotations, which name closures local to `create_app`.

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from opensearchpy import AsyncOpenSearch
from redis.asyncio import Redis

from nova_platform.auth import Principal, Scope, TokenVerifier
from nova_platform.aws import client_kwargs, session
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.http.metrics import install_metrics
from nova_platform.http.openapi import install_openapi
from nova_platform.http.problems import (
    AUTH_PROBLEMS,
    INVALID_REQUEST,
    Forbidden,
    NotFound,
    NotReady,
    Problem,
    install_problem_handlers,
    problem_responses,
)
from nova_platform.http.security import CorrelationIdMiddleware, bearer_principal
from nova_platform.personal import open_personal_data
from nova_platform.projections import ActiveReadModelTable
from nova_platform.serve import serve

from ..adapters.dynamodb_read_model import DynamoDBReadModelRepository
from ..adapters.opensearch_search import OpenSearchTranscripts
from ..adapters.redis_cache import RedisAudioCache, RedisProgress
from ..application.cursors import MAX_CURSOR_CHARS, CursorCodec
from ..application.queries import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_QUERY_CHARS,
    AudioCache,
    AudioHistory,
    AudioNotFoundError,
    AudioPage,
    AudioQueryHandler,
    AudioReadModel,
    EventHistory,
    InvalidArgumentError,
    InvalidCursorArgumentError,
    NotYetConsistentError,
    ProgressSource,
    QueryError,
    QueryForbiddenError,
    ReadModelRepository,
    SearchIndex,
    SearchPage,
    Sleep,
)
from ..settings import QueryApiSettings
from .grpc_server import start_grpc_server

__all__ = ["QueryApiSettings", "create_app", "main"]

RETRY_AFTER_S = 1

_QUERY = {
    **AUTH_PROBLEMS,
    403: "`forbidden`: no `audio:read` scope, or another user's audio without `admin`",
    **INVALID_REQUEST,
}
_NOT_FOUND = {404: "`not-found`: missing, erased, or another user's"}
_NOT_YET = {
    503: "`not-yet-consistent`: not at `min_version` yet; retry after "
    "`Retry-After` seconds",
}
_PAGED = {400: "`invalid-cursor`: send a `next_cursor` of the same query unchanged"}


def _problem(exc: QueryError) -> Problem:
    """The problem document a query error answers with."""
    if isinstance(exc, AudioNotFoundError):
        return NotFound(str(exc), audio_id=str(exc.audio_id))
    if isinstance(exc, QueryForbiddenError):
        return Forbidden(str(exc))
    if isinstance(exc, InvalidCursorArgumentError):
        return Problem(
            str(exc), status=400, kind="invalid-cursor", title="Invalid cursor"
        )
    if isinstance(exc, InvalidArgumentError):
        return Problem(
            f"fix `{exc.field}`: {exc}",
            status=422,
            kind="invalid-request",
            title="The request does not match the API's schema",
            errors=[{"location": f"query.{exc.field}", "message": str(exc)}],
        )
    if isinstance(exc, NotYetConsistentError):
        return Problem(
            str(exc),
            status=503,
            kind="not-yet-consistent",
            title="Not yet consistent",
            audio_id=str(exc.audio_id),
            min_version=exc.wanted,
            current_version=exc.current,
            retry_after_s=RETRY_AFTER_S,
        )
    return Problem(str(exc))  # pragma: no cover - every subclass is mapped above


def create_app(
    settings: QueryApiSettings,
    repository: ReadModelRepository | None = None,
    search_index: SearchIndex | None = None,
    cache: AudioCache | None = None,
    history: EventHistory | None = None,
    progress: ProgressSource | None = None,
    sleep: Sleep | None = None,
    clock: Callable[[], float] | None = None,
    grpc: bool | None = None,
    ready_check: Callable[[], Awaitable[object]] | None = None,
) -> FastAPI:
    """The query API; the optional adapters replace AWS, OpenSearch and Redis
    in unit tests (when `repository` is given, missing ones stay absent).

    `ready_check` raises while the read model is unreachable: it answers
    `/readyz` and the gRPC health (by default, DynamoDB's DescribeTable on
    the active read-model table with the real adapters; none with fakes).

    `grpc`: also serve gRPC on `settings.grpc_port` while the app runs; by
    default only with the real adapters (tests with fakes ask for it). The
    bound port is then `app.state.grpc_port`.
    """
    verifier = TokenVerifier(settings)
    caller = bearer_principal(verifier)
    serve_grpc = repository is None if grpc is None else grpc
    cursors = CursorCodec(settings.cursor_key())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            repo, index, cached, events = repository, search_index, cache, history
            progressed = progress
            app.state.ready_check = ready_check
            if repo is None:
                ddb = await stack.enter_async_context(
                    session().client("dynamodb", **client_kwargs(settings))
                )
                table = ActiveReadModelTable(ddb, settings)
                repo = DynamoDBReadModelRepository(ddb, table)
                if events is None:
                    # History shows the events opened: erased once the owner is.
                    personal = await open_personal_data(settings, stack, ddb)
                    events = DynamoDBEventReader(
                        ddb, settings.event_store_table, None, personal
                    )
                opensearch = AsyncOpenSearch(hosts=[settings.opensearch_url])
                stack.push_async_callback(opensearch.close)
                index = index or OpenSearchTranscripts(
                    opensearch, settings.search_alias
                )
                redis = Redis.from_url(
                    settings.redis_url,
                    socket_timeout=settings.cache_timeout_s,
                    socket_connect_timeout=settings.cache_timeout_s,
                )
                stack.push_async_callback(redis.aclose)
                cached = cached or RedisAudioCache(
                    redis, settings, settings.cache_ttl_s
                )
                progressed = progressed or RedisProgress(redis, settings)

                async def describe_read_model() -> None:
                    await ddb.describe_table(TableName=await table.table_name())

                app.state.ready_check = ready_check or describe_read_model
            extras: dict[str, Any] = {}
            if sleep is not None:
                extras["sleep"] = sleep
            if clock is not None:
                extras["clock"] = clock
            app.state.queries = AudioQueryHandler(
                repo,
                cursors=cursors,
                cache=cached,
                search_index=index,
                history=events,
                progress=progressed,
                consistency_wait_s=settings.consistency_wait_s,
                **extras,
            )
            if serve_grpc:
                server = await start_grpc_server(
                    app.state.queries,
                    verifier,
                    settings.http_host,
                    settings.grpc_port,
                    ready_check=app.state.ready_check,
                    health_interval_s=settings.grpc_health_interval_s,
                )
                stack.push_async_callback(server.stop)
                app.state.grpc_server = server
                app.state.grpc_port = server.port
            yield

    app = FastAPI(
        title="Nova query API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/queries/docs",
        openapi_url="/queries/openapi.json",
    )
    install_problem_handlers(app)
    install_openapi(app)
    install_metrics(app)
    app.add_middleware(CorrelationIdMiddleware)

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, exc: QueryError) -> JSONResponse:
        return _problem(exc).response()

    async def reader(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if not principal.has(Scope.AUDIO_READ):
            raise Forbidden("this query needs a token with the `audio:read` scope")
        return principal

    Reader = Annotated[Principal, Depends(reader)]  # noqa: N806 - a type alias
    Limit = Annotated[  # noqa: N806 - a type alias
        int,
        Query(ge=1, le=MAX_PAGE_SIZE, description="page size"),
    ]
    # No `max_length`: the handler bounds cursors, so a long one answers
    # `invalid-cursor` as over gRPC, not a schema error.
    Cursor = Annotated[  # noqa: N806 - a type alias
        str | None,
        Query(
            description="`next_cursor` of the previous page of the same query "
            f"(at most {MAX_CURSOR_CHARS} characters)",
        ),
    ]

    async def handler(request: Request) -> AudioQueryHandler:
        queries: AudioQueryHandler = request.app.state.queries
        return queries

    Queries = Annotated[AudioQueryHandler, Depends(handler)]  # noqa: N806

    def wanted_version(query: int | None, header: int | None) -> int | None:
        if query is not None and header is not None and query != header:
            message = (
                f"`min_version` ({query}) and `X-Min-Version` ({header}) differ; "
                "send one of them"
            )
            raise Problem(
                message,
                status=422,
                kind="invalid-request",
                title="The request does not match the API's schema",
                errors=[{"location": "header.X-Min-Version", "message": message}],
            )
        return query if query is not None else header

    @app.get(
        "/queries/audio/{audio_id}",
        response_model=AudioReadModel,
        responses={
            304: {"description": "`If-None-Match` names the current version"},
            **problem_responses({**_QUERY, **_NOT_FOUND, **_NOT_YET}),
        },
    )
    async def get_audio(
        audio_id: UUID,
        principal: Reader,
        queries: Queries,
        min_version: Annotated[
            int | None,
            Query(ge=1, description="wait (briefly) until the item is this recent"),
        ] = None,
        x_min_version: Annotated[
            int | None, Header(alias="X-Min-Version", ge=1)
        ] = None,
        if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    ) -> Response:
        """One audio, at `min_version` (or `X-Min-Version`) or later when given."""
        audio = await queries.get_by_id(
            audio_id, principal, min_version=wanted_version(min_version, x_min_version)
        )
        etag = f'"{audio.version}"'
        # Progress moves without a new version: never 304 while it is shown.
        if (
            audio.progress is None
            and if_none_match is not None
            and etag in (t.strip().removeprefix("W/") for t in if_none_match.split(","))
        ):
            return Response(status_code=304, headers={"ETag": etag})
        return JSONResponse(audio.model_dump(mode="json"), headers={"ETag": etag})

    @app.get(
        "/queries/audio",
        response_model=AudioPage,
        responses=problem_responses({**_QUERY, **_PAGED}),
    )
    async def list_audio(
        principal: Reader,
        queries: Queries,
        user_id: Annotated[
            UUID | None, Query(description="another user's (admin only)")
        ] = None,
        limit: Limit = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> AudioPage:
        """Your audios (or `user_id`'s, for an admin), newest first."""
        return await queries.list_audio(principal, user_id, limit, cursor)

    @app.get(
        "/queries/search",
        response_model=SearchPage,
        responses=problem_responses({**_QUERY, **_PAGED, **_NOT_YET}),
    )
    async def search(
        principal: Reader,
        queries: Queries,
        q: Annotated[
            str,
            Query(
                min_length=1,
                max_length=MAX_QUERY_CHARS,
                description="words to find in transcripts (plain text)",
            ),
        ],
        user_id: Annotated[
            UUID | None, Query(description="another user's (admin only)")
        ] = None,
        all_users: Annotated[bool, Query(description="everyone's (admin only)")] = (
            False
        ),
        limit: Limit = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
        after_audio: Annotated[
            UUID | None,
            Query(description="with `min_version`: wait until this audio is indexed"),
        ] = None,
        min_version: Annotated[int | None, Query(ge=1)] = None,
        x_min_version: Annotated[
            int | None, Header(alias="X-Min-Version", ge=1)
        ] = None,
    ) -> SearchPage:
        """Transcripts matching `q`, best first, with highlighted snippets."""
        return await queries.search(
            principal,
            q,
            user_id=user_id,
            all_users=all_users,
            limit=limit,
            cursor=cursor,
            after_audio=after_audio,
            min_version=wanted_version(min_version, x_min_version),
        )

    @app.get(
        "/queries/audio/{audio_id}/history",
        response_model=AudioHistory,
        responses=problem_responses({**_QUERY, **_NOT_FOUND}),
    )
    async def audio_history(
        audio_id: UUID, principal: Reader, queries: Queries
    ) -> AudioHistory:
        """The audio's events from the event store, oldest first."""
        return await queries.history(audio_id, principal)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> dict[str, str]:
        check: Callable[[], Awaitable[Any]] | None = getattr(
            request.app.state, "ready_check", None
        )
        try:
            if check is not None:
                await check()
        except Exception as exc:
            raise NotReady(f"the read model is not reachable: {exc}") from exc
        return {"status": "ready"}

    return app


def main() -> None:
    settings = QueryApiSettings()
    serve("query-api", settings, settings.http_port, create_app)
