"""REST entrypoint: `/commands/*` on port 8001."""

# No `from __future__ import annotations` here: FastAPI evaluates the
# `Depends(...)` annotations, which name closures local to `create_app`.

import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Annotated
from uuid import UUID

from fastapi import Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from nova_events import EventMetadata
from nova_platform.auth import Principal, Scope, TokenVerifier
from nova_platform.aws import client_kwargs, session
from nova_platform.http.problems import Forbidden, NotReady, install_problem_handlers
from nova_platform.http.security import bearer_principal, correlation_middleware
from nova_platform.logging import correlation_id
from nova_platform.serve import serve

from ..adapters.dynamodb_event_store import DynamoDBEventStore
from ..application.commands import RegisterAudio
from ..application.handlers import AudioCommandHandler
from ..application.ports import EventStore
from ..settings import CommandApiSettings

_SAFE_KEY = re.compile(r"^[A-Za-z0-9._/-]+$")


def user_prefix(user_id: UUID) -> str:
    """Every user's objects live under their own prefix of the audio bucket."""

    # No `from __future__ import annotations`: FastAPI must evaluate the
    # `Depends(...)` annotations, which name closures local to `create_app`.
    return f"audio/{user_id}/"


class RegisterAudioRequest(BaseModel):
    """Register an object already uploaded under `audio/<your user id>/`."""

    model_config = ConfigDict(extra="forbid")

    s3_key: str = Field(min_length=1, max_length=1024)
    metadata: dict[str, Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict, max_length=32
    )

    @field_validator("s3_key")
    @classmethod
    def _plain_key(cls, key: str) -> str:
        parts = key.split("/")
        if not _SAFE_KEY.match(key) or any(p in ("", ".", "..") for p in parts):
            raise ValueError(
                "use letters, digits, '.', '_', '-' and single '/' separators; "
                "no empty, '.' or '..' path segments"
            )
        return key


class CommandAccepted(BaseModel):
    audio_id: UUID
    version: int


def create_app(
    settings: CommandApiSettings, event_store: EventStore | None = None
) -> FastAPI:
    """The command API; `event_store` replaces DynamoDB in unit tests."""
    verifier = TokenVerifier(settings)
    caller = bearer_principal(verifier)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            store = event_store
            if store is None:
                ddb = await stack.enter_async_context(
                    session().client("dynamodb", **client_kwargs(settings))
                )
                store = DynamoDBEventStore(ddb, settings.event_store_table)
                app.state.ready_check = partial(
                    ddb.describe_table, TableName=settings.event_store_table
                )
            app.state.handler = AudioCommandHandler(store)
            yield

    app = FastAPI(
        title="Nova command API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/commands/docs",
        openapi_url="/commands/openapi.json",
    )
    install_problem_handlers(app)
    app.middleware("http")(correlation_middleware)

    def writer(principal: Annotated[Principal, Depends(caller)]) -> Principal:
        if not principal.has(Scope.AUDIO_WRITE):
            raise Forbidden("this command needs a token with the `audio:write` scope")
        return principal

    def event_metadata(principal: Principal) -> EventMetadata:
        return EventMetadata(
            correlation_id=correlation_id.get() or "",
            user_id=str(principal.user_id),
        )

    @app.post("/commands/audio", status_code=201, response_model=CommandAccepted)
    async def register_audio(
        body: RegisterAudioRequest,
        request: Request,
        response: Response,
        principal: Annotated[Principal, Depends(writer)],
    ) -> CommandAccepted:
        prefix = user_prefix(principal.user_id)
        if not body.s3_key.startswith(prefix):
            raise Forbidden(
                f"s3_key must be under your own prefix {prefix!r}",
                s3_key=body.s3_key,
            )
        handler: AudioCommandHandler = request.app.state.handler
        result = await handler.register_audio(
            RegisterAudio(principal.user_id, body.s3_key, body.metadata),
            event_metadata(principal),
        )
        response.headers["Location"] = f"/queries/audio/{result.audio_id}"
        response.headers["ETag"] = f'"{result.version}"'
        return CommandAccepted(audio_id=result.audio_id, version=result.version)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> dict[str, str]:
        check = getattr(request.app.state, "ready_check", None)
        try:
            if check is not None:
                await check()
        except Exception as exc:
            raise NotReady(f"the event store is not reachable: {exc}") from exc
        return {"status": "ready"}

    return app


def main() -> None:
    settings = CommandApiSettings()
    serve("command-api", settings, settings.http_port, create_app)
