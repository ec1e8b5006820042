"""The read-model contract: the in-memory fake behaves as DynamoDB does."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from nova_projector_readmodel.application.projection import ItemChange
from nova_projector_readmodel.application.projector import ProjectionGapError, ReadModel


def created(audio_id: str) -> ItemChange:
    return ItemChange(
        audio_id, 1, {"audio_id": audio_id, "status": "pending"}, create=True
    )


def owned(audio_id: str, user_id: UUID) -> ItemChange:
    return ItemChange(
        audio_id,
        1,
        {
            "audio_id": audio_id,
            "user_id": str(user_id),
            "status": "completed",
            "title": "Private title",
            "s3_key": f"audio/{user_id}/{audio_id}.wav",
            "metadata": {"client": "Acme"},
            "transcription": "private words",
            "segments": [{"start": 0.0, "end": 1.0, "text": "private words"}],
            "language": "en-US",
            "created_at": "2026-03-09T08:00:00+00:00",
            "gsi1pk": f"USER#{user_id}",
            "gsi1sk": "2026-03-09T08:00:00+00:00",
        },
        create=True,
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

    async def test_erasing_a_user_strips_every_item_of_theirs_only(
        self, read_model: ReadModel
    ) -> None:
        user, other = uuid4(), uuid4()
        mine = [str(uuid4()) for _ in range(3)]
        theirs = str(uuid4())
        for audio_id in mine:
            await read_model.apply(owned(audio_id, user))
        await read_model.apply(owned(theirs, other))
        at = datetime(2026, 3, 9, 8, 5, tzinfo=UTC)

        erased = await read_model.erase_user(user, at)

        assert sorted(erased) == sorted(mine)
        for audio_id in mine:
            item = await self.item(audio_id)
            assert item is not None
            assert item["personal_data"] == "erased"
            assert item["erased_at"] == at.isoformat()
            for name in ("title", "s3_key", "metadata", "transcription", "segments"):
                assert name not in item
            assert (item["status"], item["language"], item["version"]) == (
                "completed",
                "en-US",
                1,
            )
        kept = await self.item(theirs)
        assert kept is not None
        assert kept["title"] == "Private title"
        assert "personal_data" not in kept
        assert await read_model.erase_user(uuid4(), at) == []
