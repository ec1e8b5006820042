"""`nova-integration`: the seed's "Event Handler (Integration)".

It consumes every event as group `nova-integration`, stores a delivery for
each webhook subscription that wants it (see `application.fanout`), forwards
the public payloads to EventBridge when a bus is configured, and runs the
dispatcher that sends the deliveries (see `application.dispatcher`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from functools import partial

from faststream.asgi import AsgiFastStream
from prometheus_client import CollectorRegistry, Counter, Histogram

from nova_events import EventEnvelope
from nova_platform.aws import client_kwargs, session
from nova_platform.consumer import build_consumer_app
from nova_platform.personal import PersonalData, open_personal_data
from nova_platform.serve import serve
from nova_platform.stopping import stop_task
from nova_platform.webhooks.dynamodb import DynamoDBWebhookStore

from ..adapters.audio_owners import EventStoreAudioOwners
from ..adapters.http_sender import HttpWebhookSender
from ..application.dispatcher import Dispatcher
from ..application.fanout import Fanout
from ..domain.retry import RetryPolicy, SendResult, Verdict
from ..settings import IntegrationSettings
from .forwarder import open_forwarder
from .redrive import parse_command, run_redrive

SERVICE = "integration"
MAX_RECORDS = 100
"""Records per batch. Each event costs several writes (its deliveries, then
each attempt's claim and outcome), so a batch of the default 500 took longer
than the time between two restarts or rebalances under the fault test and
never committed; a smaller batch commits its progress before the next one."""


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "nova_webhook_attempts",
            "Webhook requests, by what they decided",
            ["outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "nova_webhook_attempt_seconds",
            "Duration of webhook requests, answered or not",
            registry=registry,
        )

    def record(self, verdict: Verdict, result: SendResult) -> None:
        self.attempts.labels(outcome=verdict.value).inc()
        self.latency.observe(result.latency_ms / 1000)


def create_app(settings: IntegrationSettings) -> AsgiFastStream:
    registry = CollectorRegistry()
    metrics = WebhookMetrics(registry)
    stack = AsyncExitStack()
    fanout: Fanout | None = None
    dispatcher: Dispatcher | None = None
    dispatching: asyncio.Task[None] | None = None
    webhooks_table: Callable[[], Awaitable[object]] | None = None
    personal: PersonalData | None = None

    async def start() -> None:
        nonlocal fanout, dispatcher, dispatching, webhooks_table, personal
        aws = session()
        ddb = await stack.enter_async_context(
            aws.client("dynamodb", **client_kwargs(settings))
        )
        personal = await open_personal_data(settings, stack, ddb)
        webhooks_table = partial(ddb.describe_table, TableName=settings.webhooks_table)
        http = await stack.enter_async_context(
            HttpWebhookSender.client(settings.webhook_timeout_s)
        )
        store = DynamoDBWebhookStore(ddb, settings.webhooks_table)
        sender = HttpWebhookSender(
            http,
            allow_private=settings.webhook_allow_private_targets,
            timeout_s=settings.webhook_timeout_s,
        )
        policy = RetryPolicy(
            max_attempts=settings.webhook_max_attempts,
            base_delay_s=settings.webhook_base_delay_s,
            max_delay_s=settings.webhook_max_delay_s,
        )
        dispatcher = Dispatcher(
            store,
            sender,
            policy,
            concurrency=settings.webhook_concurrency,
            per_subscription=settings.webhook_per_subscription,
            lease_s=settings.webhook_timeout_s * 3 + 5,
            poll_interval_s=settings.webhook_poll_interval_s,
            on_attempt=metrics.record,
        )
        forwarder = await open_forwarder(settings, stack, ddb)
        owners = EventStoreAudioOwners(
            ddb, settings.event_store_table, personal=personal
        )
        fanout = Fanout(
            store,
            owners,
            dispatcher,
            forwarder,
            wait_for_erasure=personal.wait_for_erasure,
        )
        dispatching = asyncio.create_task(dispatcher.run(), name="webhook-dispatcher")

    async def stop() -> None:
        if dispatcher is not None and dispatching is not None:
            # The signal first: a cancellation alone can be lost (see stopping).
            dispatcher.stop()
            await stop_task(
                dispatching,
                what="the webhook dispatcher",
                grace_s=dispatcher.stop_within_s,
            )
        await stack.aclose()

    async def handle(envelopes: Sequence[EventEnvelope]) -> None:
        if fanout is None:
            raise RuntimeError("the integration consumer started before its fan-out")
        await fanout(envelopes)

    async def webhooks_table_answers() -> None:
        if webhooks_table is None:
            raise RuntimeError("the integration consumer has not started yet")
        await webhooks_table()

    return build_consumer_app(
        settings,
        service=SERVICE,
        handle_batch=handle,
        on_startup=[start],
        on_shutdown=[stop],
        ready_checks={"webhooks": webhooks_table_answers},
        max_records=MAX_RECORDS,
        personal=lambda: personal,
        description=(
            "Turns every event into signed webhook deliveries for the subscriptions "
            "of the audio's owner and, when configured, EventBridge entries."
        ),
        registry=registry,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve; or `nova-integration redrive` (see `redrive.py`)."""
    args = parse_command(argv)
    settings = IntegrationSettings()
    if args.command == "redrive":
        aggregate = str(args.aggregate) if args.aggregate else None
        raise SystemExit(run_redrive(settings, SERVICE, aggregate))
    serve(SERVICE, settings, settings.http_port, create_app)
