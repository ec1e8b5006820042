"""Sealing and opening personal fields: AES-GCM per user, erasure, the key cache."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Collection
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from nova_events import (
    AUDIO_FILE,
    SEALED_KEY,
    USER,
    AudioCreated,
    AudioProcessingStarted,
    EventEnvelope,
    EventMetadata,
    Segment,
    TranscriptionCompleted,
    UserErased,
    decode_payload,
    encode_payload,
)
from nova_events.personal import ERASED_TEXT
from nova_platform.personal import (
    CLOCK_SKEW_S,
    DEV_MASTER_KEY,
    KeyWrapperMissingError,
    PersonalData,
    PersonalDataError,
    UserErasedError,
    open_personal_data,
)
from nova_platform.settings import NovaSettings
from nova_platform.user_keys import (
    InMemoryUserKeys,
    KeyWrappingError,
    LocalKeyWrapper,
    UserKey,
)

TTL_S = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingWrapper(LocalKeyWrapper):
    def __init__(self) -> None:
        super().__init__(os.urandom(32))
        self.made = 0
        self.unwrapped = 0

    async def new_data_key(self, user_id: UUID) -> tuple[bytes, bytes]:
        self.made += 1
        await asyncio.sleep(0)
        return await super().new_data_key(user_id)

    async def unwrap(self, wrapped: bytes, user_id: UUID) -> bytes:
        self.unwrapped += 1
        return await super().unwrap(wrapped, user_id)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys() -> InMemoryUserKeys:
    return InMemoryUserKeys()


@pytest.fixture
def wrapper() -> CountingWrapper:
    return CountingWrapper()


def personal_data(
    keys: InMemoryUserKeys, wrapper: LocalKeyWrapper, clock: FakeClock
) -> PersonalData:
    return PersonalData(keys, wrapper, cache_ttl_s=TTL_S, clock=clock)


@pytest.fixture
def cipher(
    keys: InMemoryUserKeys, wrapper: CountingWrapper, clock: FakeClock
) -> PersonalData:
    return personal_data(keys, wrapper, clock)


def envelope(event: Any, version: int = 1) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=event.audio_id,
        event_type=event.event_type(),
        schema_version=event.schema_version,
        version=version,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(event),
    )


def created(owner: UUID, title: str = "Quarterly numbers") -> EventEnvelope:
    audio_id = uuid4()
    return envelope(
        AudioCreated(
            audio_id=audio_id,
            user_id=owner,
            s3_key=f"audio/{owner}/{audio_id}.wav",
            metadata={"client": "Acme"},
            title=title,
            file_name="q3.wav",
            content_type="audio/wav",
            duration_s=12.5,
            language="en-US",
        )
    )


def transcribed(audio_id: UUID | None = None) -> EventEnvelope:
    return envelope(
        TranscriptionCompleted(
            audio_id=audio_id or uuid4(),
            text="revenue fell by half",
            confidence=0.87,
            language="en-US",
            segments=(Segment(start=0, end=2, text="revenue fell by half"),),
        ),
        version=3,
    )


def user_erased(user_id: UUID) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type=USER,
        aggregate_id=user_id,
        event_type="UserErased",
        schema_version=1,
        version=1,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(UserErased(user_id=user_id, erased_at=datetime.now(UTC))),
    )


def with_sealed(sealed: EventEnvelope, **changes: Any) -> EventEnvelope:
    data = dict(sealed.data)
    data[SEALED_KEY] = {**data[SEALED_KEY], **changes}
    return sealed.model_copy(update={"data": data})


# sealing and opening


async def test_sealed_data_keeps_ids_and_facts_readable_and_hides_the_rest(
    cipher: PersonalData,
) -> None:
    owner = uuid4()
    original = created(owner)

    sealed = await cipher.seal(original, owner)

    raw = sealed.model_dump_json()
    for secret in ("Quarterly", "Acme", "q3.wav", f"{original.aggregate_id}.wav"):
        assert secret not in raw
    assert sealed.data["user_id"] == str(owner)
    assert sealed.data["duration_s"] == 12.5
    assert sealed.data["language"] == "en-US"
    part = sealed.data[SEALED_KEY]
    assert set(part) == {"alg", "key_id", "nonce", "ciphertext"}
    assert (part["alg"], part["key_id"]) == ("AES-256-GCM", str(owner))
    assert len(base64.b64decode(part["nonce"])) == 12
    assert original.data["title"] == "Quarterly numbers", "the original is unchanged"


async def test_opening_gives_back_exactly_what_was_sealed(cipher: PersonalData) -> None:
    owner = uuid4()
    for original in (created(owner), transcribed()):
        opened = await cipher.open(await cipher.seal(original, owner))

        assert opened.data == original.data
        assert not opened.erased
        assert decode_payload(opened) == decode_payload(original)


async def test_every_seal_uses_a_fresh_nonce(cipher: PersonalData) -> None:
    owner = uuid4()
    original = transcribed()

    first = await cipher.seal(original, owner)
    second = await cipher.seal(original, owner)

    assert first.data[SEALED_KEY]["nonce"] != second.data[SEALED_KEY]["nonce"]
    assert first.data[SEALED_KEY]["ciphertext"] != second.data[SEALED_KEY]["ciphertext"]


async def test_events_without_personal_fields_and_sealed_ones_pass_unchanged(
    cipher: PersonalData, wrapper: CountingWrapper
) -> None:
    owner = uuid4()
    started = envelope(AudioProcessingStarted(audio_id=uuid4()), version=2)
    sealed = await cipher.seal(transcribed(), owner)

    assert await cipher.seal(started, owner) is started
    assert await cipher.seal(sealed, owner) is sealed
    assert await cipher.open(started) is started
    assert wrapper.made == 1


async def test_events_stored_before_sealing_open_unchanged(
    cipher: PersonalData, keys: InMemoryUserKeys
) -> None:
    legacy = created(uuid4())

    opened = await cipher.open(legacy)

    assert opened is legacy
    assert keys.reads == 0


# tampering and moving


async def test_a_changed_ciphertext_or_nonce_does_not_open(
    cipher: PersonalData,
) -> None:
    sealed = await cipher.seal(transcribed(), uuid4())
    part = sealed.data[SEALED_KEY]
    flipped = bytearray(base64.b64decode(part["ciphertext"]))
    flipped[0] ^= 1
    other_nonce = base64.b64encode(os.urandom(12)).decode()

    for tampered in (
        with_sealed(sealed, ciphertext=base64.b64encode(bytes(flipped)).decode()),
        with_sealed(sealed, nonce=other_nonce),
    ):
        with pytest.raises(PersonalDataError, match="changed or copied"):
            await cipher.open(tampered)


async def test_a_malformed_sealed_part_is_refused_clearly(cipher: PersonalData) -> None:
    sealed = await cipher.seal(transcribed(), uuid4())

    for broken in (
        with_sealed(sealed, alg="ROT13"),
        with_sealed(sealed, nonce="not base64!"),
        with_sealed(sealed, nonce=base64.b64encode(b"short").decode()),
        with_sealed(sealed, key_id="someone"),
        sealed.model_copy(update={"data": {**sealed.data, SEALED_KEY: "x"}}),
    ):
        with pytest.raises(PersonalDataError):
            await cipher.open(broken)


async def test_a_sealed_part_is_bound_to_its_event(cipher: PersonalData) -> None:
    owner = uuid4()
    sealed = await cipher.seal(transcribed(), owner)
    other_user = uuid4()
    await cipher.seal(transcribed(), other_user)  # that user has a key too

    moved = [
        sealed.model_copy(update={"event_id": uuid4()}),
        sealed.model_copy(update={"aggregate_id": uuid4()}),
        sealed.model_copy(update={"aggregate_type": "Podcast"}),
        sealed.model_copy(update={"event_type": "AudioCreated"}),
        sealed.model_copy(update={"schema_version": 2}),
        with_sealed(sealed, key_id=str(other_user)),
    ]
    for each in moved:
        with pytest.raises(PersonalDataError):
            await cipher.open(each)
    # The version in the stream is not bound: a store may renumber nothing.
    assert (await cipher.open(sealed.model_copy(update={"version": 9}))).data


# erasure


async def test_after_erasure_events_open_to_marked_erased_values(
    cipher: PersonalData,
) -> None:
    owner = uuid4()
    stored = [
        await cipher.seal(created(owner), owner),
        await cipher.seal(transcribed(), owner),
    ]

    await cipher.erase(owner)
    opened = await cipher.open_all(stored)

    assert all(e.erased for e in opened)
    first, second = (decode_payload(e) for e in opened)
    assert isinstance(first, AudioCreated)
    assert isinstance(second, TranscriptionCompleted)
    assert (first.s3_key, first.title, first.file_name, first.metadata) == (
        ERASED_TEXT,
        None,
        None,
        {},
    )
    assert first.user_id == owner
    assert first.duration_s == 12.5
    assert second.text == ERASED_TEXT
    assert [s.text for s in second.segments] == [ERASED_TEXT]
    assert second.confidence == 0.87
    for event in opened:
        assert SEALED_KEY not in event.data


async def test_nothing_is_sealed_for_an_erased_user_and_no_key_is_made_again(
    cipher: PersonalData, keys: InMemoryUserKeys, wrapper: CountingWrapper
) -> None:
    owner = uuid4()
    erased_at = await cipher.erase(owner)  # before any key existed

    with pytest.raises(UserErasedError) as raised:
        await cipher.seal(created(owner), owner)

    assert raised.value.erased_at == erased_at
    assert wrapper.made == 0
    assert keys.keys[owner].wrapped_key is None
    assert await cipher.erase(owner) == erased_at, "erasing again keeps the time"
    assert await cipher.erased_at(owner) == erased_at
    assert await cipher.erased_at(uuid4()) is None


async def test_events_of_an_owner_without_any_key_open_as_erased(
    cipher: PersonalData, keys: InMemoryUserKeys
) -> None:
    owner = uuid4()
    sealed = await cipher.seal(transcribed(), owner)
    del keys.keys[owner]  # e.g. the item was deleted by hand
    cipher.forget(owner)

    assert (await cipher.open(sealed)).erased


# the key cache


async def test_opening_many_events_reads_the_keys_once_per_ttl_in_one_request(
    cipher: PersonalData,
    keys: InMemoryUserKeys,
    wrapper: CountingWrapper,
    clock: FakeClock,
) -> None:
    owners = [uuid4(), uuid4()]
    sealed = [await cipher.seal(transcribed(), o) for o in owners for _ in range(50)]
    reader = personal_data(keys, wrapper, clock)
    reads = keys.reads

    await reader.open_all(sealed)
    await reader.open_all(sealed)

    assert keys.reads - reads == 1, "both owners' keys in one batched read"
    assert wrapper.unwrapped == 2

    clock.now += TTL_S + 0.1
    await reader.open_all(sealed)
    assert keys.reads - reads == 2


class HeldKeys(InMemoryUserKeys):
    """Holds each batched read until `release` is set."""

    def __init__(self, shared: InMemoryUserKeys) -> None:
        super().__init__()
        self.keys = shared.keys
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def get_many(self, user_ids: Collection[UUID]) -> dict[UUID, UserKey]:
        found = await super().get_many(user_ids)
        self.reading.set()
        await self.release.wait()
        return found


async def test_an_erasure_while_keys_are_read_is_not_undone_by_the_read(
    cipher: PersonalData,
    keys: InMemoryUserKeys,
    wrapper: CountingWrapper,
    clock: FakeClock,
) -> None:
    owners = [uuid4(), uuid4()]
    sealed = [await cipher.seal(transcribed(), o) for o in owners]
    held = HeldKeys(keys)
    reader = personal_data(held, wrapper, clock)

    opening = asyncio.create_task(reader.open_all(sealed))
    await held.reading.wait()
    await reader.erase(owners[0])
    held.release.set()
    opened = await opening

    assert [o.erased for o in opened] == [True, False]
    assert (await reader.open(sealed[0])).erased


async def test_an_erasure_elsewhere_is_seen_once_the_ttl_passed(
    cipher: PersonalData, keys: InMemoryUserKeys, clock: FakeClock
) -> None:
    owner = uuid4()
    sealed = await cipher.seal(transcribed(), owner)
    elsewhere = personal_data(keys, LocalKeyWrapper(os.urandom(32)), clock)

    assert not (await cipher.open(sealed)).erased
    await elsewhere.erase(owner)

    clock.now += TTL_S - 1
    assert not (await cipher.open(sealed)).erased, "cached for at most the TTL"
    clock.now += 1.1
    assert (await cipher.open(sealed)).erased


async def test_the_erasing_process_forgets_the_key_at_once(
    cipher: PersonalData,
) -> None:
    owner = uuid4()
    sealed = await cipher.seal(transcribed(), owner)
    assert not (await cipher.open(sealed)).erased

    await cipher.erase(owner)

    assert (await cipher.open(sealed)).erased
    with pytest.raises(UserErasedError):
        await cipher.seal(transcribed(), owner)


async def test_the_cached_erasure_check_reads_the_key_store_once_per_ttl(
    cipher: PersonalData,
    keys: InMemoryUserKeys,
    wrapper: CountingWrapper,
    clock: FakeClock,
) -> None:
    owner, never_stored = uuid4(), uuid4()
    await cipher.seal(transcribed(), owner)
    elsewhere = personal_data(keys, wrapper, clock)
    reads = keys.reads

    assert await elsewhere.cached_erased_at(owner) is None
    assert await elsewhere.cached_erased_at(never_stored) is None
    erased_at = await cipher.erase(owner)
    assert await cipher.cached_erased_at(owner) == erased_at, "the eraser at once"
    clock.now += TTL_S - 1
    assert await elsewhere.cached_erased_at(owner) is None, "cached for the TTL"
    assert await elsewhere.cached_erased_at(never_stored) is None
    assert keys.reads - reads == 2

    clock.now += 1.1
    assert await elsewhere.cached_erased_at(owner) == erased_at
    assert keys.reads - reads == 3


async def test_a_user_erased_event_drops_the_cached_key_before_its_batch_opens(
    cipher: PersonalData, keys: InMemoryUserKeys, clock: FakeClock
) -> None:
    owner = uuid4()
    sealed = await cipher.seal(transcribed(), owner)
    assert not (await cipher.open(sealed)).erased
    await personal_data(keys, LocalKeyWrapper(os.urandom(32)), clock).erase(owner)

    opened = await cipher.open_each([sealed, user_erased(owner), sealed])

    assert [e.erased for e in opened if isinstance(e, EventEnvelope)] == [
        True,
        False,
        True,
    ]


async def test_open_each_reports_a_bad_event_in_its_place(
    cipher: PersonalData,
) -> None:
    owner = uuid4()
    good = await cipher.seal(transcribed(), owner)
    bad = good.model_copy(update={"event_id": uuid4()})

    results = await cipher.open_each([good, bad, good])

    assert isinstance(results[0], EventEnvelope)
    assert isinstance(results[1], PersonalDataError)
    assert isinstance(results[2], EventEnvelope)
    with pytest.raises(PersonalDataError):
        await cipher.open_all([good, bad])


# creating keys


async def test_concurrent_first_events_of_a_user_make_one_key(
    cipher: PersonalData, keys: InMemoryUserKeys, wrapper: CountingWrapper
) -> None:
    owner = uuid4()

    sealed = await asyncio.gather(
        *(cipher.seal(transcribed(), owner) for _ in range(20))
    )

    assert wrapper.made == 1
    assert len({s.data[SEALED_KEY]["key_id"] for s in sealed}) == 1
    assert keys.keys[owner].wrapped_key is not None


async def test_of_two_processes_creating_a_key_the_loser_uses_the_winners(
    keys: InMemoryUserKeys, clock: FakeClock
) -> None:
    master = os.urandom(32)
    first = personal_data(keys, LocalKeyWrapper(master), clock)
    second = personal_data(keys, LocalKeyWrapper(master), clock)
    owner = uuid4()

    a, b = await asyncio.gather(
        first.seal(transcribed(), owner), second.seal(transcribed(), owner)
    )

    assert (await second.open(a)).data == (await first.open(a)).data
    assert (await first.open(b)).data == (await second.open(b)).data


async def test_a_key_wrapped_with_another_master_key_fails_clearly(
    keys: InMemoryUserKeys, clock: FakeClock
) -> None:
    owner = uuid4()
    sealed = await personal_data(keys, LocalKeyWrapper(os.urandom(32)), clock).seal(
        transcribed(), owner
    )

    with pytest.raises(KeyWrappingError, match="NOVA_MASTER_KEY"):
        await personal_data(keys, LocalKeyWrapper(os.urandom(32)), clock).open(sealed)


# waiting for an erasure to settle


async def test_an_erasure_is_applied_once_every_cached_key_expired(
    keys: InMemoryUserKeys, wrapper: CountingWrapper
) -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    erased_at = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    wall = erased_at.timestamp() + 5
    cipher = PersonalData(
        keys, wrapper, cache_ttl_s=TTL_S, wall_clock=lambda: wall, sleep=sleep
    )

    await cipher.wait_for_erasure(erased_at)
    wall = erased_at.timestamp() + 3600
    await cipher.wait_for_erasure(erased_at)

    assert slept == [pytest.approx(TTL_S + CLOCK_SKEW_S - 5)]


# configuration


async def test_a_service_does_not_start_without_a_key_encryption_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOVA_MASTER_KEY", raising=False)
    monkeypatch.delenv("NOVA_KMS_KEY_ID", raising=False)
    async with AsyncExitStack() as stack:
        with pytest.raises(KeyWrapperMissingError, match="NOVA_MASTER_KEY"):
            await open_personal_data(NovaSettings(), stack)


async def test_the_master_key_must_be_32_bytes_and_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOVA_KMS_KEY_ID", raising=False)
    short = NovaSettings(master_key=base64.b64encode(b"short").decode())
    async with AsyncExitStack() as stack:
        with pytest.raises(ValueError, match="32 random bytes in base64"):
            await open_personal_data(short, stack)
        opened = await open_personal_data(
            NovaSettings(master_key=DEV_MASTER_KEY), stack
        )
    assert isinstance(opened, PersonalData)
    with pytest.raises(ValidationError, match="not both"):
        NovaSettings(master_key=DEV_MASTER_KEY, kms_key_id="alias/nova")
