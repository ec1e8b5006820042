"""Forward each event to EventBridge once, however often Kafka delivers it.

`OnceForwarder` wraps a forwarder: before a batch goes out it reads which of
its events were forwarded already (one `BatchGetItem` per 100 events, from
the `nova-webhooks` table: ``pk = FWD#<target>``, ``sk = <audio id>#<sequence>``)
and forwards only the others; once they went out it records them (one
`BatchWriteItem` per 25). A redelivered batch, a rewound one or a republish
therefore sends nothing twice. Only a crash between the forward and the record
repeats those events, once; EventBridge is at-least-once anyway, and the
payload's `id` is stable for rules that deduplicate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..application.ports import EventForwarder

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

GET_BATCH = 100
WRITE_BATCH = 25
MAX_UNPROCESSED_ROUNDS = 8


class OnceForwarder:
    def __init__(
        self,
        forwarder: EventForwarder,
        client: DynamoDBClient,
        table_name: str,
        target: str,
    ) -> None:
        self._forwarder = forwarder
        self._ddb = client
        self._table = table_name
        self._pk = f"FWD#{target}"

    async def forward(self, payloads: Sequence[dict[str, Any]]) -> None:
        done = await self._forwarded([_sort_key(p) for p in payloads])
        fresh = [p for p in payloads if _sort_key(p) not in done]
        if not fresh:
            return
        await self._forwarder.forward(fresh)
        await self._record([_sort_key(p) for p in fresh])

    async def _forwarded(self, sort_keys: list[str]) -> set[str]:
        unique = sorted(set(sort_keys))
        found: set[str] = set()
        for start in range(0, len(unique), GET_BATCH):
            keys: list[Any] = [
                {"pk": {"S": self._pk}, "sk": {"S": sk}}
                for sk in unique[start : start + GET_BATCH]
            ]
            for _ in range(MAX_UNPROCESSED_ROUNDS):
                answer = await self._ddb.batch_get_item(
                    RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}}
                )
                found.update(
                    item["sk"]["S"]
                    for item in answer.get("Responses", {}).get(self._table, [])
                )
                unprocessed: Any = answer.get("UnprocessedKeys", {})
                keys = list(unprocessed.get(self._table, {}).get("Keys", []))
                if not keys:
                    break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("DynamoDB kept keys unprocessed; retry the batch")
        return found

    async def _record(self, sort_keys: list[str]) -> None:
        unique = sorted(set(sort_keys))
        for start in range(0, len(unique), WRITE_BATCH):
            writes: list[Any] = [
                {"PutRequest": {"Item": {"pk": {"S": self._pk}, "sk": {"S": sk}}}}
                for sk in unique[start : start + WRITE_BATCH]
            ]
            for _ in range(MAX_UNPROCESSED_ROUNDS):
                answer = await self._ddb.batch_write_item(
                    RequestItems={self._table: writes}
                )
                writes = list(answer.get("UnprocessedItems", {}).get(self._table, []))
                if not writes:
                    break
                await asyncio.sleep(0.05)
            else:
                raise TimeoutError("DynamoDB kept writes unprocessed; retry the batch")


def _sort_key(payload: dict[str, Any]) -> str:
    return f"{payload['audio_id']}#{payload['sequence']:010d}"
