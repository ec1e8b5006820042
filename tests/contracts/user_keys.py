"""The user key store contract, run on the in-memory and the DynamoDB store."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from nova_platform.user_keys import UserKey, UserKeyStore, new_user_key


def a_key(user_id: UUID | None = None, wrapped: bytes | None = None) -> UserKey:
    return new_user_key(
        user_id or uuid4(),
        wrapped if wrapped is not None else os.urandom(60),
        "local:test",
    )


class UserKeyStoreContract:
    """Subclasses provide a `keys` fixture: an empty-enough store."""

    async def test_a_user_without_an_item_has_none(self, keys: UserKeyStore) -> None:
        assert await keys.get(uuid4()) is None

    async def test_a_created_key_reads_back_as_written(
        self, keys: UserKeyStore
    ) -> None:
        key = a_key()

        stored = await keys.create(key)

        assert stored == key
        found = await keys.get(key.user_id)
        assert found is not None
        assert found.wrapped_key == key.wrapped_key
        assert found.wrapping == "local:test"
        assert found.erased_at is None
        assert abs(found.created_at - key.created_at) < timedelta(seconds=1)

    async def test_of_concurrent_creators_exactly_one_wins(
        self, keys: UserKeyStore
    ) -> None:
        user = uuid4()
        candidates = [a_key(user, os.urandom(60)) for _ in range(8)]

        stored = await asyncio.gather(*(keys.create(c) for c in candidates))

        winners = {s.wrapped_key for s in stored}
        assert len(winners) == 1
        assert winners <= {c.wrapped_key for c in candidates}
        found = await keys.get(user)
        assert found is not None
        assert found.wrapped_key in winners

    async def test_erasure_leaves_a_tombstone_without_the_key(
        self, keys: UserKeyStore
    ) -> None:
        key = await keys.create(a_key())
        at = datetime.now(UTC)

        tombstone = await keys.erase(key.user_id, at)

        assert tombstone.wrapped_key is None
        assert tombstone.erased
        assert tombstone.erased_at == at
        found = await keys.get(key.user_id)
        assert found is not None
        assert found.wrapped_key is None
        assert found.erased_at == at

    async def test_a_second_erasure_keeps_the_first_time(
        self, keys: UserKeyStore
    ) -> None:
        key = await keys.create(a_key())
        first = datetime.now(UTC)
        await keys.erase(key.user_id, first)

        again = await keys.erase(key.user_id, first + timedelta(hours=1))

        assert again.erased_at == first
        assert again.wrapped_key is None

    async def test_no_key_is_created_after_an_erasure(self, keys: UserKeyStore) -> None:
        user = uuid4()
        at = datetime.now(UTC)
        await keys.erase(user, at)  # never had a key

        stored = await keys.create(a_key(user))

        assert stored.wrapped_key is None
        assert stored.erased_at == at
        found = await keys.get(user)
        assert found is not None
        assert found.wrapped_key is None

    async def test_many_users_read_at_once_as_one_by_one(
        self, keys: UserKeyStore
    ) -> None:
        # Over one BatchGetItem's hundred keys, with a tombstone and a user
        # who has no item among them.
        created = [await keys.create(a_key()) for _ in range(120)]
        erased = created[7].user_id
        await keys.erase(erased, datetime.now(UTC))
        nobody = uuid4()
        wanted = [k.user_id for k in created] + [nobody]

        found = await keys.get_many(wanted)

        assert set(found) == {k.user_id for k in created}
        for user_id in wanted:
            assert found.get(user_id) == await keys.get(user_id)
        assert found[erased].wrapped_key is None
        assert found[erased].erased
        assert await keys.get_many([]) == {}
