from __future__ import annotations

import os

import pytest

from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper

from ..contracts.event_store import EventStoreContract


class TestInMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryEventStore:
        return InMemoryEventStore()


class TestSealingInMemoryEventStore(EventStoreContract):
    """The same contract while every event's personal fields are sealed."""

    @pytest.fixture
    def store(self) -> InMemoryEventStore:
        return InMemoryEventStore(
            PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
        )
