"""Reads `nova-audio-read-model` items (or those of the table a rebuild switched to)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from boto3.dynamodb.types import TypeDeserializer

from nova_platform.projections import TableName, resolve

from ..application.queries import AudioReadModel

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

_deserializer = TypeDeserializer()


class DynamoDBReadModelRepository:
    """`table` is a fixed name or `nova_platform.projections.ActiveReadModelTable`
    (what the service uses), so reads follow a rebuild's switch."""

    def __init__(self, client: DynamoDBClient, table: str | TableName) -> None:
        self._client = client
        self._table = table

    async def get(self, audio_id: UUID) -> AudioReadModel | None:
        response = await self._client.get_item(
            TableName=await resolve(self._table),
            Key={"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}},
        )
        item = response.get("Item")
        if item is None:
            return None
        plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
        return AudioReadModel.model_validate(plain)
