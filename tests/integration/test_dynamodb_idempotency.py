from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nova_command_api.adapters.dynamodb_idempotency import DynamoDBIdempotencyStore
from nova_platform.aws import client_kwargs, session
from nova_platform.settings import NovaSettings

from ..contracts.idempotency import FakeClock, IdempotencyStoreContract

pytestmark = pytest.mark.integration


class TestDynamoDBIdempotencyStore(IdempotencyStoreContract):
    @pytest.fixture
    async def keys(
        self, settings: NovaSettings, clock: FakeClock
    ) -> AsyncIterator[DynamoDBIdempotencyStore]:
        async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
            yield DynamoDBIdempotencyStore(ddb, settings.idempotency_table, clock)
