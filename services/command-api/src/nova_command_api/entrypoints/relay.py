"""`nova-relay`: publishes the event store's committed events to Kafka.

    nova-relay                                   run (one active, others standby)
    nova-relay republish --aggregate <audio id>  publish one audio's events again
    nova-relay republish --since <ISO time> [--until <ISO time>]
    nova-relay reseal [--dry-run]                seal events stored before sealing

Runs beside command-api as its own process, with `/healthz`, `/readyz` and
`/metrics` on NOVA_RELAY_HEALTH_PORT. Republishing is for a consumer that lost
data or an outage longer than the change stream keeps records (24 h); it
produces duplicates, which every consumer drops by (audio id, version).

A time range covers events with since <= occurred_at < until (until defaults
to now). Times are ISO 8601; one without an offset is UTC. Each audio's events
of the range go once, in version order; the range is read page by page.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from uuid import UUID

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from nova_events import AUDIO_FILE, EventEnvelope
from nova_events.registry import REGISTRY
from nova_platform.aws import client_kwargs, session
from nova_platform.kafka import (
    kafka_client_options,
    make_producer,
    message_headers,
    message_key,
    message_value,
)
from nova_platform.logging import configure_logging
from nova_platform.serve import serve
from nova_platform.stopping import stop_task

from ..adapters.dynamodb_event_store import DynamoDBEventStore
from ..adapters.dynamodb_streams import DynamoDBLease, DynamoDBStreamFeed
from ..adapters.kafka_publisher import TransactionalKafkaPublisher
from ..adapters.prometheus_metrics import PrometheusRelayMetrics
from ..application.relay import OutboxRelay
from ..settings import CommandApiSettings
from .reseal import __doc__ as reseal_doc
from .reseal import print_report, reseal

STOP_GRACE_S = 10.0
"""How long a stopping relay may take to end its pass and release the lease
before it is cancelled (then `stop_task`'s backstop bounds the wait)."""


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
                kafka_client_options(settings),
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
            # Not asyncio.wait_for: on its timeout it cancels the relay and then
            # waits without a bound, and on Python 3.11 that cancellation can
            # be lost inside a Kafka or DynamoDB call (see nova_platform.stopping).
            await stop_task(task, what="the outbox relay", grace_s=STOP_GRACE_S)

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


REPUBLISH_PAGE_SIZE = 500
"""Index items a time-range republish reads per query."""

IN_FLIGHT = 1000
"""Sends a republish leaves unacknowledged before waiting for them."""

REMEMBERED_AUDIOS = 10_000
"""Audios a time-range republish remembers as sent, to skip re-reading them."""


def in_utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive one is taken as UTC already."""
    if moment.utcoffset() is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_time(text: str) -> datetime:
    """An ISO 8601 time from the command line, in UTC (no offset means UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time; write e.g. 2025-01-06T09:00:00Z, "
            "2025-01-06T18:00:00+09:00, or 2025-01-06T09:00 for UTC"
        ) from None
    return in_utc(moment)


class _Sender:
    """Sends events without awaiting each one, at most `window` in flight.

    One idempotent producer keeps the order of the sends per partition, hence
    per audio (the key)."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, window: int = IN_FLIGHT
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._window = window
        self._in_flight: list[asyncio.Future[RecordMetadata]] = []
        self.sent = 0

    async def send(self, events: Sequence[EventEnvelope]) -> None:
        for event in events:
            self._in_flight.append(
                await self._producer.send(
                    self._topic,
                    value=message_value(event),
                    key=message_key(event),
                    headers=message_headers(event),
                )
            )
            if len(self._in_flight) >= self._window:
                await self.flush()

    async def flush(self) -> None:
        in_flight, self._in_flight = self._in_flight, []
        await asyncio.gather(*in_flight)
        self.sent += len(in_flight)


async def republish(
    settings: CommandApiSettings,
    aggregate: UUID | None,
    since: datetime | None,
    until: datetime | None,
    *,
    page_size: int = REPUBLISH_PAGE_SIZE,
) -> int:
    """Publish stored events again, in version order per audio; returns the count.

    With `aggregate`, that audio's whole stream. Otherwise every event with
    `since <= occurred_at < until` (naive times are UTC; `until` defaults to
    now), read page by page and sent as it goes, so memory stays bounded
    whatever the range holds.
    """
    if aggregate is None and since is None:
        raise ValueError("republish needs an aggregate or a since time")
    producer = make_producer(settings)
    sender = _Sender(producer, settings.events_topic)
    async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
        store = DynamoDBEventStore(ddb, settings.event_store_table, page_size)
        await producer.start()
        try:
            if aggregate is not None:
                await sender.send(await store.get_events(AUDIO_FILE, aggregate))
            elif since is not None:
                end = in_utc(until) if until is not None else datetime.now(UTC)
                await _republish_range(store, sender, in_utc(since), end)
            await sender.flush()
        finally:
            await producer.stop()
    return sender.sent


async def _republish_range(
    store: DynamoDBEventStore, sender: _Sender, since: datetime, until: datetime
) -> None:
    # Kafka keeps order per key, so only each audio's own events need version
    # order. The index yields them by type and time, which is not that order
    # (writers' clocks differ), so an audio's events of the range are read from
    # its stream, in version order, and sent when the scan meets the first of
    # them: each audio once, without holding a set of every audio in the range.
    # An event the index does not show yet (committed a moment before `until`)
    # may be left out with its audio; the relay publishes those anyway.
    recent: dict[UUID, None] = {}
    for event_type in REGISTRY.event_types():
        async for found in store.iter_events_by_type(event_type, since, until):
            audio_id = found.aggregate_id
            if audio_id in recent:
                continue
            stream = [
                e
                for e in await store.get_events(found.aggregate_type, audio_id)
                if since <= e.occurred_at < until
            ]
            if not stream or stream[0].version != found.version:
                continue  # sent, or to be sent, where the scan meets stream[0]
            await sender.send(stream)
            recent[audio_id] = None
            if len(recent) > REMEMBERED_AUDIOS:
                del recent[next(iter(recent))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="nova-relay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command")
    again = commands.add_parser("republish", help="publish stored events again")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--aggregate", type=UUID, help="one audio id")
    which.add_argument(
        "--since",
        type=utc_time,
        help="ISO 8601 time, e.g. 2025-01-06T09:00:00+09:00; no offset means UTC",
    )
    again.add_argument(
        "--until",
        type=utc_time,
        help="ISO 8601 time, excluded (default: now); only with --since",
    )
    resealing = commands.add_parser(
        "reseal",
        help="seal, in place, the events stored before sealing existed",
        description=reseal_doc,
    )
    resealing.add_argument(
        "--dry-run", action="store_true", help="only count; write nothing"
    )
    args = parser.parse_args(argv)
    if args.command == "republish" and args.until is not None:
        if args.since is None:
            again.error("--until only bounds --since; drop it or add --since")
        if args.since >= args.until:
            again.error(
                f"--since {args.since.isoformat()} is not before --until "
                f"{args.until.isoformat()} (both in UTC)"
            )
    settings = CommandApiSettings()
    if args.command is None:
        serve("relay", settings, settings.relay_health_port, create_app)
        return
    configure_logging("relay", settings.log_level)
    if args.command == "reseal":
        report = asyncio.run(reseal(settings, dry_run=args.dry_run))
        raise SystemExit(print_report(report))
    count = asyncio.run(republish(settings, args.aggregate, args.since, args.until))
    sys.stdout.write(f"republished {count} events to {settings.events_topic}\n")
