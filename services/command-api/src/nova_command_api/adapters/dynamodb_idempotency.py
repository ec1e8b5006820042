"""Idempotency records in DynamoDB, expiring after a day (TTL on `expires_at`).

One item per key. A claim is a conditional `PutItem` on a free key, or a
conditional `UpdateItem` that takes over a claim whose lease (`lease_until`)
ran out before a response was recorded; `lease_token` fences both, so only the
current holder can record the response or release the key.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import orjson
from botocore.exceptions import ClientError

from ..application.idempotency import IdempotencyRecord, Lease, RecordedResponse

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

RETENTION_S = 24 * 3600
# Each failed attempt means another request claimed, completed or released the
# key in between; a handful of rounds settles it.
_CLAIM_ROUNDS = 8


def _record(item: dict[str, Any]) -> IdempotencyRecord:
    response = None
    if "status" in item:
        response = RecordedResponse(
            status=int(item["status"]["N"]),
            body=item["body"]["B"],
            headers=orjson.loads(item["headers"]["S"]),
        )
    # Records written before leases existed ran with the client's key as their
    # command id, and have no lease: a retry may take them over at once.
    client_key = item["pk"]["S"].split("#", 1)[-1]
    return IdempotencyRecord(
        fingerprint=item["fingerprint"]["S"],
        response=response,
        command_id=item.get("command_id", {}).get("S", client_key),
        lease_expires_at=float(item.get("lease_until", {}).get("N", "0")),
    )


def _refused(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == (
        "ConditionalCheckFailedException"
    )


def _seconds(value: float) -> dict[str, str]:
    return {"N": f"{value:.3f}"}


class DynamoDBIdempotencyStore:
    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock

    async def claim(
        self, key: str, fingerprint: str, lease_s: float
    ) -> Lease | IdempotencyRecord:
        for _ in range(_CLAIM_ROUNDS):
            now = self._clock()
            fresh = await self._put_new(key, fingerprint, now, lease_s)
            if fresh is not None:
                return fresh
            existing = await self.get(key)
            if existing is None:
                continue  # released in between: claim it afresh
            late = existing.response is None and existing.lease_expires_at <= now
            if not late or existing.fingerprint != fingerprint:
                return existing
            taken = await self._take_over(key, existing, now, lease_s)
            if taken is not None:
                return taken
        raise RuntimeError(
            f"idempotency key {key!r} changed hands {_CLAIM_ROUNDS} times during "
            "one claim; retry the request"
        )

    async def _put_new(
        self, key: str, fingerprint: str, now: float, lease_s: float
    ) -> Lease | None:
        """Claim a free (or expired) key; None if it is held."""
        lease = Lease(
            token=str(uuid4()),
            command_id=str(uuid4()),
            expires_at=now + lease_s,
            taken_over=False,
        )
        try:
            await self._client.put_item(
                TableName=self._table,
                Item={
                    "pk": {"S": key},
                    "fingerprint": {"S": fingerprint},
                    "command_id": {"S": lease.command_id},
                    "lease_token": {"S": lease.token},
                    "lease_until": _seconds(lease.expires_at),
                    "expires_at": {"N": str(int(now) + RETENTION_S)},
                },
                # TTL deletes lazily: a record past `expires_at` is free already.
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
                ExpressionAttributeValues={":now": {"N": str(int(now))}},
            )
        except ClientError as exc:
            if not _refused(exc):
                raise
            return None
        return lease

    async def _take_over(
        self, key: str, late: IdempotencyRecord, now: float, lease_s: float
    ) -> Lease | None:
        """Take over a claim whose lease ran out; None if someone else moved it."""
        lease = Lease(
            token=str(uuid4()),
            command_id=late.command_id,
            expires_at=now + lease_s,
            taken_over=True,
        )
        try:
            await self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": key}},
                UpdateExpression="SET lease_token = :token, lease_until = :until, "
                "command_id = :command",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#s) "
                "AND fingerprint = :fp AND (attribute_not_exists(lease_until) "
                "OR lease_until <= :now)",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":token": {"S": lease.token},
                    ":until": _seconds(lease.expires_at),
                    ":command": {"S": lease.command_id},
                    ":fp": {"S": late.fingerprint},
                    ":now": _seconds(now),
                },
            )
        except ClientError as exc:
            if not _refused(exc):
                raise
            return None
        return lease

    async def get(self, key: str) -> IdempotencyRecord | None:
        found = await self._client.get_item(
            TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True
        )
        item = found.get("Item")
        if item is None or int(item["expires_at"]["N"]) <= int(self._clock()):
            return None
        return _record(item)

    async def complete(
        self, key: str, lease: Lease, response: RecordedResponse
    ) -> bool:
        try:
            await self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": key}},
                UpdateExpression="SET #s = :s, body = :b, headers = :h",
                ConditionExpression="lease_token = :token",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":s": {"N": str(response.status)},
                    ":b": {"B": response.body},
                    ":h": {"S": orjson.dumps(response.headers).decode()},
                    ":token": {"S": lease.token},
                },
            )
        except ClientError as exc:
            if not _refused(exc):
                raise
            return False
        return True

    async def release(self, key: str, lease: Lease) -> None:
        try:
            await self._client.delete_item(
                TableName=self._table,
                Key={"pk": {"S": key}},
                ConditionExpression="lease_token = :token",
                ExpressionAttributeValues={":token": {"S": lease.token}},
            )
        except ClientError as exc:
            if not _refused(exc):
                raise
