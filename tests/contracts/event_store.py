"""The event store contract: every adapter must pass these same tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from nova_command_api.application.ports import (
    ConcurrencyError,
    EventStore,
    EventTooLargeError,
)
from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    AudioProcessingCompleted,
    AudioProcessingStarted,
    EventMetadata,
)

META = EventMetadata(correlation_id="c-1", user_id="u-1", command_id="cmd-1")


def created(audio_id: UUID) -> AudioCreated:
    return AudioCreated(
        audio_id=audio_id, user_id=uuid4(), s3_key=f"audio/x/{audio_id}"
    )


class EventStoreContract:
    """Subclasses provide a `store` fixture yielding a fresh, empty store."""

    async def test_appends_and_reads_back_in_order(self, store: EventStore) -> None:
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        await store.append_events(
            AUDIO_FILE,
            audio_id,
            [
                AudioProcessingStarted(audio_id=audio_id),
                AudioProcessingCompleted(audio_id=audio_id),
            ],
            1,
            META,
        )

        events = await store.get_events(AUDIO_FILE, audio_id)

        assert [e.version for e in events] == [1, 2, 3]
        assert [e.event_type for e in events] == [
            "AudioCreated",
            "AudioProcessingStarted",
            "AudioProcessingCompleted",
        ]
        assert events[0].metadata == META
        assert events[0].data["s3_key"] == f"audio/x/{audio_id}"
        assert len({e.event_id for e in events}) == 3

    async def test_reads_from_a_version(self, store: EventStore) -> None:
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        await store.append_events(
            AUDIO_FILE, audio_id, [AudioProcessingStarted(audio_id=audio_id)], 1, META
        )

        events = await store.get_events(AUDIO_FILE, audio_id, from_version=2)

        assert [e.version for e in events] == [2]

    async def test_unknown_stream_is_empty(self, store: EventStore) -> None:
        assert await store.get_events(AUDIO_FILE, uuid4()) == []

    async def test_stale_expected_version_is_a_conflict(
        self, store: EventStore
    ) -> None:
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)

        with pytest.raises(ConcurrencyError) as caught:
            await store.append_events(
                AUDIO_FILE, audio_id, [created(audio_id)], 0, META
            )

        assert caught.value.expected_version == 0
        assert caught.value.actual_version == 1
        assert len(await store.get_events(AUDIO_FILE, audio_id)) == 1

    @pytest.mark.parametrize(("stored", "expected"), [(0, 5), (1, 3)])
    async def test_an_expected_version_ahead_of_the_stream_is_refused(
        self, store: EventStore, stored: int, expected: int
    ) -> None:
        audio_id = uuid4()
        if stored:
            await store.append_events(
                AUDIO_FILE, audio_id, [created(audio_id)], 0, META
            )

        # A version nobody read: appending after it would leave a gap.
        with pytest.raises(ConcurrencyError) as caught:
            await store.append_events(
                AUDIO_FILE,
                audio_id,
                [AudioProcessingStarted(audio_id=audio_id)],
                expected,
                META,
            )

        assert caught.value.expected_version == expected
        assert caught.value.actual_version == stored
        assert [e.version for e in await store.get_events(AUDIO_FILE, audio_id)] == (
            list(range(1, stored + 1))
        )

    async def test_multi_event_commit_is_all_or_nothing(
        self, store: EventStore
    ) -> None:
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        await store.append_events(
            AUDIO_FILE, audio_id, [AudioProcessingStarted(audio_id=audio_id)], 1, META
        )

        # Claims versions 2 and 3; version 2 exists, so nothing may be written.
        with pytest.raises(ConcurrencyError):
            await store.append_events(
                AUDIO_FILE,
                audio_id,
                [
                    AudioProcessingStarted(audio_id=audio_id),
                    AudioProcessingCompleted(audio_id=audio_id),
                ],
                1,
                META,
            )

        assert [e.version for e in await store.get_events(AUDIO_FILE, audio_id)] == [
            1,
            2,
        ]

    async def test_concurrent_writers_exactly_one_wins(self, store: EventStore) -> None:
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)

        async def attempt() -> bool:
            try:
                await store.append_events(
                    AUDIO_FILE,
                    audio_id,
                    [AudioProcessingStarted(audio_id=audio_id)],
                    1,
                    META,
                )
            except ConcurrencyError:
                return False
            return True

        outcomes = await asyncio.gather(*(attempt() for _ in range(8)))

        assert outcomes.count(True) == 1
        assert [e.version for e in await store.get_events(AUDIO_FILE, audio_id)] == [
            1,
            2,
        ]

    async def test_an_event_too_large_for_one_item_writes_nothing(
        self, store: EventStore
    ) -> None:
        audio_id = uuid4()
        huge = AudioCreated(
            audio_id=audio_id, user_id=uuid4(), s3_key="k", title="x" * 400_000
        )

        with pytest.raises(EventTooLargeError):
            await store.append_events(AUDIO_FILE, audio_id, [huge], 0, META)

        assert await store.get_events(AUDIO_FILE, audio_id) == []

    async def test_events_by_type_from_a_time(self, store: EventStore) -> None:
        before = datetime.now(UTC) - timedelta(seconds=1)
        ids = [uuid4() for _ in range(3)]
        for audio_id in ids:
            await store.append_events(
                AUDIO_FILE, audio_id, [created(audio_id)], 0, META
            )

        found = await store.get_events_by_type(
            "AudioCreated", from_time=before, limit=1000
        )
        later = await store.get_events_by_type(
            "AudioCreated", from_time=datetime.now(UTC) + timedelta(hours=1)
        )

        assert set(ids) <= {e.aggregate_id for e in found}
        assert later == []

    async def test_events_by_type_from_a_time_with_another_offset(
        self, store: EventStore
    ) -> None:
        # 09:00 in Tokyo is 00:00 UTC: one bound, however it is written.
        tokyo = timezone(timedelta(hours=9))
        audio_id = uuid4()
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
        [stored] = await store.get_events(AUDIO_FILE, audio_id)
        just_before = (stored.occurred_at - timedelta(milliseconds=1)).astimezone(tokyo)
        just_after = (stored.occurred_at + timedelta(milliseconds=1)).astimezone(tokyo)

        from_before = await store.get_events_by_type(
            "AudioCreated", from_time=just_before, limit=100_000
        )
        from_after = await store.get_events_by_type(
            "AudioCreated", from_time=just_after, limit=100_000
        )

        assert audio_id in {e.aggregate_id for e in from_before}
        assert audio_id not in {e.aggregate_id for e in from_after}
