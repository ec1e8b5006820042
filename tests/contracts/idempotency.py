"""The idempotency store contract, run on the in-memory and the DynamoDB store."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from nova_command_api.application.idempotency import (
    IdempotencyRecord,
    IdempotencyStore,
    Lease,
    RecordedResponse,
)

ANSWER = RecordedResponse(201, b'{"version":1}', {"etag": '"1"'})
LEASE_S = 60.0
DAY_S = 24 * 3600


class FakeClock:
    """Seconds since the epoch that move only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def new_key() -> str:
    return f"user#{uuid.uuid4()}"


def leased(outcome: Lease | IdempotencyRecord) -> Lease:
    assert isinstance(outcome, Lease), f"expected a lease, got {outcome}"
    return outcome


def held(outcome: Lease | IdempotencyRecord) -> IdempotencyRecord:
    assert isinstance(outcome, IdempotencyRecord), f"expected a record: {outcome}"
    return outcome


class IdempotencyStoreContract:
    """Subclasses provide a `keys` fixture: an `IdempotencyStore` on `clock`."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    async def test_first_claim_wins_and_later_ones_see_it(
        self, keys: IdempotencyStore
    ) -> None:
        key = new_key()

        first = leased(await keys.claim(key, "fp-1", LEASE_S))
        second = held(await keys.claim(key, "fp-2", LEASE_S))

        assert not first.taken_over
        assert second.fingerprint == "fp-1"
        assert second.response is None
        assert second.command_id == first.command_id

    async def test_a_completed_response_is_replayed(
        self, keys: IdempotencyStore
    ) -> None:
        key = new_key()
        lease = leased(await keys.claim(key, "fp", LEASE_S))

        assert await keys.complete(key, lease, ANSWER)
        record = await keys.get(key)

        assert record is not None
        assert record.response == ANSWER

    async def test_a_released_key_can_be_claimed_again(
        self, keys: IdempotencyStore
    ) -> None:
        key = new_key()
        first = leased(await keys.claim(key, "fp", LEASE_S))

        await keys.release(key, first)

        assert await keys.get(key) is None
        again = leased(await keys.claim(key, "fp", LEASE_S))
        assert not again.taken_over
        assert again.command_id != first.command_id

    async def test_concurrent_claims_have_one_winner(
        self, keys: IdempotencyStore
    ) -> None:
        key = new_key()

        outcomes = await asyncio.gather(
            *(keys.claim(key, "fp", LEASE_S) for _ in range(16))
        )

        assert sum(isinstance(o, Lease) for o in outcomes) == 1

    async def test_a_claim_is_held_while_its_lease_runs(
        self, keys: IdempotencyStore, clock: FakeClock
    ) -> None:
        key = new_key()
        lease = leased(await keys.claim(key, "fp", LEASE_S))

        clock.advance(LEASE_S - 1)
        retry = held(await keys.claim(key, "fp", LEASE_S))

        assert retry.response is None
        assert retry.lease_expires_at == pytest.approx(lease.expires_at, abs=0.01)

    async def test_a_claim_whose_lease_ran_out_is_taken_over_by_a_retry(
        self, keys: IdempotencyStore, clock: FakeClock
    ) -> None:
        key = new_key()
        crashed = leased(await keys.claim(key, "fp", LEASE_S))

        clock.advance(LEASE_S + 1)
        retry = leased(await keys.claim(key, "fp", LEASE_S))

        assert retry.taken_over
        assert retry.command_id == crashed.command_id
        assert retry.token != crashed.token
        # The dead run can no longer answer for the key, nor give it away.
        assert not await keys.complete(key, crashed, ANSWER)
        await keys.release(key, crashed)
        assert await keys.complete(key, retry, ANSWER)
        record = await keys.get(key)
        assert record is not None
        assert record.response == ANSWER

    async def test_another_request_cannot_take_over_a_claim(
        self, keys: IdempotencyStore, clock: FakeClock
    ) -> None:
        key = new_key()
        await keys.claim(key, "fp-1", LEASE_S)

        clock.advance(LEASE_S + 1)
        other = held(await keys.claim(key, "fp-2", LEASE_S))

        assert other.fingerprint == "fp-1"

    async def test_a_completed_claim_is_never_taken_over(
        self, keys: IdempotencyStore, clock: FakeClock
    ) -> None:
        key = new_key()
        lease = leased(await keys.claim(key, "fp", LEASE_S))
        await keys.complete(key, lease, ANSWER)

        clock.advance(LEASE_S + 1)
        retry = held(await keys.claim(key, "fp", LEASE_S))

        assert retry.response == ANSWER

    async def test_concurrent_takeovers_have_one_winner(
        self, keys: IdempotencyStore, clock: FakeClock
    ) -> None:
        key = new_key()
        await keys.claim(key, "fp", LEASE_S)
        clock.advance(LEASE_S + 1)

        outcomes = await asyncio.gather(
            *(keys.claim(key, "fp", LEASE_S) for _ in range(8))
        )

        winners = [o for o in outcomes if isinstance(o, Lease)]
        assert len(winners) == 1
        assert winners[0].taken_over

    async def test_a_record_past_its_day_is_free(
        self, keys: IdempotencyStore, clock: FakeClock
    ) -> None:
        key = new_key()
        old = leased(await keys.claim(key, "fp-1", LEASE_S))
        await keys.complete(key, old, ANSWER)

        clock.advance(DAY_S + 1)
        fresh = leased(await keys.claim(key, "fp-2", LEASE_S))

        assert not fresh.taken_over
        assert fresh.command_id != old.command_id
