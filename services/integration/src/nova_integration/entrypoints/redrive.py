"""`nova-integration redrive [--aggregate <audio id>]`.

An audio the integration consumer parked (its owner unknown, an event
EventBridge rejects) has its events fanned out again from the event store,
then its parked mark is lifted so its later events flow again; a parked user
stream has its `UserErased` delivered and the user's deliveries purged again.
Deliveries already stored are not stored twice, so nothing already sent is
sent again; a running `nova-integration` finds the new deliveries within its
poll interval and sends them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from uuid import UUID

from nova_platform.aws import client_kwargs, session
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.parking import KafkaDynamoDBParking, redrive
from nova_platform.personal import open_personal_data
from nova_platform.webhooks.dynamodb import DynamoDBWebhookStore

from ..adapters.audio_owners import EventStoreAudioOwners
from ..application.fanout import Fanout
from ..settings import IntegrationSettings
from .forwarder import open_forwarder


def parse_command(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nova-integration", description="Without a command: consume and serve."
    )
    commands = parser.add_subparsers(dest="command")
    command = commands.add_parser(
        "redrive",
        help="fan parked audios out again from the event store and unpark them",
        description=__doc__,
    )
    command.add_argument(
        "--aggregate", type=UUID, help="one audio id, or a user id (`UserErased`)"
    )
    return parser.parse_args(argv)


async def redrive_parked(
    settings: IntegrationSettings, service: str, aggregate_id: str | None = None
) -> list[str]:
    async with AsyncExitStack() as stack:
        aws = session()
        ddb = await stack.enter_async_context(
            aws.client("dynamodb", **client_kwargs(settings))
        )
        forwarder = await open_forwarder(settings, stack, ddb)
        personal = await open_personal_data(settings, stack, ddb)
        fanout = Fanout(
            DynamoDBWebhookStore(ddb, settings.webhooks_table),
            EventStoreAudioOwners(ddb, settings.event_store_table, personal=personal),
            dispatcher=None,
            forwarder=forwarder,
            wait_for_erasure=personal.wait_for_erasure,
        )
        reader = DynamoDBEventReader(ddb, settings.event_store_table, None, personal)

        async def repair(aggregate_type: str, aggregate_id: UUID) -> None:
            await fanout(await reader.get_events(aggregate_type, aggregate_id))

        parking = KafkaDynamoDBParking(
            None,
            settings.dead_letter_topic,
            ddb,
            settings.parking_table,
            settings.consumer_group(service),
        )
        return await redrive(parking, repair, aggregate_id)


def run_redrive(
    settings: IntegrationSettings, service: str, aggregate_id: str | None
) -> int:
    done = asyncio.run(redrive_parked(settings, service, aggregate_id))
    sys.stdout.write(f"redrove {len(done)} aggregate(s): {' '.join(done) or '-'}\n")
    return 0
