from __future__ import annotations

import pytest

from nova_command_api.adapters.memory_event_store import InMemoryEventStore

from ..contracts.event_store import EventStoreContract


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryEventStore:
        return InMemoryEventStore()
