"""Read access to the event store for consumers: gap repair and redrive.

Given a `PersonalData`, the events come opened (personal fields decrypted, or
erased); without one, as stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from nova_events import EventEnvelope

from .event_items import from_item, sort_key
from .personal import PersonalData

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient


class DynamoDBEventReader:
    """One audio's stream from `nova-event-store`, every page of it."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        page_size: int | None = None,
        personal: PersonalData | None = None,
    ) -> None:
        self._client = client
        self._table = table_name
        self._page_size = page_size
        self._personal = personal

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk >= :sk",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"{aggregate_type}#{aggregate_id}"},
                ":sk": {"S": sort_key(max(from_version, 1))},
            },
            "ConsistentRead": True,
        }
        if self._page_size:
            request["Limit"] = self._page_size
        found: list[EventEnvelope] = []
        while True:
            page = await self._client.query(**request)
            found.extend(from_item(item) for item in page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            request["ExclusiveStartKey"] = last
        if self._personal is not None:
            return await self._personal.open_all(found)
        return found
