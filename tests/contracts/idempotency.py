"""The idempotency store contract, run on the in-memory and the DynamoDB store."""

from __future__ import annotations

import asyncio
import uuid

from nova_command_api.application.idempotency import IdempotencyStore, RecordedResponse

ANSWER = RecordedResponse(201, b'{"version":1}', {"etag": '"1"'})


def new_key() -> str:
    return f"user#{uuid.uuid4()}"


class IdempotencyStoreContract:
    """Subclasses provide a `keys` fixture yielding an `IdempotencyStore`."""

    async def test_first_claim_wins_and_later_ones_see_it(
        self, keys: IdempotencyStore
    ) -> None:
        key = new_key()

        first = await keys.claim(key, "fp-1")
        second = await keys.claim(key, "fp-2")

        assert first is None
        assert second is not None
        assert second.fingerprint == "fp-1"
        assert second.response is None

    async def test_a_completed_response_is_replayed(
        self, keys: IdempotencyStore
    ) -> None:
        key = new_key()
        await keys.claim(key, "fp")

        await keys.complete(key, ANSWER)
        record = await keys.get(key)

        assert record is not None
        assert record.response == ANSWER

    async def test_a_released_key_can_be_claimed_again(
        self, keys: IdempotencyStore
    ) -> None:
        key = new_key()
        await keys.claim(key, "fp")

        await keys.release(key)

        assert await keys.get(key) is None
        assert await keys.claim(key, "fp") is None

    async def test_concurrent_claims_have_one_winner(
        self, keys: IdempotencyStore
    ) -> None:
        key = new_key()

        outcomes = await asyncio.gather(*(keys.claim(key, "fp") for _ in range(16)))

        assert sum(o is None for o in outcomes) == 1
