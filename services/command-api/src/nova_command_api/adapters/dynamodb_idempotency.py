"""Idempotency records in DynamoDB, expiring after a day (TTL on `expires_at`)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from botocore.exceptions import ClientError

from ..application.idempotency import IdempotencyRecord, RecordedResponse

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

RETENTION_S = 24 * 3600


def _record(item: dict[str, Any]) -> IdempotencyRecord:
    response = None
    if "status" in item:
        response = RecordedResponse(
            status=int(item["status"]["N"]),
            body=item["body"]["B"],
            headers=orjson.loads(item["headers"]["S"]),
        )
    return IdempotencyRecord(item["fingerprint"]["S"], response)


class DynamoDBIdempotencyStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    async def claim(self, key: str, fingerprint: str) -> IdempotencyRecord | None:
        try:
            await self._client.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": key},
                    "fingerprint": {"S": fingerprint},
                    "expires_at": {"N": str(int(time.time()) + RETENTION_S)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            existing = await self.get(key)
            if existing is None:  # released in between: try once more
                return await self.claim(key, fingerprint)
            return existing
        return None

    async def get(self, key: str) -> IdempotencyRecord | None:
        found = await self._client.get_item(
            TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True
        )
        item = found.get("Item")
        return _record(item) if item else None

    async def complete(self, key: str, response: RecordedResponse) -> None:
        await self._client.update_item(
            TableName=self._table,
            Key={"pk": {"S": key}},
            UpdateExpression="SET #s = :s, body = :b, headers = :h",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={
                ":s": {"N": str(response.status)},
                ":b": {"B": response.body},
                ":h": {"S": orjson.dumps(response.headers).decode()},
            },
        )

    async def release(self, key: str) -> None:
        await self._client.delete_item(TableName=self._table, Key={"pk": {"S": key}})
