"""Which table the read model's readers and writers use, so a rebuild can switch.

A rebuild (`nova-projector-readmodel rebuild`) fills a fresh table and then
points everyone at it through one item of the `nova-projections` table:
`{"pk": "read-model", "table": <active table>}`. Without that item the active
table is `settings.read_model_table`, as before any rebuild.

Readers (query-api) and the live projector resolve the name through
`ActiveReadModelTable`, which caches it for `projection_pointer_ttl_s` (2 s by
default), so a request pays one `GetItem` per TTL per process, not one per
request. A switch therefore reaches every process within one TTL; the rebuild
waits longer than that before it stops (see `nova_platform.rebuild`).

The search index needs none of this: its readers and writers use an alias,
which a rebuild moves in one atomic `update_aliases` call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from botocore.exceptions import ClientError

from .settings import NovaSettings

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)

READ_MODEL = "read-model"


class TableName(Protocol):
    """Something that knows the name of the table to use right now."""

    async def table_name(self) -> str: ...


async def resolve(table: str | TableName) -> str:
    """`table` itself when it is a fixed name, else what it resolves to now."""
    return table if isinstance(table, str) else await table.table_name()


async def read_pointer(
    client: DynamoDBClient, settings: NovaSettings, projection: str = READ_MODEL
) -> str | None:
    """The table `projection` points at, or None when no rebuild set one.

    A missing `nova-projections` table (a deployment older than rebuilds, not
    yet re-initialised with `nova-init`) counts as no pointer.
    """
    try:
        response = await client.get_item(
            TableName=settings.projections_table,
            Key={"pk": {"S": projection}},
            ConsistentRead=True,
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return None
        raise
    item = response.get("Item")
    return item["table"]["S"] if item and "table" in item else None


async def write_pointer(
    client: DynamoDBClient,
    settings: NovaSettings,
    table: str,
    projection: str = READ_MODEL,
    previous: str | None = None,
) -> None:
    """Point `projection`'s readers and writers at `table` (one `PutItem`)."""
    item = {
        "pk": {"S": projection},
        "table": {"S": table},
        "switched_at": {"S": datetime.now(UTC).isoformat()},
    }
    if previous:
        item["previous"] = {"S": previous}
    await client.put_item(TableName=settings.projections_table, Item=item)
    logger.info(
        "projection pointer moved",
        extra={"projection": projection, "table": table, "previous": previous},
    )


class ActiveReadModelTable:
    """The read-model table in use, read from the pointer, cached for a TTL.

    Pass it where a table name is expected (`DynamoDBReadModel`,
    `DynamoDBReadModelRepository`). Concurrent callers after the TTL share one
    `GetItem`.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        settings: NovaSettings,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._settings = settings
        self._ttl_s = settings.projection_pointer_ttl_s if ttl_s is None else ttl_s
        self._clock = clock
        self._cached: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def ttl_s(self) -> float:
        return self._ttl_s

    async def table_name(self) -> str:
        """The active table; at most `ttl_s` old."""
        if self._cached is not None and self._clock() < self._expires_at:
            return self._cached
        async with self._lock:
            if self._cached is not None and self._clock() < self._expires_at:
                return self._cached
            pointed = await read_pointer(self._client, self._settings)
            name = pointed or self._settings.read_model_table
            if name != self._cached:
                logger.info("read-model table resolved", extra={"table": name})
            self._cached = name
            self._expires_at = self._clock() + self._ttl_s
            return name

    async def point_at(self, table: str) -> None:
        """Move the pointer to `table`; this process sees it at once."""
        previous = await read_pointer(self._client, self._settings)
        await write_pointer(
            self._client,
            self._settings,
            table,
            previous=previous or self._settings.read_model_table,
        )
        self._cached = table
        self._expires_at = self._clock() + self._ttl_s
