"""Reads `nova-audio-read-model` items."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from boto3.dynamodb.types import TypeDeserializer

from ..application.queries import AudioReadModel

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

_deserializer = TypeDeserializer()


class DynamoDBReadModelRepository:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    async def get(self, audio_id: UUID) -> AudioReadModel | None:
        response = await self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}},
        )
        item = response.get("Item")
        if item is None:
            return None
        plain = {k: _deserializer.deserialize(v) for k, v in item.items()}
        return AudioReadModel.model_validate(plain)
