"""`nova-integration`: the seed's "Event Handler (Integration)".

Walking skeleton: it joins the pipeline as its own consumer group and records
each event it would notify about. Webhook and EventBridge delivery are issue #8.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from faststream.asgi import AsgiFastStream
from pydantic_settings import SettingsConfigDict

from nova_events import EventEnvelope
from nova_platform.consumer import build_consumer_app
from nova_platform.serve import serve
from nova_platform.settings import NovaSettings

SERVICE = "integration"
logger = logging.getLogger(__name__)


class IntegrationSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8013


async def handle(envelopes: Sequence[EventEnvelope]) -> None:
    for envelope in envelopes:
        logger.info(
            "event received; no delivery targets configured",
            extra={
                "event_id": str(envelope.event_id),
                "event_type": envelope.event_type,
                "audio_id": str(envelope.aggregate_id),
                "version": envelope.version,
            },
        )


def create_app(settings: IntegrationSettings) -> AsgiFastStream:
    return build_consumer_app(settings, service=SERVICE, handle_batch=handle)


def main() -> None:
    settings = IntegrationSettings()
    serve(SERVICE, settings, settings.http_port, create_app)
