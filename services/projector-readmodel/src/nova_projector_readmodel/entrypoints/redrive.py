"""`nova-projector-readmodel redrive [--aggregate <audio id>]`.

Rebuilds each audio parked by this projector from the event store, then lifts
its parked mark, so its later events flow again; a parked user stream has its
`UserErased` applied again. Run it once the cause of the parking (a bug, a bad
deployment) is fixed.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from redis.asyncio import Redis

from nova_platform.aws import client_kwargs, session
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.parking import KafkaDynamoDBParking, redrive
from nova_platform.personal import open_personal_data
from nova_platform.projections import ActiveReadModelTable
from nova_platform.settings import NovaSettings

from ..adapters.dynamodb_read_model import DynamoDBReadModel
from ..adapters.redis_cache import RedisCacheInvalidator
from ..application.projector import ReadModelProjector


async def redrive_parked(
    settings: NovaSettings, service: str, aggregate_id: str | None = None
) -> list[str]:
    redis = Redis.from_url(settings.redis_url)
    try:
        async with AsyncExitStack() as stack:
            ddb = await stack.enter_async_context(
                session().client("dynamodb", **client_kwargs(settings))
            )
            personal = await open_personal_data(settings, stack, ddb)
            projector = ReadModelProjector(
                DynamoDBReadModel(ddb, ActiveReadModelTable(ddb, settings)),
                DynamoDBEventReader(ddb, settings.event_store_table, None, personal),
                RedisCacheInvalidator(redis, settings),
                personal.wait_for_erasure,
            )
            parking = KafkaDynamoDBParking(
                None,
                settings.dead_letter_topic,
                ddb,
                settings.parking_table,
                settings.consumer_group(service),
            )
            return await redrive(parking, projector.repair, aggregate_id)
    finally:
        await redis.aclose()


def run_redrive(settings: NovaSettings, service: str, aggregate_id: str | None) -> int:
    done = asyncio.run(redrive_parked(settings, service, aggregate_id))
    sys.stdout.write(f"redrove {len(done)} aggregate(s): {' '.join(done) or '-'}\n")
    return 0
