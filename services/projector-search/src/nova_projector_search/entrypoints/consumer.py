"""`nova-projector-search`: keeps the `audio-transcriptions` index up to date."""

from __future__ import annotations

from collections.abc import Sequence

import uvicorn
from faststream.asgi import AsgiFastStream
from opensearchpy import AsyncOpenSearch
from pydantic_settings import SettingsConfigDict

from nova_events import EventEnvelope
from nova_platform.consumer import build_consumer_app
from nova_platform.logging import configure_logging
from nova_platform.settings import NovaSettings

from ..adapters.opensearch_index import OpenSearchIndex
from ..application.projector import SearchProjector

SERVICE = "projector-search"


class ProjectorSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_host: str = "0.0.0.0"
    http_port: int = 8012


def create_app(settings: ProjectorSettings) -> AsgiFastStream:
    client = AsyncOpenSearch(hosts=[settings.opensearch_url], timeout=30)
    projector = SearchProjector(OpenSearchIndex(client, settings.search_alias))

    async def handle(envelopes: Sequence[EventEnvelope]) -> None:
        await projector.project(envelopes)

    return build_consumer_app(
        settings, service=SERVICE, handle_batch=handle, on_shutdown=[client.close]
    )


def main() -> None:
    settings = ProjectorSettings()
    configure_logging(SERVICE, settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
    )
