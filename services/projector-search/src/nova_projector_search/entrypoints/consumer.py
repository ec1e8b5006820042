"""`nova-projector-search`: keeps the `audio-transcriptions` index up to date."""

from __future__ import annotations

from collections.abc import Sequence

from faststream.asgi import AsgiFastStream
from opensearchpy import AsyncOpenSearch
from pydantic_settings import SettingsConfigDict

from nova_events import EventEnvelope
from nova_platform.consumer import build_consumer_app
from nova_platform.serve import serve
from nova_platform.settings import NovaSettings

from ..adapters.opensearch_index import OpenSearchIndex
from ..application.projector import SearchProjector

SERVICE = "projector-search"


class ProjectorSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

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
    serve(SERVICE, settings, settings.http_port, create_app)
