"""Parking: where a consumer puts the events of an audio it cannot apply.

A poison event (undecodable, or failing for a reason no retry fixes) is sent
to the dead-letter topic together with every later event of the same audio,
and the audio is marked parked for this consumer group; other audios flow on.
Once the cause is fixed, `redrive` rebuilds each parked audio from the event
store and lifts the mark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from aiokafka import AIOKafkaProducer
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed Kafka record, as much of it as parking needs."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    headers: Headers = field(default_factory=list)

    @property
    def aggregate_id(self) -> str:
        return self.key.decode(errors="replace") if self.key else "<no key>"


class Parking(Protocol):
    async def parked(self) -> set[str]:
        """The aggregates parked for this consumer group."""
        ...

    async def is_parked(self, aggregate_id: str) -> bool:
        """A fresh look: a redrive may have lifted the mark meanwhile."""
        ...

    async def park(
        self, aggregate_id: str, records: Sequence[Record], reason: str
    ) -> None:
        """Send `records` to the dead-letter topic and mark the aggregate."""
        ...

    async def park_behind(self, aggregate_id: str, records: Sequence[Record]) -> bool:
        """Park `records` behind the aggregate's mark, if it is still there.

        False when a redrive lifted the mark meanwhile: nothing was parked and
        the caller applies the records instead.
        """
        ...

    async def unpark(self, aggregate_id: str) -> None: ...


class KafkaDynamoDBParking:
    """Dead letters in a Kafka topic, parked marks in DynamoDB (per group)."""

    def __init__(
        self,
        producer: AIOKafkaProducer | None,
        dlq_topic: str,
        ddb: DynamoDBClient,
        table_name: str,
        group: str,
    ) -> None:
        self._producer = producer
        self._dlq_topic = dlq_topic
        self._ddb = ddb
        self._table = table_name
        self._group = group

    async def check(self) -> None:
        """Raises when the parking table cannot be reached (for readiness)."""
        await self._ddb.describe_table(TableName=self._table)

    async def parked(self) -> set[str]:
        found: set[str] = set()
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :g",
            "ExpressionAttributeValues": {":g": {"S": self._group}},
            "ConsistentRead": True,
        }
        while True:
            page = await self._ddb.query(**request)
            found.update(item["sk"]["S"] for item in page.get("Items", []))
            last = page.get("LastEvaluatedKey")
            if not last:
                return found
            request["ExclusiveStartKey"] = last

    async def is_parked(self, aggregate_id: str) -> bool:
        item = await self._ddb.get_item(
            TableName=self._table,
            Key={"pk": {"S": self._group}, "sk": {"S": aggregate_id}},
            ConsistentRead=True,
        )
        return "Item" in item

    async def park(
        self, aggregate_id: str, records: Sequence[Record], reason: str
    ) -> None:
        await self._dead_letter(records, reason)
        await self._ddb.update_item(
            TableName=self._table,
            Key={"pk": {"S": self._group}, "sk": {"S": aggregate_id}},
            UpdateExpression=(
                "SET reason = if_not_exists(reason, :r), "
                "parked_at = if_not_exists(parked_at, :t) ADD events :n"
            ),
            ExpressionAttributeValues={
                ":r": {"S": reason[:1000]},
                ":t": {"N": str(int(time.time()))},
                ":n": {"N": str(len(records))},
            },
        )
        logger.error(
            "events parked",
            extra={"audio_id": aggregate_id, "events": len(records), "reason": reason},
        )

    async def park_behind(self, aggregate_id: str, records: Sequence[Record]) -> bool:
        # The mark is counted up only while it exists, so a redrive that lifted
        # it meanwhile is not undone; the dead letters follow a kept mark.
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key={"pk": {"S": self._group}, "sk": {"S": aggregate_id}},
                UpdateExpression="ADD events :n",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":n": {"N": str(len(records))}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise
        await self._dead_letter(records, "audio is parked")
        logger.warning(
            "events parked behind their audio",
            extra={"audio_id": aggregate_id, "events": len(records)},
        )
        return True

    async def _dead_letter(self, records: Sequence[Record], reason: str) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("parking needs a producer for the dead-letter topic")
        sent = [
            await producer.send(
                self._dlq_topic,
                key=record.key,
                value=record.value,
                headers=[
                    *record.headers,
                    ("nova_dlq_group", self._group.encode()),
                    ("nova_dlq_reason", reason[:1000].encode()),
                    (
                        "nova_dlq_source",
                        f"{record.topic}/{record.partition}/{record.offset}".encode(),
                    ),
                ],
            )
            for record in records
        ]
        for future in sent:
            await future

    async def unpark(self, aggregate_id: str) -> None:
        await self._ddb.delete_item(
            TableName=self._table,
            Key={"pk": {"S": self._group}, "sk": {"S": aggregate_id}},
        )


class InMemoryParking:
    """Parking for unit tests: the dead letters are kept in a list."""

    def __init__(self) -> None:
        self.marks: dict[str, str] = {}
        self.dead_letters: list[tuple[str, Record]] = []

    async def parked(self) -> set[str]:
        return set(self.marks)

    async def is_parked(self, aggregate_id: str) -> bool:
        return aggregate_id in self.marks

    async def park(
        self, aggregate_id: str, records: Sequence[Record], reason: str
    ) -> None:
        self.marks.setdefault(aggregate_id, reason)
        self.dead_letters.extend((aggregate_id, r) for r in records)

    async def park_behind(self, aggregate_id: str, records: Sequence[Record]) -> bool:
        if aggregate_id not in self.marks:
            return False
        self.dead_letters.extend((aggregate_id, r) for r in records)
        return True

    async def unpark(self, aggregate_id: str) -> None:
        self.marks.pop(aggregate_id, None)


async def redrive(
    parking: Parking,
    repair: Callable[[UUID], Awaitable[None]],
    aggregate_id: str | None = None,
) -> list[str]:
    """Repair each parked audio (or just `aggregate_id`) from the event store,
    lift its mark, and repair it once more; returns the audios redriven.

    Run it once the cause of the parking is fixed. An event the consumer parked
    behind the mark while the first repair ran is only in the dead-letter
    topic: the second repair, after the mark is gone, applies it from the event
    store. Events consumed after that are applied by the consumer itself (it
    parks behind a mark only while the mark exists). Repairs are idempotent,
    so applying an event twice changes nothing.
    """
    targets = [aggregate_id] if aggregate_id else sorted(await parking.parked())
    done: list[str] = []
    for target in targets:
        await repair(UUID(target))
        await parking.unpark(target)
        await repair(UUID(target))
        logger.info("audio redriven", extra={"audio_id": target})
        done.append(target)
    return done
