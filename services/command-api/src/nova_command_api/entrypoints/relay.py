"""`nova-relay`: publishes the event store's committed events to Kafka.

Runs beside command-api as its own process, with `/healthz` and `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Response

from nova_platform.aws import client_kwargs, session
from nova_platform.kafka import make_producer
from nova_platform.serve import serve

from ..adapters.dynamodb_streams import DynamoDBCheckpoints, DynamoDBStreamFeed
from ..adapters.kafka_publisher import KafkaPublisher
from ..application.relay import OutboxRelay
from ..settings import CommandApiSettings


def create_app(settings: CommandApiSettings) -> FastAPI:
    stop = asyncio.Event()

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
            producer = make_producer(settings)
            await producer.start()
            stack.push_async_callback(producer.stop)
            relay = OutboxRelay(
                DynamoDBStreamFeed(ddb, streams, settings.event_store_table),
                DynamoDBCheckpoints(ddb, settings.outbox_checkpoint_table),
                KafkaPublisher(producer, settings.events_topic),
                poll_interval_s=settings.relay_poll_interval_s,
            )
            task = asyncio.create_task(relay.run(stop))
            app.state.relay_task = task
            yield
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)

    app = FastAPI(title="Nova outbox relay", lifespan=lifespan, openapi_url=None)

    @app.get("/healthz")
    @app.get("/readyz")
    async def health() -> Response:
        alive = not app.state.relay_task.done()
        return Response(status_code=200 if alive else 503)

    return app


def main() -> None:
    settings = CommandApiSettings()
    serve("relay", settings, settings.relay_health_port, create_app)
