"""`WebhookStore` on the `nova-webhooks` DynamoDB table.

Items (one table, string keys `pk`, `sk`, sparse GSI `gsi1-pending`):

- subscription: ``pk = USER#<user id>``, ``sk = SUB#<subscription id>``; a
  user's subscriptions are one strongly consistent `Query`, so integration sees
  a new subscription on its next batch (a GSI could lag).
- its pointer: ``pk = SUB#<subscription id>``, ``sk = SUB`` (the owner), so a
  subscription is found by id alone. Both are written in one transaction.
- delivery: ``pk = SUB#<subscription id>``, ``sk = DLV#<audio id>#<sequence>``;
  one audio's deliveries (a lane) are one `Query` in order. It is created with
  a conditional put, so an event delivered twice by Kafka makes one delivery.
  While it is pending it carries ``gsi1pk = PENDING#<shard>`` and ``gsi1sk =
  <next attempt time>#...``, which is how instances find work that a stopped
  instance left; a delivered or parked delivery leaves the index. Its body is
  written by that put and afterwards only by an erasure's purge
  (`replace_body`): every other write is an `UpdateItem` of the state
  attributes alone, so a send in flight during a purge cannot put the
  unredacted body back, and none recreates a deleted delivery.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

from botocore.exceptions import ClientError

from .model import (
    Attempt,
    Delivery,
    DeliveryStatus,
    Subscription,
    SubscriptionNotFoundError,
)
from .store import decode_cursor, delivery_sort_key, encode_cursor

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

PENDING_INDEX = "gsi1-pending"
PENDING_SHARDS = 4
ADD_CONCURRENCY = 16


class DynamoDBWebhookStore:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    async def add_subscription(self, subscription: Subscription) -> None:
        sid = str(subscription.subscription_id)
        item: dict[str, Any] = {
            "pk": {"S": f"USER#{subscription.user_id}"},
            "sk": {"S": f"SUB#{sid}"},
            "url": {"S": subscription.url},
            "event_types": {"L": [{"S": t} for t in sorted(subscription.event_types)]},
            "secret": {"S": subscription.secret},
            "created_at": {"N": repr(subscription.created_at)},
            "description": {"S": subscription.description},
        }
        pointer: dict[str, Any] = {
            "pk": {"S": f"SUB#{sid}"},
            "sk": {"S": "SUB"},
            "user_id": {"S": str(subscription.user_id)},
        }
        await self._ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": self._table, "Item": item}},
                {"Put": {"TableName": self._table, "Item": pointer}},
            ]
        )

    async def get_subscription(self, subscription_id: UUID) -> Subscription | None:
        pointer = await self._ddb.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"SUB#{subscription_id}"}, "sk": {"S": "SUB"}},
            ConsistentRead=True,
        )
        if "Item" not in pointer:
            return None
        user_id = pointer["Item"]["user_id"]["S"]
        found = await self._ddb.get_item(
            TableName=self._table,
            Key={"pk": {"S": f"USER#{user_id}"}, "sk": {"S": f"SUB#{subscription_id}"}},
            ConsistentRead=True,
        )
        return _subscription(found["Item"]) if "Item" in found else None

    async def subscriptions_of(self, user_id: UUID | None) -> list[Subscription]:
        if user_id is None:
            items = await self._all(
                "scan",
                {
                    "FilterExpression": "begins_with(pk, :u) AND begins_with(sk, :s)",
                    "ExpressionAttributeValues": {
                        ":u": {"S": "USER#"},
                        ":s": {"S": "SUB#"},
                    },
                    "ConsistentRead": True,
                },
            )
        else:
            items = await self._all(
                "query",
                {
                    "KeyConditionExpression": "pk = :u AND begins_with(sk, :s)",
                    "ExpressionAttributeValues": {
                        ":u": {"S": f"USER#{user_id}"},
                        ":s": {"S": "SUB#"},
                    },
                    "ConsistentRead": True,
                },
            )
        found = [_subscription(item) for item in items]
        return sorted(found, key=lambda s: (s.created_at, str(s.subscription_id)))

    async def delete_subscription(self, subscription_id: UUID) -> None:
        subscription = await self.get_subscription(subscription_id)
        if subscription is None:
            raise SubscriptionNotFoundError(subscription_id)
        await self._ddb.transact_write_items(
            TransactItems=[
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": {
                            "pk": {"S": f"USER#{subscription.user_id}"},
                            "sk": {"S": f"SUB#{subscription_id}"},
                        },
                    }
                },
                {
                    "Delete": {
                        "TableName": self._table,
                        "Key": {
                            "pk": {"S": f"SUB#{subscription_id}"},
                            "sk": {"S": "SUB"},
                        },
                    }
                },
            ]
        )

    async def add_deliveries(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        # One conditional put each (a batch write cannot be conditional), at
        # most `ADD_CONCURRENCY` at a time.
        slots = asyncio.Semaphore(ADD_CONCURRENCY)

        async def add(delivery: Delivery) -> bool:
            async with slots:
                try:
                    await self._ddb.put_item(
                        TableName=self._table,
                        Item=_item(delivery),
                        ConditionExpression="attribute_not_exists(pk)",
                    )
                except ClientError as exc:
                    code = exc.response["Error"]["Code"]
                    if code != "ConditionalCheckFailedException":
                        raise
                    return False
                return True

        added = await asyncio.gather(*(add(d) for d in deliveries))
        return [d for d, new in zip(deliveries, added, strict=True) if new]

    async def lane(self, subscription_id: UUID, audio_id: UUID) -> list[Delivery]:
        items = await self._all(
            "query",
            {
                "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
                "ExpressionAttributeValues": {
                    ":p": {"S": f"SUB#{subscription_id}"},
                    ":s": {"S": f"DLV#{audio_id}#"},
                },
                "ConsistentRead": True,
            },
        )
        return [_delivery(item) for item in items]

    async def get_delivery(
        self, subscription_id: UUID, audio_id: UUID, sequence: int
    ) -> Delivery | None:
        found = await self._ddb.get_item(
            TableName=self._table,
            Key=_key(subscription_id, audio_id, sequence),
            ConsistentRead=True,
        )
        return _delivery(found["Item"]) if "Item" in found else None

    async def claim(self, delivery: Delivery, *, now: float, lease_s: float) -> bool:
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=_key(
                    delivery.subscription_id, delivery.audio_id, delivery.sequence
                ),
                UpdateExpression="SET lease_until = :until",
                ConditionExpression="#s = :pending AND lease_until <= :now",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":until": {"N": repr(now + lease_s)},
                    ":pending": {"S": DeliveryStatus.PENDING.value},
                    ":now": {"N": repr(now)},
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def save(self, delivery: Delivery) -> None:
        await self._update_state(delivery, "attribute_exists(pk)", {})

    async def record_attempt(self, delivery: Delivery, *, lease_until: float) -> bool:
        return await self._update_state(
            delivery,
            "attribute_exists(pk) AND lease_until = :held",
            {":held": {"N": repr(lease_until)}},
        )

    async def delete_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        slots = asyncio.Semaphore(ADD_CONCURRENCY)

        async def delete(delivery: Delivery) -> None:
            async with slots:
                await self._ddb.delete_item(
                    TableName=self._table,
                    Key=_key(
                        delivery.subscription_id, delivery.audio_id, delivery.sequence
                    ),
                )

        await asyncio.gather(*(delete(d) for d in deliveries))

    async def _update_state(
        self, delivery: Delivery, condition: str, values: dict[str, Any]
    ) -> bool:
        """Set the state attributes (and the pending index keys) of `delivery`
        if `condition` holds; False when it does not."""
        state = _state(delivery)
        names = {f"#{n}": n for n in state}
        sets = [f"#{n} = :{n}" for n in state]
        update = "SET " + ", ".join(sets)
        if delivery.status is not DeliveryStatus.PENDING:
            update += " REMOVE gsi1pk, gsi1sk"
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=_key(
                    delivery.subscription_id, delivery.audio_id, delivery.sequence
                ),
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    **{f":{n}": v for n, v in state.items()},
                    **values,
                },
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        return True

    async def replace_body(self, delivery: Delivery, body: bytes) -> None:
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key=_key(
                    delivery.subscription_id, delivery.audio_id, delivery.sequence
                ),
                UpdateExpression="SET body = :b",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":b": {"B": body}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise

    async def due(self, now: float, limit: int = 100) -> list[tuple[UUID, UUID]]:
        # Up to `limit` lanes from each shard (a lane may hold many due
        # deliveries, so pages are followed), then the most overdue overall.
        earliest: dict[tuple[UUID, UUID], str] = {}
        for shard in range(PENDING_SHARDS):
            request: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": PENDING_INDEX,
                "KeyConditionExpression": "gsi1pk = :p AND gsi1sk <= :now",
                "ExpressionAttributeValues": {
                    ":p": {"S": f"PENDING#{shard}"},
                    ":now": {"S": _due_key(now) + "~"},
                },
                "Limit": limit,
            }
            found = 0
            while found < limit:
                page = await self._ddb.query(**request)
                for item in page.get("Items", []):
                    lane = (
                        UUID(item["pk"]["S"].removeprefix("SUB#")),
                        UUID(item["audio_id"]["S"]),
                    )
                    if lane not in earliest:
                        earliest[lane] = item["gsi1sk"]["S"]
                        found += 1
                last = page.get("LastEvaluatedKey")
                if not last:
                    break
                request["ExclusiveStartKey"] = last
        return sorted(earliest, key=earliest.__getitem__)[:limit]

    async def deliveries(
        self,
        subscription_id: UUID,
        *,
        status: DeliveryStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[Delivery], str | None]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :p AND begins_with(sk, :s)",
            "ExpressionAttributeValues": {
                ":p": {"S": f"SUB#{subscription_id}"},
                ":s": {"S": "DLV#"},
            },
            "ConsistentRead": True,
        }
        if status is not None:
            request["FilterExpression"] = "#st = :st"
            request["ExpressionAttributeNames"] = {"#st": "status"}
            request["ExpressionAttributeValues"][":st"] = {"S": status.value}
        if cursor:
            sort_key = decode_cursor(cursor, "DLV#")
            request["ExclusiveStartKey"] = {
                "pk": {"S": f"SUB#{subscription_id}"},
                "sk": {"S": sort_key},
            }
        page: list[Delivery] = []
        while True:
            request["Limit"] = limit - len(page)
            answer = await self._ddb.query(**request)
            page.extend(_delivery(item) for item in answer.get("Items", []))
            last = answer.get("LastEvaluatedKey")
            if not last:
                return page, None
            if len(page) >= limit:
                return page, encode_cursor(last["sk"]["S"])
            request["ExclusiveStartKey"] = last

    async def _all(self, operation: str, request: dict[str, Any]) -> list[Any]:
        call = getattr(self._ddb, operation)
        request = {"TableName": self._table, **request}
        items: list[Any] = []
        while True:
            page = await call(**request)
            items.extend(page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return items
            request["ExclusiveStartKey"] = last


def _key(subscription_id: UUID, audio_id: UUID, sequence: int) -> dict[str, Any]:
    return {
        "pk": {"S": f"SUB#{subscription_id}"},
        "sk": {"S": delivery_sort_key(audio_id, sequence)},
    }


def _due_key(when: float) -> str:
    return f"{when:017.3f}"


def _item(delivery: Delivery) -> dict[str, Any]:
    return {
        **_key(delivery.subscription_id, delivery.audio_id, delivery.sequence),
        "audio_id": {"S": str(delivery.audio_id)},
        "sequence": {"N": str(delivery.sequence)},
        "event_id": {"S": str(delivery.event_id)},
        "event_type": {"S": delivery.event_type},
        "body": {"B": delivery.body},
        "created_at": {"N": repr(delivery.created_at)},
        **_state(delivery),
    }


def _state(delivery: Delivery) -> dict[str, Any]:
    """The attributes a delivery's attempts change, with its pending index
    keys while it is pending; never the body or what identifies it."""
    state: dict[str, Any] = {
        "status": {"S": delivery.status.value},
        "next_attempt_at": {"N": repr(delivery.next_attempt_at)},
        "attempts_used": {"N": str(delivery.attempts_used)},
        "attempts": {"S": json.dumps([_attempt_json(a) for a in delivery.attempts])},
        "parked_reason": {"S": delivery.parked_reason},
        "lease_until": {"N": repr(delivery.lease_until)},
    }
    if delivery.status is DeliveryStatus.PENDING:
        lane = f"{delivery.subscription_id}#{delivery.audio_id}"
        shard = zlib.crc32(lane.encode()) % PENDING_SHARDS
        state["gsi1pk"] = {"S": f"PENDING#{shard}"}
        state["gsi1sk"] = {
            "S": f"{_due_key(delivery.next_attempt_at)}#{lane}#{delivery.sequence}"
        }
    return state


def _attempt_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "at": attempt.at,
        "latency_ms": attempt.latency_ms,
        "response_code": attempt.response_code,
        "outcome": attempt.outcome,
        "error": attempt.error,
    }


def _delivery(item: dict[str, Any]) -> Delivery:
    attempts = tuple(
        Attempt(
            at=a["at"],
            latency_ms=a["latency_ms"],
            response_code=a["response_code"],
            outcome=a["outcome"],
            error=a["error"],
        )
        for a in json.loads(item["attempts"]["S"])
    )
    return Delivery(
        subscription_id=UUID(item["pk"]["S"].removeprefix("SUB#")),
        audio_id=UUID(item["audio_id"]["S"]),
        sequence=int(item["sequence"]["N"]),
        event_id=UUID(item["event_id"]["S"]),
        event_type=item["event_type"]["S"],
        body=bytes(item["body"]["B"]),
        created_at=float(item["created_at"]["N"]),
        status=DeliveryStatus(item["status"]["S"]),
        next_attempt_at=float(item["next_attempt_at"]["N"]),
        attempts_used=int(item["attempts_used"]["N"]),
        attempts=attempts,
        parked_reason=item["parked_reason"]["S"],
        lease_until=float(item["lease_until"]["N"]),
    )


def _subscription(item: dict[str, Any]) -> Subscription:
    return Subscription(
        subscription_id=UUID(item["sk"]["S"].removeprefix("SUB#")),
        user_id=UUID(item["pk"]["S"].removeprefix("USER#")),
        url=item["url"]["S"],
        event_types=frozenset(t["S"] for t in item["event_types"]["L"]),
        secret=item["secret"]["S"],
        created_at=float(item["created_at"]["N"]),
        description=item.get("description", {}).get("S", ""),
    )
