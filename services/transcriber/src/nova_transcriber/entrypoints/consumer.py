"""`nova-transcriber`: runs speech-to-text for `AudioProcessingStarted` events.

It consumes the events topic as group `nova-transcriber` (more instances share
the partitions), looks each requested audio up in the event store, runs the
configured engine (`NOVA_TRANSCRIBER_ENGINE`: `whisper` locally, `aws` for
Amazon Transcribe) and submits the result to command-api, which appends the
events. The offset is committed only after command-api took every result of
the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

import httpx
from faststream.asgi import AsgiFastStream
from prometheus_client import CollectorRegistry, Histogram
from redis.asyncio import Redis

from nova_events import EventEnvelope
from nova_platform.aws import client_kwargs, session
from nova_platform.batches import event_context
from nova_platform.consumer import READY_TIMEOUT_S, build_consumer_app
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.personal import PersonalData, open_personal_data
from nova_platform.serve import serve

from ..adapters.aws_transcribe import AmazonTranscribeGateway
from ..adapters.command_api import HttpCommandApi, dev_token_provider
from ..adapters.event_store_catalog import EventStoreCatalog
from ..adapters.redis_progress import RedisProgressStore
from ..adapters.s3_audio import S3AudioSource
from ..adapters.whisper import WhisperGateway, load_model
from ..application.ports import IAudioTranscriptionGateway
from ..application.service import TranscriptionService
from ..settings import TranscriberSettings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient
    from types_aiobotocore_s3 import S3Client

SERVICE = "transcriber"
MAX_RECORDS = 1
"""One request per batch: the consumer must poll again within Kafka's
max.poll.interval, which is set just above the longest one request may take
(`TranscriberSettings.longest_request_s`), not several."""
STUCK_MARGIN_S = 60.0
"""`/healthz` fails once a request has run this much longer than the longest
one may take: its handler is stuck, and Kubernetes restarts the instance."""
PROGRESS_TIMEOUT_S = 0.5
"""Progress is best effort: a slow Redis is given up on quickly."""

__all__ = ["TranscriberSettings", "create_app", "main"]


def token_provider(settings: TranscriberSettings) -> Callable[[], str]:
    """NOVA_TRANSCRIBER_TOKEN as it is, else development tokens from the secret."""
    if settings.transcriber_token is not None:
        token = settings.transcriber_token.get_secret_value()
        return lambda: token
    if settings.jwt_secret:
        return dev_token_provider(settings.jwt_secret)
    raise SystemExit(
        "nova-transcriber needs a token for command-api: set NOVA_TRANSCRIBER_TOKEN "
        "(scope `service:transcriber`) or NOVA_JWT_SECRET (development)"
    )


async def open_engine(
    settings: TranscriberSettings, stack: AsyncExitStack, s3: S3Client
) -> IAudioTranscriptionGateway:
    """The configured engine, with its clients closed by `stack`."""
    if settings.transcriber_engine == "aws":
        transcribe = await stack.enter_async_context(
            session().client("transcribe", **client_kwargs(settings))
        )
        return AmazonTranscribeGateway(
            transcribe,
            s3,
            settings.audio_bucket,
            settings.transcribe_output_bucket or settings.audio_bucket,
            poll_interval_s=settings.transcribe_poll_interval_s,
            timeout_s=settings.transcribe_timeout_s,
        )
    model = await asyncio.to_thread(
        load_model, settings.whisper_model_dir, settings.whisper_cpu_threads
    )
    return WhisperGateway(
        model,
        S3AudioSource(s3, settings.audio_bucket),
        settings.transcriber_max_duration_s,
    )


def create_app(settings: TranscriberSettings) -> AsgiFastStream:
    token = token_provider(settings)
    stack = AsyncExitStack()
    service: TranscriptionService | None = None
    registry = CollectorRegistry()
    durations = Histogram(
        "nova_transcription_seconds",
        "Time the engine took per recognition, by outcome",
        ["outcome"],
        buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
        registry=registry,
    )

    ddb: DynamoDBClient | None = None
    s3: S3Client | None = None
    http: httpx.AsyncClient | None = None
    personal: PersonalData | None = None

    async def start() -> None:
        nonlocal service, ddb, s3, http, personal
        ddb = await stack.enter_async_context(
            session().client("dynamodb", **client_kwargs(settings))
        )
        # AudioCreated's S3 key is personal: the catalog opens it.
        personal = await open_personal_data(settings, stack, ddb)
        s3 = await stack.enter_async_context(
            session().client("s3", **client_kwargs(settings))
        )
        http = httpx.AsyncClient(
            base_url=settings.command_api_url, timeout=settings.command_api_timeout_s
        )
        stack.push_async_callback(http.aclose)
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=PROGRESS_TIMEOUT_S,
            socket_connect_timeout=PROGRESS_TIMEOUT_S,
        )
        stack.push_async_callback(redis.aclose)
        service = TranscriptionService(
            EventStoreCatalog(
                DynamoDBEventReader(ddb, settings.event_store_table, None, personal)
            ),
            await open_engine(settings, stack, s3),
            HttpCommandApi(http, token),
            settings.transcriber_max_duration_s,
            progress=RedisProgressStore(redis, settings),
            on_transcribed=lambda outcome, seconds: durations.labels(outcome).observe(
                seconds
            ),
        )

    async def handle(envelopes: Sequence[EventEnvelope]) -> None:
        if service is None:
            raise RuntimeError("the transcriber's clients are not open yet")
        for envelope in envelopes:
            with event_context(envelope):
                await service.handle([envelope])

    async def event_store_answers() -> None:
        if ddb is None:
            raise RuntimeError("the transcriber's clients are not open yet")
        await ddb.describe_table(TableName=settings.event_store_table)

    async def audio_bucket_answers() -> None:
        if s3 is None:
            raise RuntimeError("the transcriber's clients are not open yet")
        await s3.head_bucket(Bucket=settings.audio_bucket)

    async def command_api_answers() -> None:
        if http is None:
            raise RuntimeError("the transcriber's clients are not open yet")
        (await http.get("/healthz", timeout=READY_TIMEOUT_S)).raise_for_status()

    return build_consumer_app(
        settings,
        service=SERVICE,
        handle_batch=handle,
        on_startup=[start],
        on_shutdown=[stack.aclose],
        max_records=MAX_RECORDS,
        max_poll_interval_ms=int(settings.longest_request_s * 1000),
        stuck_after_s=settings.longest_request_s + STUCK_MARGIN_S,
        description=(
            "Transcribes the audio of every AudioProcessingStarted and sends the "
            "transcript or the failure to command-api; other events are skipped."
        ),
        ready_checks={
            "event_store": event_store_answers,
            "audio_bucket": audio_bucket_answers,
            "command_api": command_api_answers,
        },
        registry=registry,
        personal=lambda: personal,
    )


def main() -> None:
    settings = TranscriberSettings()
    serve(SERVICE, settings, settings.http_port, create_app)
