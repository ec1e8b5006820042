from __future__ import annotations

import pytest

from nova_command_api.adapters.memory_idempotency import InMemoryIdempotencyStore

from ..contracts.idempotency import IdempotencyStoreContract


class TestInMemoryIdempotencyStore(IdempotencyStoreContract):
    @pytest.fixture
    def keys(self) -> InMemoryIdempotencyStore:
        return InMemoryIdempotencyStore()
