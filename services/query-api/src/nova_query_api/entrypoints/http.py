"""REST entrypoint: `/queries/*` on port 8002."""

# No `from __future__ import annotations` here: FastAPI evaluates the
# `Depends(...)` annotations, which name closures local to `create_app`.

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Request
from pydantic_settings import SettingsConfigDict

from nova_platform.auth import Principal, Scope, TokenVerifier
from nova_platform.aws import client_kwargs, session
from nova_platform.http.problems import (
    Forbidden,
    NotFound,
    NotReady,
    install_problem_handlers,
)
from nova_platform.http.security import bearer_principal, correlation_middleware
from nova_platform.projections import ActiveReadModelTable
from nova_platform.serve import serve
from nova_platform.settings import NovaSettings

from ..adapters.dynamodb_read_model import DynamoDBReadModelRepository
from ..application.queries import AudioNotFoundError, AudioQueryHandler, AudioReadModel


class QueryApiSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8002


def create_app(settings: QueryApiSettings) -> FastAPI:
    caller = bearer_principal(TokenVerifier(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            ddb = await stack.enter_async_context(
                session().client("dynamodb", **client_kwargs(settings))
            )
            table = ActiveReadModelTable(ddb, settings)
            repository = DynamoDBReadModelRepository(ddb, table)
            app.state.queries = AudioQueryHandler(repository)
            app.state.ddb = ddb
            app.state.read_model_table = table
            yield

    app = FastAPI(
        title="Nova query API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/queries/docs",
        openapi_url="/queries/openapi.json",
    )
    install_problem_handlers(app)
    app.middleware("http")(correlation_middleware)

    def reader(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if not principal.has(Scope.AUDIO_READ):
            raise Forbidden("this query needs a token with the `audio:read` scope")
        return principal

    @app.get("/queries/audio/{audio_id}", response_model=AudioReadModel)
    async def get_audio(
        audio_id: UUID,
        request: Request,
        principal: Annotated[Principal, Depends(reader)],
    ) -> AudioReadModel:
        queries: AudioQueryHandler = request.app.state.queries
        try:
            return await queries.get_by_id(audio_id, principal)
        except AudioNotFoundError as exc:
            raise NotFound(str(exc), audio_id=str(audio_id)) from exc

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> dict[str, str]:
        try:
            table: ActiveReadModelTable = request.app.state.read_model_table
            await request.app.state.ddb.describe_table(
                TableName=await table.table_name()
            )
        except Exception as exc:
            raise NotReady(f"the read model is not reachable: {exc}") from exc
        return {"status": "ready"}

    return app


def main() -> None:
    settings = QueryApiSettings()
    serve("query-api", settings, settings.http_port, create_app)
