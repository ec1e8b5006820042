"""`nova-transcriber`: runs speech-to-text for `AudioProcessingStarted` events.

Walking skeleton: it joins the pipeline as its own consumer group and picks out
the transcription requests. The speech-to-text engines are issue #7.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from faststream.asgi import AsgiFastStream
from pydantic_settings import SettingsConfigDict

from nova_events import AudioProcessingStarted, EventEnvelope
from nova_platform.consumer import build_consumer_app
from nova_platform.serve import serve
from nova_platform.settings import NovaSettings

SERVICE = "transcriber"
logger = logging.getLogger(__name__)


class TranscriberSettings(NovaSettings):
    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8014


async def handle(envelopes: Sequence[EventEnvelope]) -> None:
    wanted = AudioProcessingStarted.event_type()
    for envelope in envelopes:
        if envelope.event_type == wanted:
            logger.warning(
                "transcription requested but no engine is configured yet",
                extra={
                    "audio_id": str(envelope.aggregate_id),
                    "version": envelope.version,
                },
            )


def create_app(settings: TranscriberSettings) -> AsgiFastStream:
    return build_consumer_app(settings, service=SERVICE, handle_batch=handle)


def main() -> None:
    settings = TranscriberSettings()
    serve(SERVICE, settings, settings.http_port, create_app)
