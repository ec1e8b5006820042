"""`nova-relay`: publishes the event store's committed events to Kafka.

    nova-relay                                   run (one active, others standby)
    nova-relay republish --aggregate <audio id>  publish one audio's events again
    nova-relay republish --since <ISO time> [--until <ISO time>]

Runs beside command-api as its own process, with `/healthz`, `/readyz` and
`/metrics` on NOVA_RELAY_HEALTH_PORT. Republishing is for a consumer that lost
data or an outage longer than the change stream keeps records (24 h); it
produces duplicates, which every consumer drops by (audio id, version).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from uuid import UUID

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from nova_events import AUDIO_EVENTS, AUDIO_FILE, EventEnvelope
from nova_platform.aws import client_kwargs, session
from nova_platform.kafka import (
    make_producer,
    message_headers,
    message_key,
    message_value,
)
from nova_platform.logging import configure_logging
from nova_platform.serve import serve

from ..adapters.dynamodb_event_store import DynamoDBEventStore
from ..adapters.dynamodb_streams import DynamoDBLease, DynamoDBStreamFeed
from ..adapters.kafka_publisher import TransactionalKafkaPublisher
from ..adapters.prometheus_metrics import PrometheusRelayMetrics
from ..application.relay import OutboxRelay
from ..settings import CommandApiSettings


def create_app(settings: CommandApiSettings) -> FastAPI:
    stop = asyncio.Event()
    registry = CollectorRegistry()
    metrics = PrometheusRelayMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            aws = session()
            ddb = await stack.enter_async_context(
                aws.client("dynamodb", **client_kwargs(settings))
            )
            streams = await stack.enter_async_context(
                aws.client("dynamodbstreams", **client_kwargs(settings))
            )
            publisher = TransactionalKafkaPublisher(
                lambda: make_producer(
                    settings, transactional_id=settings.relay_transactional_id
                ),
                settings.kafka_bootstrap_servers,
                settings.events_topic,
                settings.relay_checkpoint_topic,
            )
            stack.push_async_callback(publisher.close)
            relay = OutboxRelay(
                DynamoDBStreamFeed(ddb, streams, settings.event_store_table),
                publisher,
                DynamoDBLease(
                    ddb,
                    settings.relay_lease_table,
                    settings.events_topic,
                    ttl_s=settings.relay_lease_ttl_s,
                ),
                metrics,
                poll_interval_s=settings.relay_poll_interval_s,
            )
            task = asyncio.create_task(relay.run(stop))
            app.state.relay_task = task
            yield
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)

    app = FastAPI(title="Nova outbox relay", lifespan=lifespan, openapi_url=None)

    @app.get("/healthz")
    @app.get("/readyz")
    async def health() -> Response:
        alive = not app.state.relay_task.done()
        return Response(status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def republish(
    settings: CommandApiSettings,
    aggregate: UUID | None,
    since: datetime | None,
    until: datetime | None,
) -> int:
    """Publish stored events again, in version order per audio; returns the count."""
    async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
        store = DynamoDBEventStore(ddb, settings.event_store_table)
        events: list[EventEnvelope] = []
        if aggregate is not None:
            events = await store.get_events(AUDIO_FILE, aggregate)
        elif since is not None:
            for model in AUDIO_EVENTS:
                found = await store.get_events_by_type(
                    model.event_type(), since, limit=10**9
                )
                events.extend(
                    e for e in found if until is None or e.occurred_at < until
                )
    events.sort(key=lambda e: (str(e.aggregate_id), e.version))
    producer = make_producer(settings)
    await producer.start()
    try:
        pending = [
            await producer.send(
                settings.events_topic,
                value=message_value(e),
                key=message_key(e),
                headers=message_headers(e),
            )
            for e in events
        ]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return len(events)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="nova-relay", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    again = commands.add_parser("republish", help="publish stored events again")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--aggregate", type=UUID, help="one audio id")
    which.add_argument("--since", type=datetime.fromisoformat, help="ISO time, UTC")
    again.add_argument("--until", type=datetime.fromisoformat, help="ISO time, UTC")
    args = parser.parse_args(argv)
    settings = CommandApiSettings()
    if args.command != "republish":
        serve("relay", settings, settings.relay_health_port, create_app)
        return
    configure_logging("relay", settings.log_level)
    count = asyncio.run(republish(settings, args.aggregate, args.since, args.until))
    sys.stdout.write(f"republished {count} events to {settings.events_topic}\n")
