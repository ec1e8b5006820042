"""In-process domain overhead: Nova's `AudioFile` against the `eventsourcing`
library on the same aggregate, both in memory, both serialising.

Each side runs the same life of one audio: create and save; load, start
processing, save; load, complete the transcription and the processing (two
events in one save); load again. Nova's side goes through its real code: the
aggregate, `new_envelopes` (payload encoding, size check), the DynamoDB item
mapper `to_item`/`from_item`, `decode_payload` (upcasting) and
`reconstitute`, into a dict standing in for the table; sealed, also
`stored_envelopes` and `PersonalData.open_all` with per-user keys. The
library's side is an `Application` on its in-memory (POPO) recorder, with its
JSON transcoder and notification log, and for the encrypted race its AES-GCM
cipher (one application key). Neither touches a network.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.cryptography import AESCipher
from eventsourcing.domain import Aggregate, event

from nova_command_api.adapters.envelopes import new_envelopes, stored_envelopes
from nova_command_api.domain.audio_file import AudioFile
from nova_events import AUDIO_FILE, EventMetadata, Segment, decode_payload
from nova_platform.event_items import from_item, to_item
from nova_platform.personal import PersonalData
from nova_platform.user_keys import InMemoryUserKeys, LocalKeyWrapper

AUDIOS_PER_USER = 10
"""Each user owns this many of the audios: a data key serves several events."""


@dataclass(frozen=True, slots=True)
class AudioLife:
    """The inputs of one audio's life, generated before timing."""

    audio_id: UUID
    user_id: UUID
    s3_key: str
    title: str
    text: str
    segments: tuple[tuple[float, float, str], ...]


