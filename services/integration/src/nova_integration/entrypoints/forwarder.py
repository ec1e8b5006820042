"""The EventBridge target, when `NOVA_EVENTBRIDGE_BUS` names a bus."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, cast

from nova_platform.aws import client_kwargs, session

from ..adapters.eventbridge import EventBridgeForwarder, EventsClient
from ..adapters.forwarded_ledger import OnceForwarder
from ..application.ports import EventForwarder
from ..settings import IntegrationSettings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient


async def open_forwarder(
    settings: IntegrationSettings, stack: AsyncExitStack, ddb: DynamoDBClient
) -> EventForwarder | None:
    """The forwarder to the configured bus (each event once), closed by `stack`;
    None when no bus is configured."""
    bus = settings.eventbridge_bus
    if not bus:
        return None
    events = await stack.enter_async_context(
        session().client("events", **client_kwargs(settings))
    )
    forwarder = EventBridgeForwarder(
        cast(EventsClient, events), bus, source=settings.eventbridge_source
    )
    return OnceForwarder(forwarder, ddb, settings.webhooks_table, f"eventbridge:{bus}")
