"""`nova-projector-readmodel`: keeps `nova-audio-read-model` up to date."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack

from faststream.asgi import AsgiFastStream
from pydantic_settings import SettingsConfigDict

from nova_events import EventEnvelope
from nova_platform.aws import client_kwargs, session
from nova_platform.consumer import build_consumer_app
from nova_platform.serve import serve
from nova_platform.settings import NovaSettings

from ..adapters.dynamodb_read_model import DynamoDBReadModel
from ..application.projector import ReadModelProjector

SERVICE = "projector-readmodel"


class ProjectorSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8011


def create_app(settings: ProjectorSettings) -> AsgiFastStream:
    stack = AsyncExitStack()
    projector: ReadModelProjector | None = None

    async def start() -> None:
        nonlocal projector
        ddb = await stack.enter_async_context(
            session().client("dynamodb", **client_kwargs(settings))
        )
        projector = ReadModelProjector(
            DynamoDBReadModel(ddb, settings.read_model_table)
        )

    async def handle(envelopes: Sequence[EventEnvelope]) -> None:
        if projector is None:
            raise RuntimeError("the read model client is not open yet")
        await projector.project(envelopes)

    return build_consumer_app(
        settings,
        service=SERVICE,
        handle_batch=handle,
        on_startup=[start],
        on_shutdown=[stack.aclose],
    )


def main() -> None:
    settings = ProjectorSettings()
    serve(SERVICE, settings, settings.http_port, create_app)
