from __future__ import annotations

import pytest

from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore

from ..contracts.idempotency import FakeClock, IdempotencyStoreContract


class TestInMemoryIdempotencyStore(IdempotencyStoreContract):
    @pytest.fixture
    def keys(self, clock: FakeClock) -> InMemoryIdempotencyStore:
        return InMemoryIdempotencyStore(clock)
