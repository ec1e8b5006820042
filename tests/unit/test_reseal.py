"""Resealing legacy plaintext events in place, so that erasure reaches them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

import orjson
import pytest

from nova_command_api.application.reseal import Resealer, StoredEvent
from nova_command_api.entrypoints.relay import main as relay_main
from nova_events import (
    AUDIO_FILE,
    USER,
    AudioCreated,
    AudioProcessingStarted,
    EventEnvelope,
    EventPayload,
    Segment,
    TranscriptionCompleted,
    UserErased,
)
from nova_events.envelope import SEALED_KEY
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper

from ..stored_events import envelope

SECRETS = ("Private title", "private.wav", "private words", "Acme")
ERASED_AT = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)


def legacy_stream(audio_id: UUID, owner: UUID) -> list[EventEnvelope]:
    """An audio's events as stored before sealing: personal fields in plaintext."""
    events: list[EventPayload] = [
        AudioCreated(
            audio_id=audio_id,
            user_id=owner,
            s3_key=f"audio/{owner}/private.wav",
            title="Private title",
            metadata={"client": "Acme"},
        ),
        AudioProcessingStarted(audio_id=audio_id),
        TranscriptionCompleted(
            audio_id=audio_id,
            text="private words",
            confidence=0.9,
            language="en-US",
            segments=(Segment(start=0, end=1, text="private words"),),
        ),
    ]
    return [envelope(AUDIO_FILE, audio_id, v, e) for v, e in enumerate(events, 1)]


class Store:
    """The event store's items: `data` kept serialised, as DynamoDB holds it."""

    def __init__(self, page_size: int = 2) -> None:
        self.items: dict[tuple[str, int], tuple[EventEnvelope, str]] = {}
        self.page_size = page_size
        self.writes = 0
        self.before_write: list[StoredEvent] = []
        """Items another writer changes just before the reseal's write."""

    def add(self, *envelopes: EventEnvelope) -> None:
        for e in envelopes:
            self.items[(e.stream_key, e.version)] = (e, orjson.dumps(e.data).decode())

    def stored(self, e: EventEnvelope) -> EventEnvelope:
        return self.items[(e.stream_key, e.version)][0]

    async def pages(self) -> AsyncIterator[Sequence[StoredEvent]]:
        found = [StoredEvent(e, raw) for e, raw in self.items.values()]
        for start in range(0, len(found), self.page_size):
            yield found[start : start + self.page_size]

    async def first_event(
        self, aggregate_type: str, aggregate_id: UUID
    ) -> EventEnvelope | None:
        found = self.items.get((f"{aggregate_type}#{aggregate_id}", 1))
        return found[0] if found else None

    async def replace_data(self, event: StoredEvent, sealed: EventEnvelope) -> bool:
        key = (event.envelope.stream_key, event.envelope.version)
        if event in self.before_write:
            changed = event.envelope.model_copy(update={"data": {"other": 1}})
            self.items[key] = (changed, orjson.dumps(changed.data).decode())
        if self.items[key][1] != event.stored_data:
            return False
        self.writes += 1
        self.items[key] = (sealed, orjson.dumps(sealed.data).decode())
        return True


@pytest.fixture
def keys() -> InMemoryUserKeys:
    return InMemoryUserKeys()


@pytest.fixture
def personal(keys: InMemoryUserKeys) -> PersonalData:
    return PersonalData(keys, LocalKeyWrapper(os.urandom(32)))


def holds_no_secret(value: object) -> None:
    text = repr(value)
    for secret in SECRETS:
        assert secret not in text


async def test_legacy_events_are_sealed_and_then_shredded_by_erasure(
    personal: PersonalData,
) -> None:
    alice, bob = uuid4(), uuid4()
    alices, bobs = legacy_stream(uuid4(), alice), legacy_stream(uuid4(), bob)
    store = Store()
    store.add(*alices, *bobs)

    report = await Resealer(store, personal, dry_run=False).run()

    assert (report.scanned, report.sealed, report.shredded) == (6, 4, 0)
    assert report.left == {"no personal field": 2}
    assert report.plaintext_left == 0
    for e in alices + bobs:
        stored = store.stored(e)
        holds_no_secret(stored.data)
        assert await personal.open(stored) == e, "opens to what it was"
        assert stored.event_id == e.event_id
    assert SEALED_KEY not in store.stored(alices[1]).data  # nothing personal

    await personal.erase(alice)
    personal.forget(alice)

    for e in alices:
        opened = await personal.open(store.stored(e))
        holds_no_secret(opened.data)
        assert opened.erased == (e.version != 2)
    assert [await personal.open(store.stored(e)) for e in bobs] == bobs


