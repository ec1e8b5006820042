"""What the query API shows of an erased user: no personal field, a clear mark."""

from __future__ import annotations

import asyncio
import os
from uuid import UUID, uuid4

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
from nova_query_api.application.queries import AudioReadModel

from .test_query_api import USER, World, auth


class OpenedHistory:
    """The event store as query-api reads it: sealed items, opened."""

    def __init__(self, personal: PersonalData) -> None:
        self.personal = personal
        self.stored: dict[UUID, list[EventEnvelope]] = {}

    async def get_events(
        self, aggregate_type: str, aggregate_id: UUID, from_version: int = 1
    ) -> list[EventEnvelope]:
        return await self.personal.open_all(self.stored.get(aggregate_id, []))


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


def test_history_of_an_erased_user_shows_only_non_personal_fields() -> None:
    world = World()
    personal = PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))
    history = OpenedHistory(personal)
    world.history = history  # type: ignore[assignment]
    audio_id = uuid4()
    created = AudioCreated(
        audio_id=audio_id,
        user_id=USER,
        s3_key=f"audio/{USER}/{audio_id}.wav",
        title="Diagnosis call",
        duration_s=4.0,
    )
    history.stored[audio_id] = [
        asyncio.run(personal.seal(envelope(audio_id, 1, created), USER)),
        envelope(audio_id, 2, AudioProcessingStarted(audio_id=audio_id)),
    ]
    asyncio.run(personal.erase(USER))

    with world.client() as client:
        answer = client.get(f"/queries/audio/{audio_id}/history", headers=auth())

    assert answer.status_code == 200, answer.text
    first, second = answer.json()["events"]
    assert "Diagnosis" not in answer.text
    assert "_sealed" not in answer.text
    assert "<erased>" not in answer.text
    assert first["personal_data"] == "erased"
    assert first["data"]["user_id"] == str(USER)
    assert first["data"]["duration_s"] == 4.0
    assert "title" not in first["data"]
    assert second["personal_data"] is None
    assert second["data"]["language"] == "ja-JP"


def test_an_erased_item_says_so_when_read() -> None:
    world = World()
    audio_id = uuid4()
    world.repository.add(
        AudioReadModel(
            audio_id=audio_id,
            user_id=USER,
            status="completed",
            created_at="2026-03-09T08:00:00+00:00",
            version=4,
            personal_data="erased",
        )
    )

    with world.client() as client:
        one = client.get(f"/queries/audio/{audio_id}", headers=auth())
        listed = client.get("/queries/audio", headers=auth())

    assert one.status_code == 200, one.text
    assert one.json()["personal_data"] == "erased"
    assert one.json()["title"] is None
    assert one.json()["transcription"] is None
    assert [i["personal_data"] for i in listed.json()["items"]] == ["erased"]
