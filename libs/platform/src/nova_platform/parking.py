"""Parking: where a consumer puts the events of an audio it cannot apply.

A poison event (undecodable, or failing for a reason no retry fixes) is sent
to the dead-letter topic together with every later event of the same audio,
and the audio is marked parked for this consumer group; other audios flow on.
Once the cause is fixed, `redrive` rebuilds each parked audio from the event
store and lifts the mark.

"Audio" here is any aggregate keyed on the topic: a `User` stream (its
`UserErased`) is parked the same way. The mark records the aggregate type the
parked records name, so the redrive reads that stream from the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import orjson
from aiokafka import AIOKafkaProducer
from botocore.exceptions import ClientError

from nova_events import AUDIO_FILE, USER

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

    @property
    def aggregate_type(self) -> str | None:
        """The `aggregate_type` the value names, read loosely (also from a
        record that is no valid event); None when it names none."""
        try:
            value = orjson.loads(self.value) if self.value else None
        except orjson.JSONDecodeError:
            return None
        found = value.get("aggregate_type") if isinstance(value, dict) else None
        return found if isinstance(found, str) and 0 < len(found) <= 64 else None


def aggregate_type_of(records: Iterable[Record]) -> str | None:
    """The aggregate type the first record naming one names."""
    return next((t for r in records if (t := r.aggregate_type) is not None), None)


REDRIVEN_TYPES: tuple[str, ...] = (AUDIO_FILE, USER)
"""The streams a redrive repairs when the mark names no aggregate type (a mark
made before marks named it, only undecodable records, an id not parked)."""


class Parking(Protocol):
    async def parked(self) -> set[str]:
        """The aggregates parked for this consumer group."""
        ...

    async def is_parked(self, aggregate_id: str) -> bool:
        """A fresh look: a redrive may have lifted the mark meanwhile."""
        ...

    async def aggregate_type(self, aggregate_id: str) -> str | None:
        """The aggregate type the parked records named (`AudioFile`, `User`);
        None when none of them named one, or the aggregate is not parked."""
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

    async def aggregate_type(self, aggregate_id: str) -> str | None:
        item = await self._ddb.get_item(
            TableName=self._table,
            Key={"pk": {"S": self._group}, "sk": {"S": aggregate_id}},
            ConsistentRead=True,
        )
        found = item.get("Item", {}).get("aggregate_type", {}).get("S")
        return found if found else None

    async def park(
        self, aggregate_id: str, records: Sequence[Record], reason: str
    ) -> None:
        await self._dead_letter(records, reason)
        values: dict[str, Any] = {
            ":r": {"S": reason[:1000]},
            ":t": {"N": str(int(time.time()))},
            ":n": {"N": str(len(records))},
        }
        sets = [
            "reason = if_not_exists(reason, :r)",
            "parked_at = if_not_exists(parked_at, :t)",
            *_name_type(records, values),
        ]
        await self._ddb.update_item(
            TableName=self._table,
            Key={"pk": {"S": self._group}, "sk": {"S": aggregate_id}},
            UpdateExpression=f"SET {', '.join(sets)} ADD events :n",
            ExpressionAttributeValues=values,
        )
        logger.error(
            "events parked",
            extra={"audio_id": aggregate_id, "events": len(records), "reason": reason},
        )

    async def park_behind(self, aggregate_id: str, records: Sequence[Record]) -> bool:
        # The mark is counted up only while it exists, so a redrive that lifted
        # it meanwhile is not undone; the dead letters follow a kept mark.
        values: dict[str, Any] = {":n": {"N": str(len(records))}}
        sets = _name_type(records, values)
        try:
            await self._ddb.update_item(
                TableName=self._table,
                Key={"pk": {"S": self._group}, "sk": {"S": aggregate_id}},
                UpdateExpression=(
                    f"SET {', '.join(sets)} ADD events :n" if sets else "ADD events :n"
                ),
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues=values,
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


def _name_type(records: Sequence[Record], values: dict[str, Any]) -> list[str]:
    """The SET clause keeping the first aggregate type a mark learns of (its
    value put in `values`); none when the records name no type."""
    aggregate_type = aggregate_type_of(records)
    if aggregate_type is None:
        return []
    values[":a"] = {"S": aggregate_type}
    return ["aggregate_type = if_not_exists(aggregate_type, :a)"]


class InMemoryParking:
    """Parking for unit tests: the dead letters are kept in a list."""

    def __init__(self) -> None:
        self.marks: dict[str, str] = {}
        self.types: dict[str, str] = {}
        self.dead_letters: list[tuple[str, Record]] = []

    async def parked(self) -> set[str]:
        return set(self.marks)

    async def is_parked(self, aggregate_id: str) -> bool:
        return aggregate_id in self.marks

    async def aggregate_type(self, aggregate_id: str) -> str | None:
        return self.types.get(aggregate_id) if aggregate_id in self.marks else None

    async def park(
        self, aggregate_id: str, records: Sequence[Record], reason: str
    ) -> None:
        self.marks.setdefault(aggregate_id, reason)
        self._learn_type(aggregate_id, records)
        self.dead_letters.extend((aggregate_id, r) for r in records)

    async def park_behind(self, aggregate_id: str, records: Sequence[Record]) -> bool:
        if aggregate_id not in self.marks:
            return False
        self._learn_type(aggregate_id, records)
        self.dead_letters.extend((aggregate_id, r) for r in records)
        return True

    async def unpark(self, aggregate_id: str) -> None:
        self.marks.pop(aggregate_id, None)
        self.types.pop(aggregate_id, None)

    def _learn_type(self, aggregate_id: str, records: Sequence[Record]) -> None:
        aggregate_type = aggregate_type_of(records)
        if aggregate_type is not None:
            self.types.setdefault(aggregate_id, aggregate_type)


Repair = Callable[[str, UUID], Awaitable[None]]
"""Applies every stored event of one stream (aggregate type, id) that the
consumer's target does not have yet; idempotent."""


async def redrive(
    parking: Parking,
    repair: Repair,
    aggregate_id: str | None = None,
) -> list[str]:
    """Repair each parked aggregate (or just `aggregate_id`) from the event
    store, lift its mark, and repair it once more; returns the ids redriven.

    The stream repaired is the one of the aggregate type the mark recorded (an
    audio's, or a user's for a parked `UserErased`); a mark that names none
    has each of `REDRIVEN_TYPES` repaired (ids never repeat across types, so
    the others are empty). Run it once the cause of the parking is fixed. An
    event the consumer parked behind the mark while the first repair ran is
    only in the dead-letter topic: the second repair, after the mark is gone,
    applies it from the event store. Events consumed after that are applied by
    the consumer itself (it parks behind a mark only while the mark exists).
    Repairs are idempotent, so applying an event twice changes nothing.
    """
    targets = [aggregate_id] if aggregate_id else sorted(await parking.parked())
    done: list[str] = []
    for target in targets:
        named = await parking.aggregate_type(target)
        kinds = (named,) if named is not None else REDRIVEN_TYPES
        for kind in kinds:
            await repair(kind, UUID(target))
        await parking.unpark(target)
        for kind in kinds:
            await repair(kind, UUID(target))
        logger.info(
            "aggregate redriven",
            extra={"audio_id": target, "aggregate_type": named or "unknown"},
        )
        done.append(target)
    return done
