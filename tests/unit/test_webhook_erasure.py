"""Webhooks after a user's erasure: `user.erased`, and no personal field left."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from uuid import UUID, uuid4

from nova_events import (
    AUDIO_FILE,
    USER,
    AudioCreated,
    EventEnvelope,
    EventMetadata,
    EventPayload,
    Segment,
    TranscriptionCompleted,
    UserErased,
    encode_payload,
)
from nova_integration.application.fanout import Fanout
from nova_integration.domain.payload import encode_body, public_payload, redact_body
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper
from nova_platform.webhooks import InMemoryWebhookStore, Subscription

ERASED_AT = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
WORDS = "the secret plan"


class Owners:
    def __init__(self, owners: dict[UUID, UUID]) -> None:
        self._owners = owners

    async def owner_of(self, audio_id: UUID) -> UUID:
        return self._owners[audio_id]


class Waits:
    def __init__(self) -> None:
        self.erasures: list[datetime] = []

    async def __call__(self, erased_at: datetime) -> None:
        self.erasures.append(erased_at)


def envelope(
    aggregate_type: str, aggregate_id: UUID, version: int, event: EventPayload
) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        event_type=event.event_type(),
        schema_version=event.schema_version,
        version=version,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(event),
    )


def transcript(audio_id: UUID) -> EventEnvelope:
    return envelope(
        AUDIO_FILE,
        audio_id,
        3,
        TranscriptionCompleted(
            audio_id=audio_id,
            text=WORDS,
            confidence=0.8,
            language="en-US",
            segments=(Segment(start=0, end=1, text=WORDS),),
        ),
    )


def erasure(user_id: UUID) -> EventEnvelope:
    return envelope(USER, user_id, 1, UserErased(user_id=user_id, erased_at=ERASED_AT))


def subscription(user_id: UUID) -> Subscription:
    return Subscription(
        subscription_id=uuid4(),
        user_id=user_id,
        url="https://hooks.example.com/nova",
        event_types=frozenset({"*"}),
        secret="s" * 32,
        created_at=1.0,
    )


def test_user_erased_has_a_public_form_naming_the_user() -> None:
    user = uuid4()

    payload = public_payload(erasure(user))

    assert payload["type"] == "user.erased"
    assert payload["user_id"] == str(user)
    assert "audio_id" not in payload
    assert payload["sequence"] == 1
    assert payload["data"] == {"erased_at": "2026-03-09T08:00:00Z"}


async def test_an_event_opened_erased_goes_out_without_personal_fields() -> None:
    owner, audio_id = uuid4(), uuid4()
    personal = PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
    sealed = await personal.seal(transcript(audio_id), owner)
    await personal.erase(owner)

    payload = public_payload(await personal.open(sealed))

    assert payload["personal_data"] == "erased"
    assert payload["data"]["text"] is None
    assert payload["data"]["segments"] == []
    assert payload["data"]["confidence"] == 0.8
    assert "<erased>" not in encode_body(payload).decode()


def test_a_stored_body_is_redacted_once_and_others_are_left_alone() -> None:
    body = encode_body(public_payload(transcript(uuid4())))

    redacted = redact_body(body)

    assert redacted is not None
    assert WORDS not in redacted.decode()
    assert json.loads(redacted)["personal_data"] == "erased"
    assert redact_body(redacted) is None
    assert redact_body(encode_body(public_payload(erasure(uuid4())))) is None
    assert redact_body(b"not json") is None


async def test_an_erasure_is_delivered_then_purges_the_users_stored_bodies() -> None:
    alice, bob = uuid4(), uuid4()
    alices, bobs = uuid4(), uuid4()
    store, waits = InMemoryWebhookStore(), Waits()
    hers, his = subscription(alice), subscription(bob)
    await store.add_subscription(hers)
    await store.add_subscription(his)
    fanout = Fanout(
        store, Owners({alices: alice, bobs: bob}), None, wait_for_erasure=waits
    )
    created = envelope(
        AUDIO_FILE,
        alices,
        1,
        AudioCreated(audio_id=alices, user_id=alice, s3_key="k", title="Private"),
    )
    await fanout([created, transcript(alices), transcript(bobs)])

    await fanout([erasure(alice)])

    assert waits.erasures == [ERASED_AT]
    mine, _ = await store.deliveries(hers.subscription_id)
    # Listed by lane (audio id, then sequence): the user's lane is keyed by
    # her user id, which sorts anywhere among her audios' ids.
    of_audio = [d.event_type for d in mine if d.audio_id == alices]
    assert of_audio == ["audio.created", "audio.transcription.completed"]
    [erased] = [d for d in mine if d.audio_id == alice]
    assert erased.event_type == "user.erased"
    assert len(mine) == 3
    for delivery in mine:
        assert WORDS not in delivery.body.decode()
        assert "Private" not in delivery.body.decode()
    [transcribed] = [d for d in mine if d.event_type == "audio.transcription.completed"]
    assert json.loads(transcribed.body)["personal_data"] == "erased"
    theirs, _ = await store.deliveries(his.subscription_id)
    assert [WORDS in d.body.decode() for d in theirs] == [True]