def lives(count: int, seed: int) -> list[AudioLife]:
    rng = random.Random(seed)
    words = ["alpha", "bravo", "nagoya", "kyoto", "meeting", "budget", "review"]

    def new_id() -> UUID:
        return UUID(int=rng.getrandbits(128), version=4)

    made = []
    users = [new_id() for _ in range(max(1, count // AUDIOS_PER_USER))]
    for i in range(count):
        user = users[i % len(users)]
        spoken = [" ".join(rng.choices(words, k=12)) for _ in range(5)]
        made.append(
            AudioLife(
                audio_id=new_id(),
                user_id=user,
                s3_key=f"audio/{user}/bench-{i}.wav",
                title=f"Meeting {i}",
                text=" ".join(spoken),
                segments=tuple(
                    (2.0 * n, 2.0 * n + 1.9, text) for n, text in enumerate(spoken)
                ),
            )
        )
    return made


class NovaItems:
    """Nova's aggregate over its DynamoDB item format, kept in a dict; with
    `personal`, personal fields sealed on save and opened on load, as the
    event store does (`stored_envelopes`, the reader's `open_all`)."""

    def __init__(self, personal: PersonalData | None = None) -> None:
        self._streams: dict[str, list[dict[str, Any]]] = {}
        self._metadata = EventMetadata(correlation_id="bench", user_id="bench")
        self._personal = personal

    async def save(self, audio: AudioFile) -> None:
        events = audio.get_uncommitted_events()
        envelopes = new_envelopes(
            AUDIO_FILE, audio.audio_id, events, audio.version, self._metadata
        )
        stored = await stored_envelopes(envelopes, self._personal, audio.user_id)
        stream = self._streams.setdefault(envelopes[0].stream_key, [])
        if len(stream) != audio.version:
            raise RuntimeError(f"conflict on {envelopes[0].stream_key}")
        stream.extend(to_item(e) for e in stored)
        audio.mark_events_as_committed()

    async def load(self, audio_id: UUID) -> AudioFile:
        items = self._streams[f"{AUDIO_FILE}#{audio_id}"]
        envelopes = [from_item(i) for i in items]
        if self._personal is not None:
            envelopes = await self._personal.open_all(envelopes)
        return AudioFile.reconstitute(
            [(e.version, decode_payload(e)) for e in envelopes]
        )


async def nova_life(store: NovaItems, life: AudioLife) -> str:
    audio = AudioFile.create(
        life.user_id, life.s3_key, audio_id=life.audio_id, title=life.title
    )
    await store.save(audio)
    audio = await store.load(life.audio_id)
    audio.start_processing("en-US")
    await store.save(audio)
    audio = await store.load(life.audio_id)
    audio.complete_transcription(
        life.text,
        0.93,
        "en-US",
        tuple(Segment(start=s, end=e, text=t) for s, e, t in life.segments),
    )
    audio.complete_processing()
    await store.save(audio)
    return (await store.load(life.audio_id)).status.value


class LibraryAudioFile(Aggregate):
    """The same aggregate written the `eventsourcing` way."""

    @event("AudioCreated")
    def __init__(
        self,
        audio_id: UUID,
        user_id: UUID,
        s3_key: str,
        title: str | None,
        metadata: dict[str, str],
    ) -> None:
        self.user_id = user_id
        self.s3_key = s3_key
        self.title = title
        self.metadata = metadata
        self.status = "pending"
        self.language: str | None = None
        self.attempts = 0
        self.text: str | None = None
        self.segments: list[dict[str, Any]] = []

    @staticmethod
    def create_id(
        audio_id: UUID, user_id: UUID, s3_key: str, title: str | None, **_: Any
    ) -> UUID:
        return audio_id

    def start_processing(self, language: str) -> None:
        if self.status not in ("pending", "failed", "completed"):
            raise ValueError(f"cannot start processing when {self.status}")
        self._processing_started(language, False, self.attempts + 1)

    @event("AudioProcessingStarted")
    def _processing_started(
        self, language: str, enable_diarization: bool, attempt: int
    ) -> None:
        self.status = "processing"
        self.language = language
        self.attempts = attempt

    def complete_transcription(
        self,
        text: str,
        confidence: float,
        language: str,
        segments: list[dict[str, Any]],
    ) -> None:
        if self.status != "processing":
            raise ValueError(f"cannot complete a transcription when {self.status}")
        self._transcription_completed(text, confidence, language, segments)

    @event("TranscriptionCompleted")
    def _transcription_completed(
        self,
        text: str,
        confidence: float,
        language: str,
        segments: list[dict[str, Any]],
    ) -> None:
        self.status = "transcribed"
        self.text = text
        self.segments = segments

    def complete_processing(self) -> None:
        if self.status != "transcribed":
            raise ValueError(f"cannot complete processing when {self.status}")
        self._processing_completed()

    @event("AudioProcessingCompleted")
    def _processing_completed(self) -> None:
        self.status = "completed"


def library_life(app: Application[UUID], life: AudioLife) -> str:
    audio = LibraryAudioFile(
        audio_id=life.audio_id,
        user_id=life.user_id,
        s3_key=life.s3_key,
        title=life.title,
        metadata={},
    )
    app.save(audio)
    audio = app.repository.get(life.audio_id)
    audio.start_processing("en-US")
    app.save(audio)
    audio = app.repository.get(life.audio_id)
    audio.complete_transcription(
        life.text,
        0.93,
        "en-US",
        [{"start": s, "end": e, "text": t} for s, e, t in life.segments],
    )
    audio.complete_processing()
    app.save(audio)
    status: str = app.repository.get(life.audio_id).status
    return status


def sealing() -> PersonalData:
    """Per-user data keys in memory, wrapped by a random master key."""
    return PersonalData(InMemoryUserKeys(), LocalKeyWrapper(os.urandom(32)))


async def time_nova(batch: list[AudioLife], *, sealed: bool = False) -> float:
    """Audio lives per second through Nova's code (sealing personal fields
    with each user's key when `sealed`: a user's first save also creates and
    wraps their data key)."""
    store = NovaItems(sealing() if sealed else None)
    start = time.perf_counter()
    for life in batch:
        if await nova_life(store, life) != "completed":
            raise RuntimeError(f"audio {life.audio_id} did not complete")
    return len(batch) / (time.perf_counter() - start)


def time_library(batch: list[AudioLife], *, encrypted: bool = False) -> float:
    """Audio lives per second through the `eventsourcing` library (with its
    AES-GCM cipher over every stored event when `encrypted`)."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if encrypted:
        env["CIPHER_TOPIC"] = "eventsourcing.cryptography:AESCipher"
        env["CIPHER_KEY"] = AESCipher.create_key(32)
    app: Application[UUID] = Application(env=env)
    start = time.perf_counter()
    for life in batch:
        if library_life(app, life) != "completed":
            raise RuntimeError(f"audio {life.audio_id} did not complete")
    return len(batch) / (time.perf_counter() - start)
