"""The invariants a fault run must keep, each as a function of what was seen.

Each check returns its violations as sentences (an empty list: it holds).
They compare the commands the load generator sent and what they were
answered with the event store, the events topic, the webhook receiver, the
audio bucket and both projections.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID

from aiokafka import ConsumerRecord

from nova_events import AudioCreated, AudioDeleted, EventEnvelope, loads

from ..webhook_receiver import WebhookReceiver
from .load import EXPECTED_EVENTS, Command

SHOWN = 5
"""Violations listed per check; the rest are counted."""

Items = dict[str, dict[str, Any]]
Documents = dict[str, tuple[dict[str, Any], int]]


def _shown(problems: list[str]) -> list[str]:
    if len(problems) <= SHOWN:
        return problems
    return [*problems[:SHOWN], f"... and {len(problems) - SHOWN} more"]


def _streams(events: Iterable[EventEnvelope]) -> dict[UUID, list[EventEnvelope]]:
    streams: dict[UUID, list[EventEnvelope]] = defaultdict(list)
    for event in events:
        streams[event.aggregate_id].append(event)
    for stream in streams.values():
        stream.sort(key=lambda e: e.version)
    return streams


def stored_exactly_once(
    commands: Sequence[Command], events: Sequence[EventEnvelope]
) -> list[str]:
    """Each acknowledged command is one whole commit in the store; a command
    not acknowledged is one whole commit or nothing; nothing else is stored."""
    problems: list[str] = []
    by_key: dict[str, list[EventEnvelope]] = defaultdict(list)
    for event in events:
        by_key[event.metadata.correlation_id or ""].append(event)
    known = {c.key: c for c in commands}
    for key, group in by_key.items():
        group.sort(key=lambda e: (str(e.aggregate_id), e.version))
        command = known.get(key)
        if command is None:
            problems.append(
                f"{len(group)} stored events carry correlation id {key!r}, which "
                "no command of the load had"
            )
            continue
        types = tuple(e.event_type for e in group)
        expected = EXPECTED_EVENTS[command.kind]
        state = "acknowledged" if command.acknowledged else "not acknowledged"
        if types != expected:
            problems.append(
                f"{command.kind} {key} ({state}) stored {list(types)}; one commit "
                f"of it appends {list(expected)}"
            )
        audio_ids = {e.aggregate_id for e in group}
        command_ids = {e.metadata.command_id for e in group}
        versions = [e.version for e in group]
        if len(audio_ids) > 1 or len(command_ids) > 1:
            problems.append(
                f"{command.kind} {key} has events in {len(audio_ids)} audios under "
                f"{len(command_ids)} command ids: it took effect more than once"
            )
        elif versions != list(range(versions[0], versions[0] + len(versions))):
            problems.append(f"{command.kind} {key} stored versions {versions}")
        if command.audio_id is not None and audio_ids != {command.audio_id}:
            problems.append(
                f"{command.kind} {key} was sent for {command.audio_id} but stored "
                f"in {sorted(map(str, audio_ids))}"
            )
        if command.acknowledged:
            answer = command.first.body
            if {str(a) for a in audio_ids} != {answer["audio_id"]} or answer[
                "version"
            ] != max(versions):
                problems.append(
                    f"{command.kind} {key} was answered {answer} but stored versions "
                    f"{versions} of {sorted(map(str, audio_ids))}"
                )
    for command in commands:
        if command.acknowledged and command.key not in by_key:
            problems.append(
                f"{command.kind} {command.key} was acknowledged "
                f"({command.first.body}) but none of its events is stored"
            )
    for audio_id, stream in _streams(events).items():
        versions = [e.version for e in stream]
        if versions != list(range(1, len(versions) + 1)):
            problems.append(f"audio {audio_id}'s stream holds versions {versions}")
    return _shown(problems)


def one_effect_per_key(
    commands: Sequence[Command],
    events: Sequence[EventEnvelope],
    objects: set[str],
) -> list[str]:
    """Every answer to one key is the same, at most one of them is not a
    replay, and the audio bucket holds one file per live audio and no other
    file than those that creates never answered may have left."""
    problems: list[str] = []
    for command in commands:
        bodies = {json.dumps(a.body, sort_keys=True) for a in command.answers}
        if len(bodies) > 1:
            problems.append(
                f"{command.kind} {command.key} was answered differently: {bodies}"
            )
        fresh = [a for a in command.answers if not a.replayed]
        if len(fresh) > 1:
            problems.append(
                f"{command.kind} {command.key} ran {len(fresh)} times to an answer "
                "instead of replaying the first"
            )
    # Objects are named `audio/<user id>/<audio id>.<extension>`; the stored
    # `s3_key` itself is personal data, sealed in the store.
    live = {
        audio_id
        for audio_id, stream in _streams(events).items()
        if stream[0].event_type == AudioCreated.event_type()
        and not any(e.event_type == AudioDeleted.event_type() for e in stream)
    }
    by_audio: dict[UUID | None, list[str]] = defaultdict(list)
    for key in sorted(objects):
        by_audio[_audio_of(key)].append(key)
    # A create killed between storing its file and committing leaves the file
    # until a retry with its key finishes it: only one never answered may.
    unanswered = sum(c.kind == "create" and not c.acknowledged for c in commands)
    orphans = [k for a, keys in by_audio.items() if a not in live for k in keys]
    if len(orphans) > unanswered:
        problems += [
            f"the bucket holds {k}, which no live audio has "
            f"({len(orphans)} such files, {unanswered} creates never answered)"
            for k in orphans
        ]
    for audio_id, keys in sorted(by_audio.items(), key=lambda item: str(item[0])):
        if audio_id not in live:
            continue
        if len(keys) > 1:
            problems.append(f"audio {audio_id} has {len(keys)} files: {keys}")
    for audio_id in sorted(live - set(by_audio), key=str):
        problems.append(f"the file of live audio {audio_id} is not in the bucket")
    return _shown(problems)


def _audio_of(key: str) -> UUID | None:
    stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        return UUID(stem)
    except ValueError:
        return None


def published_in_order(
    events: Sequence[EventEnvelope], records: Sequence[ConsumerRecord[bytes, bytes]]
) -> tuple[list[str], int]:
    """Every stored event is in Kafka, nothing else is, and each audio's events
    come in version order. Returns the violations and the duplicates seen."""
    problems: list[str] = []
    stored = {e.event_id for e in events}
    seen: set[UUID] = set()
    duplicates = 0
    order: dict[UUID, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        envelope = loads(record.value)
        if envelope.event_id in seen:
            duplicates += 1
            continue
        seen.add(envelope.event_id)
        order[envelope.aggregate_id].append(envelope.version)
    for event_id in list(stored - seen)[:SHOWN]:
        problems.append(f"stored event {event_id} never reached Kafka")
    if len(stored - seen) > SHOWN:
        problems.append(f"... {len(stored - seen)} stored events missing in all")
    if seen - stored:
        problems.append(f"{len(seen - stored)} events in Kafka are not in the store")
    for audio_id, stream in _streams(events).items():
        published = order.get(audio_id, [])
        if published != [e.version for e in stream][: len(published)]:
            problems.append(f"audio {audio_id} reached Kafka as versions {published}")
    return _shown(problems), duplicates


def webhooks_in_order(
    receiver: WebhookReceiver,
    endpoints: dict[UUID, str],
    events: Sequence[EventEnvelope],
) -> list[str]:
    """Each user's endpoint received each of the user's events, each audio's
    in version order, every request signed."""
    problems: list[str] = []
    owners = {
        e.aggregate_id: UUID(str(e.data["user_id"]))
        for e in events
        if e.event_type == AudioCreated.event_type()
    }
    for audio_id, stream in _streams(events).items():
        name = endpoints.get(owners.get(audio_id, UUID(int=0)))
        if name is None:
            problems.append(f"audio {audio_id} belongs to no subscribed user")
            continue
        got = receiver.sequences(name, str(audio_id))
        if got != [e.version for e in stream]:
            problems.append(f"audio {audio_id} arrived at its webhook as {got}")
    for name in endpoints.values():
        endpoint = receiver.endpoints[name]
        if endpoint.bad_signatures:
            problems.append(f"{name} got {endpoint.bad_signatures} bad signatures")
        strangers = {p["audio_id"] for p in endpoint.order} - {
            str(a) for a, owner in owners.items() if endpoints.get(owner) == name
        }
        if strangers:
            problems.append(f"{name} received {len(strangers)} other users' audios")
    return _shown(problems)


def equal_projections(
    what: str, live: dict[str, Any], rebuilt: dict[str, Any]
) -> list[str]:
    """The live projection equals its clean rebuild, entry for entry."""
    problems = [
        f"{what} {key}: live {live.get(key)!r} but rebuilt {rebuilt.get(key)!r}"
        for key in sorted(set(live) | set(rebuilt))
        if live.get(key) != rebuilt.get(key)
    ]
    return _shown(problems)
