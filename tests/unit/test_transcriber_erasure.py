"""The transcriber after an erasure: the audio is gone, its result is dropped."""

from __future__ import annotations

import os
from uuid import UUID, uuid4

import httpx

from nova_events import (
    AUDIO_FILE,
    AudioCreated,
    AudioProcessingStarted,
    EventEnvelope,
    EventMetadata,
    EventPayload,
    encode_payload,
)
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper
from nova_transcriber.adapters.command_api import HttpCommandApi
from nova_transcriber.adapters.event_store_catalog import EventStoreCatalog
from nova_transcriber.application.ports import Completed, Transcript


class Reader:
    def __init__(self, personal: PersonalData, events: list[EventEnvelope]) -> None:
        self._personal = personal
        self._events = events

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        return await self._personal.open_all(self._events)


def envelope(audio_id: UUID, version: int, event: EventPayload) -> EventEnvelope:
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=audio_id,
        event_type=event.event_type(),
        schema_version=1,
        version=version,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(event),
    )


async def test_the_catalog_opens_the_key_and_finds_nothing_once_erased() -> None:
    owner, audio_id = uuid4(), uuid4()
    personal = PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
    key = f"audio/{owner}/{audio_id}.wav"
    stored = [
        await personal.seal(
            envelope(
                audio_id,
                1,
                AudioCreated(audio_id=audio_id, user_id=owner, s3_key=key),
            ),
            owner,
        ),
        envelope(audio_id, 2, AudioProcessingStarted(audio_id=audio_id)),
    ]
    catalog = EventStoreCatalog(Reader(personal, stored))

    found = await catalog.find(audio_id)
    await personal.erase(owner)
    gone = await catalog.find(audio_id)

    assert found is not None
    assert (found.s3_key, found.current_attempt, found.open) == (key, 1, True)
    assert gone is None


async def test_a_result_for_an_erased_users_audio_is_dropped() -> None:
    def gone(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            410,
            json={"type": "https://nova.example/problems/user-erased", "detail": "x"},
        )

    client = httpx.AsyncClient(
        transport=httpx.MockTransport(gone), base_url="http://command-api"
    )
    sink = HttpCommandApi(client, lambda: "t", tries=2, first_backoff_s=0.0)

    done = await sink.submit(uuid4(), Completed(1, Transcript("t", 1.0, "en-US", ())))

    assert done is False