async def test_the_legacy_events_of_an_already_erased_user_are_shredded(
    personal: PersonalData, keys: InMemoryUserKeys
) -> None:
    carol = uuid4()
    stream = legacy_stream(uuid4(), carol)
    store = Store()
    store.add(
        *stream,
        envelope(USER, carol, 1, UserErased(user_id=carol, erased_at=ERASED_AT)),
    )
    await personal.erase(carol)
    assert (await personal.open(stream[0])).data["title"] == "Private title"

    report = await Resealer(store, personal, dry_run=False).run()

    assert (report.sealed, report.shredded) == (0, 2)
    for e in stream:
        opened = await personal.open(store.stored(e))
        holds_no_secret(store.stored(e).data)
        holds_no_secret(opened.data)
    assert (await personal.open(store.stored(stream[0]))).erased
    assert keys.keys[carol].wrapped_key is None, "no key was made again"


async def test_a_dry_run_counts_and_writes_nothing_nor_makes_a_key(
    personal: PersonalData, keys: InMemoryUserKeys
) -> None:
    alice, carol = uuid4(), uuid4()
    store = Store()
    store.add(*legacy_stream(uuid4(), alice), *legacy_stream(uuid4(), carol))
    await personal.erase(carol)
    before = dict(store.items)

    report = await Resealer(store, personal, dry_run=True).run()

    assert (report.sealed, report.shredded) == (2, 2)
    assert store.items == before
    assert store.writes == 0
    assert alice not in keys.keys
    assert "2 legacy events would be sealed with their owner's key" in report.lines()


async def test_a_second_run_finds_everything_sealed(personal: PersonalData) -> None:
    store = Store()
    store.add(*legacy_stream(uuid4(), uuid4()))
    await Resealer(store, personal, dry_run=False).run()
    sealed = dict(store.items)

    again = await Resealer(store, personal, dry_run=False).run()

    assert (again.sealed, again.shredded, again.plaintext_left) == (0, 0, 0)
    assert again.left == {"sealed already": 2, "no personal field": 1}
    assert store.items == sealed


async def test_an_item_changed_meanwhile_is_left_alone(personal: PersonalData) -> None:
    store = Store()
    stream = legacy_stream(uuid4(), uuid4())
    store.add(*stream)
    transcript = stream[2]
    store.before_write.append(
        StoredEvent(transcript, store.items[(transcript.stream_key, 3)][1])
    )

    report = await Resealer(store, personal, dry_run=False).run()

    assert report.changed_meanwhile == 1
    assert report.sealed == 1
    assert report.plaintext_left == 1
    assert store.stored(transcript).data == {"other": 1}, "the other write is kept"


async def test_an_audio_whose_owner_is_unknown_stays_and_is_reported(
    personal: PersonalData,
) -> None:
    audio_id = uuid4()
    completed = legacy_stream(audio_id, uuid4())[2]  # its AudioCreated is missing
    store = Store()
    store.add(completed)

    report = await Resealer(store, personal, dry_run=False).run()

    assert report.left == {"owner unknown (no AudioCreated user_id)": 1}
    assert report.plaintext_left == 1
    assert store.stored(completed) == completed


async def test_a_later_event_is_sealed_with_the_key_of_the_audios_creator(
    personal: PersonalData,
) -> None:
    owner = uuid4()
    stream = legacy_stream(uuid4(), owner)
    store = Store(page_size=1)
    store.add(stream[2], stream[0])  # the scan meets the transcript first

    await Resealer(store, personal, dry_run=False).run()

    assert store.stored(stream[2]).data[SEALED_KEY]["key_id"] == str(owner)


async def test_shredding_refuses_a_user_who_was_not_erased(
    personal: PersonalData,
) -> None:
    owner = uuid4()
    with pytest.raises(ValueError, match="was not erased"):
        await personal.shred(legacy_stream(uuid4(), owner)[0], owner)


def test_the_relay_command_line_has_reseal_with_a_dry_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        relay_main(["reseal", "--help"])

    assert "--dry-run" in capsys.readouterr().out
