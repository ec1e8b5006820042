from __future__ import annotations

import pytest

from nova_platform.webhooks import InMemoryWebhookStore

from ..contracts.webhook_store import WebhookStoreContract


class TestInMemoryWebhookStore(WebhookStoreContract):
    @pytest.fixture
    def webhooks(self) -> InMemoryWebhookStore:
        return InMemoryWebhookStore()
