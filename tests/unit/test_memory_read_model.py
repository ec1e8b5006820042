from __future__ import annotations

import pytest

from nova_projector_readmodel.adapters.memory_read_model import InMemoryReadModel

from ..contracts.read_model import ReadModelContract


class TestInMemoryReadModel(ReadModelContract):
    @pytest.fixture
    def read_model(self) -> InMemoryReadModel:
        self.model = InMemoryReadModel()
        return self.model

    async def item(self, audio_id: str) -> dict[str, object] | None:
        return self.model.items.get(audio_id)
