"""Parking keeps each audio in order; transient failures park nothing."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID, uuid4

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from nova_events import EventEnvelope, EventMetadata, dumps
from nova_platform.batches import BatchProcessor, is_transient
from nova_platform.parking import InMemoryParking, Record, redrive


def record(
    audio_id: UUID, version: int, offset: int, value: bytes | None = None
) -> Record:
    envelope = EventEnvelope(
        aggregate_type="AudioFile",
        aggregate_id=audio_id,
        event_type="AudioProcessingCompleted",
        schema_version=1,
        version=version,
        metadata=EventMetadata(correlation_id="c"),
        data={"audio_id": str(audio_id)},
    )
    return Record(
        key=str(audio_id).encode(),
        value=dumps(envelope) if value is None else value,
        topic="t",
        partition=0,
        offset=offset,
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


async def test_redrive_repairs_then_unparks_each_audio() -> None:
    parking = InMemoryParking()
    first, second = uuid4(), uuid4()
    await parking.park(str(first), [], "poison")
    await parking.park(str(second), [], "poison")
    repaired: list[UUID] = []

    async def repair(audio_id: UUID) -> None:
        assert await parking.is_parked(str(audio_id)), "repair runs before unpark"
        repaired.append(audio_id)

    done = await redrive(parking, repair)

    assert sorted(repaired, key=str) == sorted([first, second], key=str)
    assert set(done) == {str(first), str(second)}
    assert parking.marks == {}
