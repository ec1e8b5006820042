from __future__ import annotations

from collections.abc import Callable
from uuid import uuid4

import pytest

from nova_command_api.domain.audio_file import AudioFile, ProcessingStatus
from nova_command_api.domain.errors import InvalidStateError


def created() -> AudioFile:
    audio = AudioFile.create(uuid4(), "audio/u/a.wav", {"title": "t"})
    audio.mark_events_as_committed()
    return audio


def test_create_records_one_event_and_the_seed_fields() -> None:
    user_id = uuid4()
    audio = AudioFile.create(user_id, "audio/u/a.wav", {"title": "t"})

    [event] = audio.get_uncommitted_events()

    assert event.event_type() == "AudioCreated"
    assert audio.user_id == user_id
    assert audio.status is ProcessingStatus.PENDING
    assert audio.version == 0
    audio.mark_events_as_committed()
    assert audio.version == 1
    assert audio.get_uncommitted_events() == []


def test_full_lifecycle() -> None:
    audio = created()
    audio.start_processing("en-US")
    audio.complete_transcription("hello world", 0.9, "en-US")
    audio.complete_processing()

    assert audio.status is ProcessingStatus.COMPLETED
    assert [e.event_type() for e in audio.get_uncommitted_events()] == [
        "AudioProcessingStarted",
        "TranscriptionCompleted",
        "AudioProcessingCompleted",
    ]


def test_reconstitute_rebuilds_state_and_version() -> None:
    audio = AudioFile.create(uuid4(), "audio/u/a.wav")
    audio.start_processing("en-US")
    audio.fail_processing("decoder crashed", retryable=True)
    history = list(enumerate(audio.get_uncommitted_events(), start=1))

    rebuilt = AudioFile.reconstitute(history)

    assert rebuilt.version == 3
    assert rebuilt.status is ProcessingStatus.FAILED
    assert rebuilt.failure_reason == "decoder crashed"
    assert rebuilt.get_uncommitted_events() == []


def test_retry_after_failure_starts_a_new_attempt() -> None:
    audio = created()
    audio.start_processing()
    audio.fail_processing("timeout", retryable=True)

    audio.start_processing()

    assert audio.attempts == 2
    assert audio.status is ProcessingStatus.PROCESSING


@pytest.mark.parametrize(
    ("prepare", "command"),
    [
        (lambda a: None, lambda a: a.complete_processing()),
        (lambda a: None, lambda a: a.complete_transcription("x", 1.0, "en-US")),
        (lambda a: a.start_processing(), lambda a: a.start_processing()),
        (lambda a: a.delete(), lambda a: a.start_processing()),
        (lambda a: a.delete(), lambda a: a.delete()),
    ],
)
def test_forbidden_transitions_name_state_and_command(
    prepare: Callable[[AudioFile], None], command: Callable[[AudioFile], None]
) -> None:
    audio = created()
    prepare(audio)
    status = audio.status.value

    with pytest.raises(InvalidStateError) as caught:
        command(audio)

    assert caught.value.status == status
    assert status in str(caught.value)
