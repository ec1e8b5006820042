"""The event store on DynamoDB, in the seed's `nova-event-store` layout.

Appends are enforced by the database, not by a read before the write: each
event item is written with `attribute_not_exists(pk)`, so of two writers that
claim the same version exactly one succeeds. One event is one conditional
`PutItem`; several go in one `TransactWriteItems`, all or nothing.

An append after version N > 0 first reads item vN (strongly consistent): an
item, once written, is never removed, so if it exists now it exists at the
write, and an expected version the stream never reached is refused instead of
leaving a gap. The read keeps a one-event commit a single-item write.

Given a `PersonalData`, items hold each event's personal fields sealed with
its owner's key; `get_events` and `get_events_by_type` open them, while
`iter_events_by_type` (the relay's republish) yields the stored form as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from botocore.exceptions import ClientError

from nova_events import EventEnvelope, EventMetadata, EventPayload
from nova_platform.event_items import from_item, sort_key, to_item
from nova_platform.event_reader import DynamoDBEventReader
from nova_platform.personal import PersonalData

from ..application.ports import ConcurrencyError, EventStoreUnavailableError
from .envelopes import as_utc, new_envelopes, stored_envelopes, utc_now

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

MAX_TRANSACTION_ITEMS = 100

# Error codes of a request DynamoDB refused for now: retrying later may succeed.
_THROTTLED = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionConflictException",
    }
)
# A cancelled transaction's per-item reasons that mean "not now", not "no".
_TRANSIENT_REASONS = frozenset(
    {
        "TransactionConflict",
        "ProvisionedThroughputExceeded",
        "ThrottlingError",
        "RequestLimitExceeded",
    }
)


def _cancellation_reasons(exc: ClientError) -> set[str]:
    if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
        return set()
    return {str(r.get("Code")) for r in exc.response.get("CancellationReasons", [])}


def _lost_the_race(exc: ClientError) -> bool:
    """Whether a version the write claimed exists already."""
    code = exc.response.get("Error", {}).get("Code")
    return (
        code == "ConditionalCheckFailedException"
        or "ConditionalCheckFailed" in _cancellation_reasons(exc)
    )


def _transient_reason(exc: ClientError) -> str | None:
    """Why DynamoDB refused the write for now only; None if it was not that.

    A validation error, say, is a bug to surface, not a reason to retry.
    """
    code = exc.response.get("Error", {}).get("Code", "")
    if code in _THROTTLED:
        return code
    transient = sorted(_cancellation_reasons(exc) & _TRANSIENT_REASONS)
    return ", ".join(transient) or None


class DynamoDBEventStore:
    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        page_size: int | None = None,
        clock: Callable[[], datetime] = utc_now,
        personal: PersonalData | None = None,
    ) -> None:
        self._client = client
        self._table = table_name
        self._page_size = page_size
        self._reader = DynamoDBEventReader(client, table_name, page_size, personal)
        self._clock = clock
        self._personal = personal

    async def append_events(
        self,
        aggregate_type: str,
        aggregate_id: UUID,
        events: Sequence[EventPayload],
        expected_version: int,
        metadata: EventMetadata,
        *,
        owner: UUID | None = None,
    ) -> list[EventEnvelope]:
        envelopes = new_envelopes(
            aggregate_type,
            aggregate_id,
            events,
            expected_version,
            metadata,
            self._clock(),
        )
        if len(envelopes) > MAX_TRANSACTION_ITEMS:
            raise ValueError(
                f"one commit holds at most {MAX_TRANSACTION_ITEMS} events, "
                f"got {len(envelopes)}"
            )
        stored = await stored_envelopes(envelopes, self._personal, owner)
        stream = envelopes[0].stream_key
        try:
            if expected_version > 0 and not await self._has_version(
                stream, expected_version
            ):
                actual = await self._current_version(stream)
                raise ConcurrencyError(stream, expected_version, actual)
            await self._write(stored)
        except ClientError as exc:
            if _lost_the_race(exc):
                actual = await self._current_version(stream)
                raise ConcurrencyError(stream, expected_version, actual) from exc
            if reason := _transient_reason(exc):
                raise EventStoreUnavailableError(stream, reason) from exc
            raise
        return envelopes

    async def _write(self, envelopes: list[EventEnvelope]) -> None:
        condition = "attribute_not_exists(pk)"
        if len(envelopes) == 1:
            await self._client.put_item(
                TableName=self._table,
                Item=to_item(envelopes[0]),
                ConditionExpression=condition,
            )
            return
        await self._client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": to_item(e),
                        "ConditionExpression": condition,
                    }
                }
                for e in envelopes
            ]
        )

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        return await self._reader.get_events(aggregate_type, aggregate_id, from_version)

    async def get_events_by_type(
        self, event_type: str, from_time: datetime | None = None, limit: int = 100
    ) -> list[EventEnvelope]:
        condition = "gsi1pk = :t"
        values: dict[str, Any] = {":t": {"S": event_type}}
        if from_time is not None:
            condition += " AND gsi1sk >= :from"
            # gsi1sk holds UTC ISO strings, compared as strings.
            values[":from"] = {"S": as_utc(from_time).isoformat()}
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi1",
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
            "Limit": min(limit, self._page_size or limit),
        }
        found: list[EventEnvelope] = []
        async for item in self._paginate(query):
            found.append(from_item(item))
            if len(found) >= limit:
                break
        if self._personal is not None:
            return await self._personal.open_all(found)
        return found

    async def iter_events_by_type(
        self,
        event_type: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncIterator[EventEnvelope]:
        """Every event of `event_type` with `since <= occurred_at < until`
        (either bound may be open), oldest first, as stored (sealed): the
        relay republishes them untouched.

        Reads `gsi1` lazily, one page (`page_size` items, else 1 MB) at a time,
        so a range of any length is held one page at a time. The index is
        eventually consistent: an event committed a moment ago may be missing.
        """
        values: dict[str, Any] = {":t": {"S": event_type}}
        # gsi1sk holds UTC ISO strings, compared as strings.
        start = as_utc(since).isoformat() if since is not None else None
        end = as_utc(until).isoformat() if until is not None else None
        if start is not None and end is not None:
            condition = "gsi1pk = :t AND gsi1sk BETWEEN :from AND :until"
            values.update({":from": {"S": start}, ":until": {"S": end}})
        elif start is not None:
            condition = "gsi1pk = :t AND gsi1sk >= :from"
            values[":from"] = {"S": start}
        elif end is not None:
            condition = "gsi1pk = :t AND gsi1sk < :until"
            values[":until"] = {"S": end}
        else:
            condition = "gsi1pk = :t"
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "gsi1",
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }
        if self._page_size:
            query["Limit"] = self._page_size
        async for item in self._paginate(query):
            if item["gsi1sk"]["S"] == end:
                continue  # BETWEEN includes `until`; the range does not
            yield from_item(item)

    async def _paginate(self, query: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        while True:
            page = await self._client.query(**query)
            for item in page.get("Items", []):
                yield item
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            query = {**query, "ExclusiveStartKey": last}

    async def _has_version(self, stream: str, version: int) -> bool:
        found = await self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": stream}, "sk": {"S": sort_key(version)}},
            ConsistentRead=True,
            ProjectionExpression="version",
        )
        return "Item" in found

    async def _current_version(self, stream: str) -> int:
        page = await self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": stream}},
            ScanIndexForward=False,
            Limit=1,
            ConsistentRead=True,
            ProjectionExpression="version",
        )
        items = page.get("Items", [])
        return int(items[0]["version"]["N"]) if items else 0
