"""The event store's items for the reseal: a paginated scan and a conditional
rewrite of one item's `event_data`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from botocore.exceptions import ClientError

from nova_events import EventEnvelope
from nova_platform.event_items import from_item, sort_key, to_item

from ..application.reseal import StoredEvent

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

PAGE_SIZE = 200


class DynamoDBStoredEvents:
    """`StoredEvents` over `nova-event-store`."""

    def __init__(
        self, client: DynamoDBClient, table_name: str, page_size: int = PAGE_SIZE
    ) -> None:
        self._client = client
        self._table = table_name
        self._page_size = page_size

    async def pages(self) -> AsyncIterator[Sequence[StoredEvent]]:
        # Consistent reads: an item is compared with what the scan saw, so
        # the scan should see what is there.
        request: dict[str, Any] = {
            "TableName": self._table,
            "ConsistentRead": True,
            "Limit": self._page_size,
        }
        while True:
            page = await self._client.scan(**request)
            yield [
                StoredEvent(from_item(item), item["event_data"]["S"])
                for item in page.get("Items", [])
            ]
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    async def first_event(
        self, aggregate_type: str, aggregate_id: UUID
    ) -> EventEnvelope | None:
        found = await self._client.get_item(
            TableName=self._table,
            Key={
                "pk": {"S": f"{aggregate_type}#{aggregate_id}"},
                "sk": {"S": sort_key(1)},
            },
            ConsistentRead=True,
        )
        item = found.get("Item")
        return from_item(item) if item is not None else None

    async def replace_data(self, event: StoredEvent, sealed: EventEnvelope) -> bool:
        item = to_item(sealed)
        try:
            # An update of an existing item: the stream says MODIFY, which the
            # relay does not publish.
            await self._client.update_item(
                TableName=self._table,
                Key={"pk": item["pk"], "sk": item["sk"]},
                UpdateExpression="SET event_data = :sealed",
                ConditionExpression="event_data = :stored AND event_id = :event",
                ExpressionAttributeValues={
                    ":sealed": item["event_data"],
                    ":stored": {"S": event.stored_data},
                    ":event": {"S": str(event.envelope.event_id)},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True
