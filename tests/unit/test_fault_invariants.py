"""The fault test's invariant checks on made-up histories: a clean one passes
every check, and each kind of damage is named by the check that owns it."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID, uuid4

import pytest
from aiokafka import ConsumerRecord

from nova_command_api.adapters.memory_event_store import InMemoryEventStore
from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    AudioProcessingCompleted,
    AudioProcessingStarted,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    TranscriptionCompleted,
)
from nova_platform.kafka import message_value

from ..faults import invariants
from ..faults.load import Answer, Command
from ..webhook_receiver import WebhookReceiver

USER = uuid4()


class History:
    """Commands and the events they stored, written through a real store."""

    def __init__(self) -> None:
        self.store = InMemoryEventStore()
        self.commands: list[Command] = []
        self.events: list[EventEnvelope] = []

    async def commit(
        self,
        kind: str,
        audio_id: UUID,
        events: Sequence[DomainEvent],
        *,
        key: str | None = None,
        acknowledged: bool = True,
    ) -> Command:
        key = key or f"faults-{kind}-{uuid4()}"
        version = len(await self.store.get_events(AUDIO_FILE, audio_id))
        meta = EventMetadata(correlation_id=key, command_id=str(uuid4()))
        stored = await self.store.append_events(
            AUDIO_FILE, audio_id, events, version, meta
        )
        self.events += stored
        command = Command(key, kind, USER, None if kind == "create" else audio_id)
        if acknowledged:
            body = {"audio_id": str(audio_id), "version": stored[-1].version}
            command.answers.append(Answer(201, {**body, "status": "x"}, False))
        self.commands.append(command)
        return command

    async def audio(self) -> UUID:
        audio_id = uuid4()
        created = AudioCreated(
            audio_id=audio_id, user_id=USER, s3_key=f"audio/{USER}/{audio_id}.wav"
        )
        await self.commit("create", audio_id, [created])
        await self.commit(
            "transcribe", audio_id, [AudioProcessingStarted(audio_id=audio_id)]
        )
        await self.commit(
            "complete",
            audio_id,
            [
                TranscriptionCompleted(
                    audio_id=audio_id, text="hi", confidence=0.9, language="en-US"
                ),
                AudioProcessingCompleted(audio_id=audio_id),
            ],
        )
        return audio_id

    def objects(self) -> set[str]:
        return {
            f"audio/{USER}/{e.aggregate_id}.wav"
            for e in self.events
            if e.event_type == AudioCreated.event_type()
        }


def records(events: Sequence[EventEnvelope]) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        ConsumerRecord(
            "topic", 0, offset, 0, 0, None, message_value(event), None, 0, 0, []
        )
        for offset, event in enumerate(events)
    ]


def received(events: Sequence[EventEnvelope]) -> WebhookReceiver:
    receiver = WebhookReceiver()
    receiver.endpoint("user0", "secret")
    receiver.endpoints["user0"].order = [
        {"id": str(e.event_id), "audio_id": str(e.aggregate_id), "sequence": e.version}
        for e in events
    ]
    return receiver


@pytest.fixture
async def history() -> History:
    found = History()
    for _ in range(3):
        await found.audio()
    return found


def test_a_clean_history_keeps_every_invariant(history: History) -> None:
    events, commands = history.events, history.commands

    assert invariants.stored_exactly_once(commands, events) == []
    assert invariants.one_effect_per_key(commands, events, history.objects()) == []
    assert invariants.published_in_order(events, records(events)) == ([], 0)
    endpoints = {USER: "user0"}
    assert invariants.webhooks_in_order(received(events), endpoints, events) == []


async def test_a_half_written_commit_is_named(history: History) -> None:
    audio_id = uuid4()
    await history.commit(
        "create",
        audio_id,
        [AudioCreated(audio_id=audio_id, user_id=USER, s3_key="audio/k.wav")],
    )
    half = await history.commit(
        "complete",
        audio_id,
        [
            TranscriptionCompleted(
                audio_id=audio_id, text="a", confidence=1.0, language="en-US"
            )
        ],
        acknowledged=False,
    )

    [problem] = invariants.stored_exactly_once(history.commands, history.events)

    assert half.key in problem
    assert "not acknowledged" in problem
    assert "AudioProcessingCompleted" in problem


async def test_a_command_that_took_effect_twice_is_named(history: History) -> None:
    key = "faults-create-twice"
    for _ in range(2):
        audio_id = uuid4()
        created = AudioCreated(audio_id=audio_id, user_id=USER, s3_key="a/b.wav")
        await history.commit("create", audio_id, [created], key=key)
    history.commands.pop()  # one command, sent once, with its one key

    problems = invariants.stored_exactly_once(history.commands, history.events)

    assert any("more than once" in p and key in p for p in problems), problems


async def test_lost_and_foreign_events_are_named(history: History) -> None:
    lost = history.commands[4]
    history.events = [
        e for e in history.events if e.metadata.correlation_id != lost.key
    ]
    foreign = history.commands.pop(0)

    problems = invariants.stored_exactly_once(history.commands, history.events)

    assert any(lost.key in p and "none of its events" in p for p in problems)
    assert any(repr(foreign.key) in p and "no command" in p for p in problems)
    assert any("holds versions [1, 3, 4]" in p for p in problems), problems


def test_an_answer_that_differs_or_ran_again_is_named(history: History) -> None:
    command = history.commands[1]
    first = command.first
    command.answers += [
        Answer(first.status, {**first.body, "version": 9}, replayed=True),
        Answer(first.status, first.body, replayed=False),
    ]

    problems = invariants.one_effect_per_key(
        history.commands, history.events, history.objects()
    )

    assert any("answered differently" in p for p in problems)
    assert any("ran 2 times" in p for p in problems)


def test_orphan_doubled_and_missing_files_are_named(history: History) -> None:
    objects = history.objects()
    missing = objects.pop()
    doubled = next(iter(objects))
    objects |= {"audio/orphan.wav", doubled.replace(".wav", ".mp3")}

    problems = invariants.one_effect_per_key(history.commands, history.events, objects)

    missing_id = missing.rsplit("/", 1)[-1].removesuffix(".wav")
    doubled_id = doubled.rsplit("/", 1)[-1].removesuffix(".wav")
    assert len(problems) == 3, problems
    assert (
        "the bucket holds audio/orphan.wav, which no live audio has "
        "(1 such files, 0 creates never answered)"
    ) in problems
    assert any(p.startswith(f"audio {doubled_id} has 2 files") for p in problems)
    assert f"the file of live audio {missing_id} is not in the bucket" in problems


def test_a_file_left_by_a_create_never_answered_is_allowed(history: History) -> None:
    history.commands.append(Command("faults-create-lost", "create", USER, None))
    objects = {*history.objects(), "audio/x/left-behind.wav"}

    assert (
        invariants.one_effect_per_key(history.commands, history.events, objects) == []
    )


def test_kafka_losing_reordering_or_doubling_is_named(history: History) -> None:
    events = list(history.events)
    lost = events.pop(-1)
    events[1], events[2] = events[2], events[1]
    doubled = [*events, events[0]]

    problems, duplicates = invariants.published_in_order(
        history.events, records(doubled)
    )

    assert duplicates == 1
    assert f"stored event {lost.event_id} never reached Kafka" in problems
    assert any("as versions [1, 3, 2, 4]" in p for p in problems), problems


def test_a_webhook_gap_is_named(history: History) -> None:
    arrived = [e for e in history.events if e.version != 2]

    problems = invariants.webhooks_in_order(
        received(arrived), {USER: "user0"}, history.events
    )

    assert len(problems) == 3
    assert all("arrived at its webhook as [1, 3, 4]" in p for p in problems)


def test_projections_that_differ_from_the_rebuild_are_named() -> None:
    live = {"AUDIO#1": {"version": 3}, "AUDIO#2": {"version": 1}}
    rebuilt = {"AUDIO#1": {"version": 4}, "AUDIO#3": {"version": 1}}

    problems = invariants.equal_projections("item", live, rebuilt)

    assert [p.split(":")[0] for p in problems] == [
        "item AUDIO#1",
        "item AUDIO#2",
        "item AUDIO#3",
    ]
    assert invariants.equal_projections("item", live, dict(live)) == []
