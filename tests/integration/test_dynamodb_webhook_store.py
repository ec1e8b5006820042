"""The webhook store contract on DynamoDB (moto server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nova_platform.aws import client_kwargs, session
from nova_platform.settings import NovaSettings
from nova_platform.webhooks.dynamodb import DynamoDBWebhookStore

from ..contracts.webhook_store import WebhookStoreContract

pytestmark = pytest.mark.integration


class TestDynamoDBWebhookStore(WebhookStoreContract):
    @pytest.fixture
    async def webhooks(
        self, settings: NovaSettings
    ) -> AsyncIterator[DynamoDBWebhookStore]:
        async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
            yield DynamoDBWebhookStore(ddb, settings.webhooks_table)
