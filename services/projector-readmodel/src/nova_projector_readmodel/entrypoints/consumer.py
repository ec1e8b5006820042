"""`nova-projector-readmodel`: keeps `nova-audio-read-model` up to date."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack

from faststream.asgi import AsgiFastStream
from pydantic_settings import SettingsConfigDict
from redis.asyncio import Redis

from nova_events import EventEnvelope
from nova_platform.aws import client_kwargs, session
from nova_platform.commands import parse_command
from nova_platform.consumer import build_consumer_app
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.personal import PersonalData, open_personal_data
from nova_platform.projections import ActiveReadModelTable
from nova_platform.serve import serve
from nova_platform.settings import NovaSettings

from ..adapters.dynamodb_read_model import DynamoDBReadModel
from ..adapters.redis_cache import RedisCacheInvalidator
from ..application.projector import ReadModelProjector
from .rebuild import run_rebuild
from .redrive import run_redrive

SERVICE = "projector-readmodel"


class ProjectorSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8011


def create_app(settings: ProjectorSettings) -> AsgiFastStream:
    stack = AsyncExitStack()
    projector: ReadModelProjector | None = None
    personal: PersonalData | None = None
    ready: Callable[[], Awaitable[object]] | None = None

    async def start() -> None:
        nonlocal projector, ready, personal
        ddb = await stack.enter_async_context(
            session().client("dynamodb", **client_kwargs(settings))
        )
        personal = await open_personal_data(settings, stack, ddb)
        redis = Redis.from_url(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        table = ActiveReadModelTable(ddb, settings)

        async def describe_read_model() -> object:
            return await ddb.describe_table(TableName=await table.table_name())

        ready = describe_read_model
        projector = ReadModelProjector(
            DynamoDBReadModel(ddb, table),
            DynamoDBEventReader(ddb, settings.event_store_table, None, personal),
            RedisCacheInvalidator(redis, settings),
            personal.wait_for_erasure,
        )

    async def handle(envelopes: Sequence[EventEnvelope]) -> None:
        if projector is None:
            raise RuntimeError("the read model client is not open yet")
        await projector.project(envelopes)

    async def read_model_answers() -> None:
        if ready is None:
            raise RuntimeError("the read model client is not open yet")
        await ready()

    return build_consumer_app(
        settings,
        service=SERVICE,
        handle_batch=handle,
        on_startup=[start],
        on_shutdown=[stack.aclose],
        ready_checks={"read_model": read_model_answers},
        personal=lambda: personal,
        description=(
            "Applies every event to the nova-audio-read-model item of its audio "
            "(version-conditional writes) and drops the cached copy in Redis; "
            "UserErased strips every item of the user of its personal data."
        ),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve; or `nova-projector-readmodel rebuild` (see `rebuild.py`)."""
    args = parse_command("nova-projector-readmodel", argv)
    settings = ProjectorSettings()
    if args.command == "rebuild":
        raise SystemExit(run_rebuild(settings, args.grace_s))
    if args.command == "redrive":
        aggregate = str(args.aggregate) if args.aggregate else None
        raise SystemExit(run_redrive(settings, SERVICE, aggregate))
    serve(SERVICE, settings, settings.http_port, create_app)
