"""`nova-projector-search`: keeps the `audio-transcriptions` index up to date."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from faststream.asgi import AsgiFastStream
from opensearchpy import AsyncOpenSearch
from pydantic_settings import SettingsConfigDict

from nova_events import EventEnvelope
from nova_platform.aws import client_kwargs, session
from nova_platform.commands import parse_command
from nova_platform.consumer import build_consumer_app
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.personal import PersonalData, open_personal_data
from nova_platform.serve import serve
from nova_platform.settings import NovaSettings

from ..adapters.opensearch_index import OpenSearchIndex
from ..application.projector import SearchProjector
from .rebuild import run_rebuild
from .redrive import run_redrive

SERVICE = "projector-search"


class ProjectorSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8012


def create_app(settings: ProjectorSettings) -> AsgiFastStream:
    client = AsyncOpenSearch(hosts=[settings.opensearch_url], timeout=30)
    stack = AsyncExitStack()
    stack.push_async_callback(client.close)
    projector: SearchProjector | None = None
    personal: PersonalData | None = None

    async def start() -> None:
        nonlocal projector, personal
        ddb = await stack.enter_async_context(
            session().client("dynamodb", **client_kwargs(settings))
        )
        personal = await open_personal_data(settings, stack, ddb)
        projector = SearchProjector(
            OpenSearchIndex(client, settings.search_alias),
            DynamoDBEventReader(ddb, settings.event_store_table, None, personal),
            personal.wait_for_erasure,
        )

    async def handle(envelopes: Sequence[EventEnvelope]) -> None:
        if projector is None:
            raise RuntimeError("the event store client is not open yet")
        await projector.project(envelopes)

    async def opensearch_answers() -> None:
        if not await client.ping():
            raise ConnectionError(f"OpenSearch at {settings.opensearch_url} is down")

    return build_consumer_app(
        settings,
        service=SERVICE,
        handle_batch=handle,
        on_startup=[start],
        on_shutdown=[stack.aclose],
        ready_checks={"opensearch": opensearch_answers},
        personal=lambda: personal,
        description=(
            "Indexes every audio's transcript in the audio-transcriptions alias, "
            "with the stream version as the document's external version; "
            "UserErased strips every document of the user of its personal data."
        ),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve; or `nova-projector-search rebuild` (see `rebuild.py`)."""
    args = parse_command("nova-projector-search", argv)
    settings = ProjectorSettings()
    if args.command == "rebuild":
        raise SystemExit(run_rebuild(settings, args.grace_s))
    if args.command == "redrive":
        aggregate = str(args.aggregate) if args.aggregate else None
        raise SystemExit(run_redrive(settings, SERVICE, aggregate))
    serve(SERVICE, settings, settings.http_port, create_app)
