"""Parking keeps each audio in order; transient failures park nothing."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID, uuid4

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from nova_events import EventEnvelope, EventMetadata, dumps, loads
from nova_events.topics import HEADER_CORRELATION_ID
from nova_platform.batches import BatchProcessor, is_transient
from nova_platform.logging import JsonFormatter
from nova_platform.parking import InMemoryParking, Record, redrive


def record(
    audio_id: UUID,
    version: int,
    offset: int,
    value: bytes | None = None,
    correlation_id: str = "c",
) -> Record:
    envelope = EventEnvelope(
        aggregate_type="AudioFile",
        aggregate_id=audio_id,
        event_type="AudioProcessingCompleted",
        schema_version=1,
        version=version,
        metadata=EventMetadata(correlation_id=correlation_id),
        data={"audio_id": str(audio_id)},
    )
    return Record(
        key=str(audio_id).encode(),
        value=dumps(envelope) if value is None else value,
        topic="t",
        partition=0,
        offset=offset,
        headers=[(HEADER_CORRELATION_ID, correlation_id.encode())],
    )


class Handler:
    def __init__(self, poison: set[UUID] | None = None, outage: int = 0) -> None:
        self.applied: list[tuple[UUID, int]] = []
        self.poison = poison or set()
        self.outage = outage

    async def __call__(self, envelopes: Sequence[EventEnvelope]) -> None:
        if self.outage:
            self.outage -= 1
            raise EndpointConnectionError(endpoint_url="http://db")
        if any(e.aggregate_id in self.poison for e in envelopes):
            raise ValueError("this audio's event breaks the projection")
        self.applied.extend((e.aggregate_id, e.version) for e in envelopes)


async def test_an_undecodable_record_parks_its_audio_and_not_the_others() -> None:
    bad, good = uuid4(), uuid4()
    handler, parking = Handler(), InMemoryParking()
    processor = BatchProcessor(handler, parking)

    await processor.process(
        [
            record(bad, 1, 0),
            record(good, 1, 1),
            record(bad, 2, 2, value=b"\x00 not json"),
            record(bad, 3, 3),
            record(good, 2, 4),
        ]
    )
    await processor.process([record(bad, 4, 5), record(good, 3, 6)])

    assert handler.applied == [(bad, 1), (good, 1), (good, 2), (good, 3)]
    assert [(a, r.offset) for a, r in parking.dead_letters] == [
        (str(bad), 2),
        (str(bad), 3),
        (str(bad), 5),
    ]
    assert set(parking.marks) == {str(bad)}


async def test_a_failing_audio_is_narrowed_down_and_parked() -> None:
    poison, good = uuid4(), uuid4()
    handler, parking = Handler(poison={poison}), InMemoryParking()

    await BatchProcessor(handler, parking).process(
        [record(poison, 1, 0), record(good, 1, 1)]
    )

    assert handler.applied == [(good, 1)]
    assert [r.offset for _, r in parking.dead_letters] == [0]


async def test_an_outage_parks_nothing_and_asks_for_a_retry() -> None:
    audio = uuid4()
    handler, parking = Handler(outage=1), InMemoryParking()
    processor = BatchProcessor(handler, parking)

    with pytest.raises(EndpointConnectionError):
        await processor.process([record(audio, 1, 0)])
    await processor.process([record(audio, 1, 0)])

    assert parking.dead_letters == []
    assert handler.applied == [(audio, 1)]


async def test_after_a_redrive_the_audio_flows_again() -> None:
    audio = uuid4()
    handler, parking = Handler(), InMemoryParking()
    processor = BatchProcessor(handler, parking)
    await processor.process([record(audio, 1, 0, value=b"garbage")])

    await parking.unpark(str(audio))  # what `redrive` does once it repaired
    await processor.process([record(audio, 2, 1)])

    assert handler.applied == [(audio, 2)]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ClientError({"Error": {"Code": "ThrottlingException"}}, "PutItem"), True),
        (
            ClientError(
                {"Error": {"Code": "X"}, "ResponseMetadata": {"HTTPStatusCode": 503}},  # type: ignore[typeddict-item]
                "PutItem",
            ),
            True,
        ),
        (ClientError({"Error": {"Code": "ValidationException"}}, "PutItem"), False),
        (ValueError("bad data"), False),
        (KeyError("field"), False),
    ],
)
def test_transient_errors_are_told_apart(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


async def test_redrive_repairs_unparks_and_repairs_each_audio_again() -> None:
    parking = InMemoryParking()
    first, second = uuid4(), uuid4()
    await parking.park(str(first), [record(first, 1, 0)], "poison")
    await parking.park(str(second), [record(second, 1, 1)], "poison")
    repairs: list[tuple[str, UUID, bool]] = []

    async def repair(aggregate_type: str, audio_id: UUID) -> None:
        parked = await parking.is_parked(str(audio_id))
        repairs.append((aggregate_type, audio_id, parked))

    done = await redrive(parking, repair)

    assert set(done) == {str(first), str(second)}
    for audio_id in (first, second):
        assert [(t, parked) for t, a, parked in repairs if a == audio_id] == [
            ("AudioFile", True),
            ("AudioFile", False),
        ]
    assert parking.marks == {}


def user_erased_record(user_id: UUID, offset: int) -> Record:
    envelope = EventEnvelope(
        aggregate_type="User",
        aggregate_id=user_id,
        event_type="UserErased",
        schema_version=1,
        version=1,
        metadata=EventMetadata(correlation_id="c"),
        data={"user_id": str(user_id), "erased_at": "2026-03-09T08:00:00+00:00"},
    )
    return Record(str(user_id).encode(), dumps(envelope), "t", 0, offset)


async def test_a_parked_user_stream_is_redriven_from_the_user_stream() -> None:
    user, audio = uuid4(), uuid4()

    class FailsOnUsers(Handler):
        async def __call__(self, envelopes: Sequence[EventEnvelope]) -> None:
            if any(e.aggregate_type == "User" for e in envelopes):
                raise ValueError("a bug in applying UserErased")
            await super().__call__(envelopes)

    parking = InMemoryParking()
    processor = BatchProcessor(FailsOnUsers(), parking)
    await processor.process([user_erased_record(user, 0), record(audio, 1, 1)])
    assert set(parking.marks) == {str(user)}
    assert await parking.aggregate_type(str(user)) == "User"
    repairs: list[tuple[str, UUID]] = []

    async def repair(aggregate_type: str, aggregate_id: UUID) -> None:
        repairs.append((aggregate_type, aggregate_id))

    assert await redrive(parking, repair) == [str(user)]
    assert repairs == [("User", user), ("User", user)]
    assert parking.marks == {}


async def test_a_mark_that_names_no_type_has_every_stream_type_repaired() -> None:
    audio = uuid4()
    parking = InMemoryParking()
    await BatchProcessor(Handler(), parking).process(
        [record(audio, 1, 0, value=b"\x00 not json")]
    )
    assert await parking.aggregate_type(str(audio)) is None
    repairs: list[str] = []

    async def repair(aggregate_type: str, aggregate_id: UUID) -> None:
        repairs.append(aggregate_type)

    await redrive(parking, repair)

    assert repairs == ["AudioFile", "User", "AudioFile", "User"]


async def test_a_record_parked_behind_names_the_type_of_an_untyped_mark() -> None:
    audio = uuid4()
    parking = InMemoryParking()
    processor = BatchProcessor(Handler(), parking)
    await processor.process([record(audio, 1, 0, value=b"garbage")])
    await processor.process([record(audio, 2, 1)])

    assert await parking.aggregate_type(str(audio)) == "AudioFile"


@pytest.mark.parametrize(
    ("value", "aggregate_type"),
    [
        (b'{"aggregate_type": "User", "version": "not a number"}', "User"),
        (b'{"aggregate_type": 7}', None),
        (b'["AudioFile"]', None),
        (b"\x00 not json", None),
        (None, None),
    ],
)
def test_a_records_aggregate_type_is_read_loosely(
    value: bytes | None, aggregate_type: str | None
) -> None:
    assert Record(b"k", value, "t", 0, 0).aggregate_type == aggregate_type


async def test_an_event_parked_while_the_redrive_repairs_is_not_left_behind() -> None:
    """Committed between the first repair and the unpark, the event is parked
    behind the mark and only in the dead letters: the second repair applies it."""
    audio = uuid4()
    store: list[int] = [1, 2]  # versions in the event store
    projected: dict[UUID, int] = {}
    processor = BatchProcessor(Handler(), parking := InMemoryParking())
    await processor.process([record(audio, 2, 0, value=b"garbage")])

    async def repair(aggregate_type: str, audio_id: UUID) -> None:
        if aggregate_type != "AudioFile":
            return  # the garbage named no type: the user stream is empty
        seen = max(store)
        if not store[2:]:
            store.append(3)  # meanwhile command-api commits v3 ...
            await processor.process([record(audio, 3, 1)])  # ... and it is parked
        projected[audio_id] = max(projected.get(audio_id, 0), seen)

    await redrive(parking, repair)

    assert [r.offset for _, r in parking.dead_letters] == [0, 1]
    assert projected[audio] == 3


async def test_a_mark_lifted_after_the_check_lets_the_events_through() -> None:
    class RedriveInBetween(InMemoryParking):
        async def is_parked(self, aggregate_id: str) -> bool:
            parked = await super().is_parked(aggregate_id)
            await self.unpark(aggregate_id)  # the redrive wins the race
            return parked

    audio = uuid4()
    handler, parking = Handler(), RedriveInBetween()
    processor = BatchProcessor(handler, parking)
    await processor.process([record(audio, 1, 0, value=b"garbage")])

    await processor.process([record(audio, 2, 1)])

    assert handler.applied == [(audio, 2)]
    assert [r.offset for _, r in parking.dead_letters] == [0]
    assert parking.marks == {}


async def test_audios_parked_elsewhere_are_known_after_a_rebalance() -> None:
    moved = uuid4()
    handler, parking = Handler(), InMemoryParking()
    processor = BatchProcessor(handler, parking)
    await processor.process([record(uuid4(), 1, 0)])  # the parked set is loaded
    # The instance that owned `moved`'s partition parks it, then the group
    # rebalances and hands that partition over.
    await parking.park(str(moved), [], "poison")

    processor.partitions_assigned()
    await processor.process([record(moved, 2, 1)])

    assert (moved, 2) not in handler.applied
    assert [(a, r.offset) for a, r in parking.dead_letters] == [(str(moved), 1)]


class Backend:
    """A handler whose backend is down, or refuses some audios with a 503."""

    def __init__(self, refused: set[UUID] | None = None, down: bool = False) -> None:
        self.refused = refused or set()
        self.down = down
        self.calls = 0
        self.applied: list[tuple[UUID, int]] = []

    async def __call__(self, envelopes: Sequence[EventEnvelope]) -> None:
        self.calls += 1
        if self.down:
            raise EndpointConnectionError(endpoint_url="http://db")
        if any(e.aggregate_id in self.refused for e in envelopes):
            raise ClientError(
                {"Error": {"Code": "X"}, "ResponseMetadata": {"HTTPStatusCode": 503}},  # type: ignore[typeddict-item]
                "PutItem",
            )
        self.applied.extend((e.aggregate_id, e.version) for e in envelopes)


async def attempts_until_done(processor: BatchProcessor, batch: list[Record]) -> int:
    """Process `batch` as the consume loop does: again after each failure."""
    for attempt in range(1, 100):
        try:
            await processor.process(batch)
        except ClientError:
            continue
        return attempt
    raise AssertionError("the batch was never done")


async def test_an_audio_failing_while_others_apply_is_given_up_on() -> None:
    stuck, healthy = uuid4(), uuid4()
    backend, parking = Backend(refused={stuck}), InMemoryParking()
    processor = BatchProcessor(backend, parking, max_attempts=3)

    attempts = await attempts_until_done(
        processor, [record(stuck, 1, 0), record(healthy, 1, 1), record(stuck, 2, 2)]
    )

    # The whole batch once, then audio by audio: three strikes, then parked.
    assert attempts == 4
    assert parking.marks == {str(stuck): parking.marks[str(stuck)]}
    assert parking.marks[str(stuck)].startswith("gave up after 3 attempts: ClientError")
    assert [r.offset for _, r in parking.dead_letters] == [0, 2]
    assert (healthy, 1) in backend.applied


async def test_an_outage_is_retried_forever_and_parks_nothing() -> None:
    audios = [uuid4() for _ in range(5)]
    backend, parking = Backend(down=True), InMemoryParking()
    processor = BatchProcessor(
        backend, parking, max_attempts=2, backends_up=_answers(False)
    )
    batch = [record(a, 1, i) for i, a in enumerate(audios)]

    for _ in range(20):
        calls = backend.calls
        with pytest.raises(EndpointConnectionError):
            await processor.process(batch)
        assert backend.calls - calls <= 2, "an outage costs two calls per retry"

    assert parking.marks == {}
    backend.down = False
    await processor.process(batch)
    assert sorted(backend.applied) == sorted((a, 1) for a in audios)


async def test_a_lone_audio_is_given_up_on_only_while_the_backends_answer() -> None:
    stuck = uuid4()
    backend, parking = Backend(refused={stuck}), InMemoryParking()
    answering = {"up": False}

    async def backends_up() -> bool:
        return answering["up"]

    processor = BatchProcessor(
        backend, parking, max_attempts=2, backends_up=backends_up
    )
    for _ in range(10):
        with pytest.raises(ClientError):
            await processor.process([record(stuck, 1, 0)])
    assert parking.marks == {}

    answering["up"] = True
    # Each retry now counts: it fails, parks at the second, and is done.
    assert await attempts_until_done(processor, [record(stuck, 1, 0)]) == 2
    assert str(stuck) in parking.marks


async def test_an_audio_that_recovers_starts_its_count_again() -> None:
    flaky, healthy = uuid4(), uuid4()
    backend, parking = Backend(refused={flaky}), InMemoryParking()
    processor = BatchProcessor(backend, parking, max_attempts=2)
    batch = [record(flaky, 1, 0), record(healthy, 1, 1)]
    for _ in range(2):  # the whole batch, then one strike
        with pytest.raises(ClientError):
            await processor.process(batch)

    backend.refused.clear()
    await processor.process(batch)
    backend.refused.add(flaky)
    for _ in range(2):
        with pytest.raises(ClientError):
            await processor.process([record(flaky, 2, 2), record(healthy, 2, 3)])

    assert parking.marks == {}


def _answers(up: bool) -> Callable[[], Awaitable[bool]]:
    async def backends_up() -> bool:
        return up

    return backends_up


async def test_log_lines_of_a_record_name_its_correlation_event_and_audio() -> None:
    audio = uuid4()
    lines = CapturedLines()

    async def handler(envelopes: Sequence[EventEnvelope]) -> None:
        logging.getLogger("nova.test.handler").info("applying")

    good = record(audio, 1, 0, correlation_id="corr-1")
    garbage = record(uuid4(), 1, 1, value=b"garbage", correlation_id="corr-2")
    with lines.captured():
        await BatchProcessor(handler, InMemoryParking()).process([good, garbage])

    applying = lines.of("applying")
    assert applying["correlation_id"] == "corr-1"
    assert applying["audio_id"] == str(audio)
    assert applying["event_id"] == str(loads(good.value or b"").event_id)
    undecodable = lines.of("undecodable record")
    assert undecodable["correlation_id"] == "corr-2"
    assert undecodable["audio_id"] == garbage.aggregate_id
    assert "event_id" not in undecodable
    assert all("correlation_id" not in line for line in lines.after_processing())


class CapturedLines:
    """The JSON lines that nova's formatter writes, captured in memory."""

    def __init__(self) -> None:
        self._stream = io.StringIO()
        self._processing_done = 0

    @contextmanager
    def captured(self) -> Iterator[None]:
        handler = logging.StreamHandler(self._stream)
        handler.setFormatter(JsonFormatter("test"))
        root = logging.getLogger()
        root.addHandler(handler)
        level = root.level
        root.setLevel(logging.INFO)
        try:
            yield
            self._processing_done = len(self.lines())
            logging.getLogger("nova.test").info("after the batch")
        finally:
            root.removeHandler(handler)
            root.setLevel(level)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self._stream.getvalue().splitlines()]

    def of(self, message: str) -> dict[str, Any]:
        (line,) = [line for line in self.lines() if line["message"] == message]
        return line

    def after_processing(self) -> list[dict[str, Any]]:
        return self.lines()[self._processing_done :]
