"""What sealing personal fields costs per event, in process (run by hand).

    .venv/bin/python bench/personal_data.py [--events 2000] [--rounds 7]

For a creation and a transcript (120 segments, about 9 kB of text) it times:

- write: the envelope to the event store's item (`to_item`), plain, and with
  the personal fields sealed first (`PersonalData.seal`, key cached);
- read: the item back to a typed event (`from_item` + `decode_payload`),
  plain, and opened first (`PersonalData.open`, key cached).

No backend is involved: this is the CPU added to each append and to each
event a consumer or a rebuild applies. The key store is read once per user
per `NOVA_KEY_CACHE_TTL_S`, which these loops do not see. Each figure is the
median of `--rounds` rounds, in microseconds per event, with the stored size.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from uuid import UUID, uuid4

import orjson

from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    EventEnvelope,
    EventMetadata,
    EventPayload,
    Segment,
    TranscriptionCompleted,
    decode_payload,
    encode_payload,
)
from nova_platform.event_items import from_item, to_item
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper


def envelope(event: EventPayload, audio_id: object, version: int) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=audio_id,
        event_type=event.event_type(),
        schema_version=event.schema_version,
        version=version,
        metadata=EventMetadata(correlation_id="bench", user_id="bench"),
        data=encode_payload(event),
    )


def samples() -> dict[str, EventEnvelope]:
    user, audio_id = uuid4(), uuid4()
    words = "the quarterly numbers are better than we feared "
    segments = tuple(
        Segment(start=i * 2.0, end=i * 2.0 + 1.9, text=words, confidence=0.9)
        for i in range(120)
    )
    created = AudioCreated(
        audio_id=audio_id,
        user_id=user,
        s3_key=f"audio/{user}/{audio_id}.wav",
        metadata={"meeting": "board", "source": "web-upload"},
        title="Board meeting, March",
        file_name="board-2026-03.wav",
        content_type="audio/wav",
        size_bytes=5_760_044,
        duration_s=240.0,
        language="en-US",
    )
    transcript = TranscriptionCompleted(
        audio_id=audio_id,
        text=words * len(segments),
        confidence=0.91,
        language="en-US",
        segments=segments,
    )
    return {
        "AudioCreated": envelope(created, audio_id, 1),
        "TranscriptionCompleted": envelope(transcript, audio_id, 3),
    }


async def per_event_us(
    step: Callable[[], Awaitable[object]], events: int, rounds: int
) -> float:
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(events):
            await step()
        timings.append((time.perf_counter() - started) / events * 1e6)
    return statistics.median(timings)


async def measure(events: int, rounds: int) -> list[tuple[str, float, float, int, int]]:
    personal = PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
    rows = []
    for name, original in samples().items():
        owner = uuid4()
        sealed = await personal.seal(original, owner)
        await personal.open(sealed)  # the key is cached from here on
        plain_item, sealed_item = to_item(original), to_item(sealed)

        async def write_plain(e: EventEnvelope = original) -> object:
            return to_item(e)

        async def write_sealed(e: EventEnvelope = original, o: UUID = owner) -> object:
            return to_item(await personal.seal(e, o))

        async def read_plain(item: dict[str, object] = plain_item) -> object:
            return decode_payload(from_item(item))

        async def read_sealed(item: dict[str, object] = sealed_item) -> object:
            return decode_payload(await personal.open(from_item(item)))

        write = [
            await per_event_us(f, events, rounds) for f in (write_plain, write_sealed)
        ]
        read = [
            await per_event_us(f, events, rounds) for f in (read_plain, read_sealed)
        ]
        size = [len(orjson.dumps(i)) for i in (plain_item, sealed_item)]
        rows.append((f"{name} write", write[0], write[1], size[0], size[1]))
        rows.append((f"{name} read", read[0], read[1], size[0], size[1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.events, args.rounds))
    print(
        f"{'per event':<30} {'plain µs':>9} {'sealed µs':>10} {'added µs':>9} "
        f"{'x':>5} {'item B':>8} {'sealed B':>9}"
    )
    for what, plain, sealed, size, sealed_size in rows:
        print(
            f"{what:<30} {plain:>9.1f} {sealed:>10.1f} {sealed - plain:>9.1f} "
            f"{sealed / plain:>5.2f} {size:>8} {sealed_size:>9}"
        )


if __name__ == "__main__":
    main()
