"""The read-model contract: the in-memory fake behaves as DynamoDB does."""

from __future__ import annotations

from uuid import uuid4

import pytest

from nova_projector_readmodel.application.projection import ItemChange
from nova_projector_readmodel.application.projector import ProjectionGapError, ReadModel


def created(audio_id: str) -> ItemChange:
    return ItemChange(
        audio_id, 1, {"audio_id": audio_id, "status": "pending"}, create=True
    )


def status(audio_id: str, version: int, value: str) -> ItemChange:
    return ItemChange(audio_id, version, {"status": value}, remove=("title",))


class ReadModelContract:
    """Subclasses provide `read_model`, and `item(audio_id)` to read one back."""

    async def item(self, audio_id: str) -> dict[str, object] | None:
        raise NotImplementedError

    async def test_applies_in_order_and_ignores_repeats(
        self, read_model: ReadModel
    ) -> None:
        audio_id = str(uuid4())

        first = await read_model.apply(created(audio_id))
        second = await read_model.apply(status(audio_id, 2, "processing"))
        repeated = await read_model.apply(status(audio_id, 2, "processing"))
        stale = await read_model.apply(created(audio_id))

        assert (first, second, repeated, stale) == (True, True, False, False)
        item = await self.item(audio_id)
        assert item is not None
        assert item["status"] == "processing"
        assert item["version"] == 2

    async def test_a_gap_is_reported_with_the_stored_version(
        self, read_model: ReadModel
    ) -> None:
        audio_id = str(uuid4())
        await read_model.apply(created(audio_id))

        with pytest.raises(ProjectionGapError) as caught:
            await read_model.apply(status(audio_id, 3, "completed"))

        assert caught.value.stored_version == 1
        item = await self.item(audio_id)
        assert item is not None
        assert item["version"] == 1

    async def test_an_event_before_creation_is_a_gap(
        self, read_model: ReadModel
    ) -> None:
        with pytest.raises(ProjectionGapError) as caught:
            await read_model.apply(status(str(uuid4()), 2, "processing"))

        assert caught.value.stored_version is None
