"""`nova-projector-search redrive [--aggregate <audio id>]`.

Rebuilds the document of each audio parked by this projector from the event
store, then lifts its parked mark, so its later events flow again; a parked
user stream has its `UserErased` applied again.
"""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack

from opensearchpy import AsyncOpenSearch

from nova_platform.aws import client_kwargs, session
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.parking import KafkaDynamoDBParking, redrive
from nova_platform.personal import open_personal_data
from nova_platform.settings import NovaSettings

from ..adapters.opensearch_index import OpenSearchIndex
from ..application.projector import SearchProjector


async def redrive_parked(
    settings: NovaSettings, service: str, aggregate_id: str | None = None
) -> list[str]:
    search = AsyncOpenSearch(hosts=[settings.opensearch_url], timeout=30)
    try:
        async with AsyncExitStack() as stack:
            ddb = await stack.enter_async_context(
                session().client("dynamodb", **client_kwargs(settings))
            )
            personal = await open_personal_data(settings, stack, ddb)
            projector = SearchProjector(
                OpenSearchIndex(search, settings.search_alias),
                DynamoDBEventReader(ddb, settings.event_store_table, None, personal),
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
        await search.close()


def run_redrive(settings: NovaSettings, service: str, aggregate_id: str | None) -> int:
    done = asyncio.run(redrive_parked(settings, service, aggregate_id))
    sys.stdout.write(f"redrove {len(done)} aggregate(s): {' '.join(done) or '-'}\n")
    return 0
