from __future__ import annotations

import pytest

from nova_platform.user_keys import InMemoryUserKeys

from ..contracts.user_keys import UserKeyStoreContract


class TestInMemoryUserKeys(UserKeyStoreContract):
    @pytest.fixture
    def keys(self) -> InMemoryUserKeys:
        return InMemoryUserKeys()
