"""`DynamoDBUserKeys.get_many` when DynamoDB leaves keys unprocessed.

moto answers every key at once, so a stub client stands in for a throttled
table here; the rest of the store's contract runs on moto in integration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from nova_platform.user_keys import BATCH_GET_LIMIT, DynamoDBUserKeys

TABLE = "nova-user-keys-test"


def item(user_id: UUID) -> dict[str, Any]:
    return {
        "pk": {"S": f"USER#{user_id}"},
        "wrapped_key": {"B": b"wrapped"},
        "wrapping": {"S": "local:test"},
        "created_at": {"S": datetime.now(UTC).isoformat()},
    }


class ThrottledTable:
    """Answers each BatchGetItem with its first key only and leaves the rest
    unprocessed; GetItem answers in full. Records every request."""

    def __init__(self, stored: set[UUID]) -> None:
        self.stored = stored
        self.batches: list[int] = []
        self.gets = 0

    def _found(self, key: dict[str, Any]) -> list[dict[str, Any]]:
        user_id = UUID(key["pk"]["S"].removeprefix("USER#"))
        return [item(user_id)] if user_id in self.stored else []

    async def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803 - boto3's name
        request = RequestItems[TABLE]
        assert request["ConsistentRead"] is True
        keys = request["Keys"]
        self.batches.append(len(keys))
        left = {TABLE: {"Keys": keys[1:]}} if keys[1:] else {}
        return {"Responses": {TABLE: self._found(keys[0])}, "UnprocessedKeys": left}

    async def get_item(self, **request: Any) -> dict[str, Any]:
        assert request["ConsistentRead"] is True
        self.gets += 1
        found = self._found(request["Key"])
        return {"Item": found[0]} if found else {}


async def test_keys_left_unprocessed_are_asked_again_then_read_one_by_one() -> None:
    users = [uuid4() for _ in range(BATCH_GET_LIMIT + 6)]
    stored = set(users[:-1])  # the last user has no item
    table = ThrottledTable(stored)
    keys = DynamoDBUserKeys(table, TABLE)  # type: ignore[arg-type]

    found = await keys.get_many(users)

    assert set(found) == stored
    assert all(found[u].wrapped_key == b"wrapped" for u in stored)
    # Two chunks of at most a hundred keys, each asked four times (one key
    # answered per call), the rest by GetItem.
    assert table.batches == [100, 99, 98, 97, 6, 5, 4, 3]
    assert table.gets == (100 - 4) + (6 - 4)
