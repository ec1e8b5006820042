"""Duplicates, reordering Kafka allows and redeliveries change nothing.

Kafka keeps each audio's events in order (one key, one partition) but may
interleave audios in any way, and a consumer that rewinds sees a suffix of
what it already applied again. Whatever the delivery, both projections must
end equal to one clean pass over the events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from nova_events import (
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    Segment,
    TranscriptionCompleted,
    encode_payload,
)
from nova_projector_readmodel.adapters.memory_read_model import InMemoryReadModel
from nova_projector_readmodel.application.projector import ReadModelProjector
from nova_projector_search.adapters.memory_index import InMemorySearchIndex
from nova_projector_search.application.projector import SearchProjector

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def lifecycle(audio_id: UUID, user_id: UUID, steps: Sequence[str]) -> list[DomainEvent]:
    events: list[DomainEvent] = [
        AudioCreated(audio_id=audio_id, user_id=user_id, s3_key="k", title="t")
    ]
    for attempt, step in enumerate(steps, start=1):
        events.append(AudioProcessingStarted(audio_id=audio_id, attempt=attempt))
        if step == "fail":
            events.append(
                AudioProcessingFailed(audio_id=audio_id, reason="r", retryable=True)
            )
        else:
            segment = Segment(start=0, end=1, text=f"hello {attempt}")
            events.append(
                TranscriptionCompleted(
                    audio_id=audio_id,
                    text=f"hello {attempt}",
                    confidence=0.5,
                    language="en-US",
                    segments=(segment,),
                )
            )
            events.append(AudioProcessingCompleted(audio_id=audio_id))
    if steps and steps[-1] == "delete":
        events.append(AudioDeleted(audio_id=audio_id))
    return events


def envelopes(events: list[DomainEvent]) -> list[EventEnvelope]:
    return [
        EventEnvelope(
            aggregate_type="AudioFile",
            aggregate_id=e.audio_id,
            event_type=e.event_type(),
            schema_version=e.schema_version,
            version=v,
            occurred_at=T0 + timedelta(seconds=v),
            metadata=EventMetadata(correlation_id="c"),
            data=encode_payload(e),
        )
        for v, e in enumerate(events, start=1)
    ]


streams = st.lists(
    st.lists(st.sampled_from(["complete", "fail", "delete"]), max_size=3),
    min_size=1,
    max_size=4,
).map(lambda plans: [envelopes(lifecycle(uuid4(), uuid4(), plan)) for plan in plans])


@st.composite
def deliveries(
    draw: st.DrawFn,
) -> tuple[list[EventEnvelope], list[list[EventEnvelope]]]:
    """A clean order, and batches as Kafka may deliver them with rewinds."""
    per_audio = draw(streams)
    # Interleave audios freely, keeping each audio's own order.
    cursors = [0] * len(per_audio)
    interleaved: list[EventEnvelope] = []
    while any(c < len(s) for c, s in zip(cursors, per_audio, strict=True)):
        open_streams = [i for i, s in enumerate(per_audio) if cursors[i] < len(s)]
        pick = draw(st.sampled_from(open_streams))
        interleaved.append(per_audio[pick][cursors[pick]])
        cursors[pick] += 1
    batches: list[list[EventEnvelope]] = []
    position = 0
    while position < len(interleaved):
        end = draw(st.integers(position + 1, len(interleaved)))
        batches.append(interleaved[position:end])
        # A rewind: the next batch may start again inside this one (always
        # past its first record, so the delivery ends).
        rewind = draw(st.booleans())
        position = draw(st.integers(position + 1, end)) if rewind else end
    return interleaved, batches


@settings(max_examples=150, deadline=None)
@given(deliveries())
async def test_any_delivery_equals_one_clean_pass(
    delivery: tuple[list[EventEnvelope], list[list[EventEnvelope]]],
) -> None:
    clean, batches = delivery
    clean_items, clean_docs = InMemoryReadModel(), InMemorySearchIndex()
    await ReadModelProjector(clean_items).project(clean)
    await SearchProjector(clean_docs).project(clean)

    items, docs = InMemoryReadModel(), InMemorySearchIndex()
    for batch in batches:
        await ReadModelProjector(items).project(batch)
        await SearchProjector(docs).project(batch)

    assert items.items == clean_items.items
    assert docs.docs == clean_docs.docs
    assert docs.versions == clean_docs.versions
