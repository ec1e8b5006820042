"""Reads `nova-audio-read-model` items (or those of the table a rebuild switched to)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from uuid import UUID

from boto3.dynamodb.types import TypeDeserializer
from pydantic import ValidationError

from nova_platform.projections import TableName, resolve

from ..application.queries import (
    AudioReadModel,
    InvalidCursorArgumentError,
    ListPage,
)

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)
_deserializer = TypeDeserializer()

USER_INDEX = "gsi1-user-audio"
_KEY_ATTRIBUTES = ("pk", "sk", "gsi1pk", "gsi1sk")


class DynamoDBReadModelRepository:
    """`table` is a fixed name or `nova_platform.projections.ActiveReadModelTable`
    (what the service uses), so reads follow a rebuild's switch."""

    def __init__(self, client: DynamoDBClient, table: str | TableName) -> None:
        self._client = client
        self._table = table

    async def get(self, audio_id: UUID) -> AudioReadModel | None:
        # Strongly consistent: the cache stores what this returns only if the
        # projector did not invalidate the audio since the read began, which
        # is sound only if the read sees every write made before it.
        response = await self._client.get_item(
            TableName=await resolve(self._table),
            Key={"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}},
            ConsistentRead=True,
        )
        item = response.get("Item")
        return None if item is None else _model(item)

    async def list_by_user(
        self, user_id: UUID, limit: int, after: dict[str, str] | None
    ) -> ListPage:
        """Up to `limit` live items of `user_id`, newest first, over the GSI.

        Erased items are filtered out server side, so one DynamoDB page may hold
        fewer; it keeps querying until `limit` are found or the user has no more.
        `next_position` is DynamoDB's `LastEvaluatedKey` (its string attributes).
        """
        owner = f"USER#{user_id}"
        if after is not None and (
            set(after) != set(_KEY_ATTRIBUTES) or after.get("gsi1pk") != owner
        ):
            raise InvalidCursorArgumentError(
                "the cursor does not belong to this listing"
            )
        request: dict[str, Any] = {
            "TableName": await resolve(self._table),
            "IndexName": USER_INDEX,
            "KeyConditionExpression": "gsi1pk = :owner",
            "FilterExpression": "#status <> :deleted",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":owner": {"S": owner},
                ":deleted": {"S": "deleted"},
            },
            "ScanIndexForward": False,
        }
        if after is not None:
            request["ExclusiveStartKey"] = {k: {"S": v} for k, v in after.items()}
        items: list[AudioReadModel] = []
        while True:
            request["Limit"] = limit - len(items)
            page = await self._client.query(**request)
            found = (_model(item) for item in page.get("Items", []))
            items.extend(audio for audio in found if audio is not None)
            last = page.get("LastEvaluatedKey")
            if not last:
                return ListPage(items, None)
            if len(items) >= limit:
                position = {
                    k: str(_deserializer.deserialize(v)) for k, v in last.items()
                }
                return ListPage(items, position)
            request["ExclusiveStartKey"] = last


def _model(item: dict[str, Any]) -> AudioReadModel | None:
    """The item as a read model; None for one not (fully) projected yet.

    DynamoDB never shows a half-applied update, but the moto emulator applies
    an update's attributes one by one and a read can see an item with only its
    key; that audio counts as not projected yet rather than as an error.
    """
    plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
    try:
        return AudioReadModel.model_validate(plain)
    except ValidationError as exc:
        logger.warning(
            "incomplete read-model item treated as missing",
            extra={"pk": str(plain.get("pk")), "error": str(exc)[:300]},
        )
        return None
