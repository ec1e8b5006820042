"""Model-based test of the `AudioFile` aggregate's lifecycle.

A Hypothesis state machine drives a live `AudioFile` with every command in every
status and checks it against a deliberately simple model: a status string, an
attempt counter and a plain transition table. It proves that:

- a command the table allows never raises, records exactly one event, and leaves
  the aggregate in the status (and attempt count) the table predicts;
- a command the table forbids raises `InvalidStateError` naming the current
  status, and records nothing: status, attempts, version and uncommitted events
  are unchanged;
- replaying every event recorded so far through `AudioFile.reconstitute` rebuilds
  the live aggregate (status, attempts, failure reason, transcription text), and
  versions count events exactly, whether or not they have been committed yet.

Events are collected when a `commit` rule marks them committed (it fires at
random, so uncommitted events accumulate across steps); the replayed history is
the committed list followed by whatever is still uncommitted.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID, uuid4

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from nova_command_api.domain.audio_file import AudioFile
from nova_command_api.domain.errors import InvalidStateError
from nova_events import AudioCreated, DomainEvent

# === The model ===

ALL_STATUSES = frozenset(
    {"pending", "processing", "transcribed", "completed", "failed", "deleted"}
)

#: command -> (statuses it is allowed from, status it leads to)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "start_processing": (
        frozenset({"pending", "failed", "completed"}),
        "processing",
    ),
    "complete_transcription": (frozenset({"processing"}), "transcribed"),
    "complete_processing": (frozenset({"transcribed"}), "completed"),
    "fail_processing": (frozenset({"processing", "transcribed"}), "failed"),
    "delete": (ALL_STATUSES - {"deleted"}, "deleted"),
}

#: the event each allowed command records
EVENT_OF: dict[str, str] = {
    "start_processing": "AudioProcessingStarted",
    "complete_transcription": "TranscriptionCompleted",
    "complete_processing": "AudioProcessingCompleted",
    "fail_processing": "AudioProcessingFailed",
    "delete": "AudioDeleted",
}

# === Strategies ===

LANGUAGES = st.sampled_from(["ja-JP", "en-US"])
JAPANESE = st.text(
    alphabet=st.sampled_from(
        "あいうえおかきくけこアイウエオカキクケコ日本語音声認識文字起こし、。ー"
    ),
    max_size=40,
)
TEXTS = st.one_of(
    st.just(""),
    st.sampled_from(["こんにちは、世界。", "本日の会議を始めます。", "hello world"]),
    JAPANESE,
    st.text(max_size=40),
)
CONFIDENCES = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
REASONS = st.one_of(
    st.sampled_from(["timeout", "unsupported codec", "文字起こしに失敗しました"]),
    st.text(max_size=40),
)


class AudioFileMachine(RuleBasedStateMachine):
    """Runs every command against both the aggregate and the model."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = AudioFile()
        self.status = "pending"
        self.attempts = 0
        self.committed: list[DomainEvent] = []

    @initialize(
        user_id=st.uuids(),
        audio_id=st.uuids(),
        s3_key=st.text(min_size=1, max_size=20),
        metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    )
    def create(
        self, user_id: UUID, audio_id: UUID, s3_key: str, metadata: dict[str, str]
    ) -> None:
        self.audio = AudioFile.create(user_id, s3_key, metadata, audio_id=audio_id)
        self.status = "pending"
        self.attempts = 0
        assert [e.event_type() for e in self.audio.get_uncommitted_events()] == [
            "AudioCreated"
        ]
        assert self.audio.version == 0

    # === Helpers ===

    def _run(self, command: str, call: Callable[[], None]) -> bool:
        """Apply `call` to the aggregate; check it against the model's verdict.

        Returns whether the model allowed the command.
        """
        allowed, target = TRANSITIONS[command]
        before_status = self.audio.status
        before_attempts = self.audio.attempts
        before_version = self.audio.version
        before_pending = self.audio.get_uncommitted_events()
        assert before_status == self.status

        if self.status in allowed:
            call()
            self.status = target
            if command == "start_processing":
                self.attempts += 1
            pending = self.audio.get_uncommitted_events()
            assert len(pending) == len(before_pending) + 1
            assert all(a is b for a, b in zip(pending, before_pending, strict=False))
            assert pending[-1].event_type() == EVENT_OF[command]
            assert self.audio.version == before_version
            return True

        with pytest.raises(InvalidStateError) as raised:
            call()
        assert raised.value.status == self.status
        assert f"is {self.status}" in str(raised.value)
        pending = self.audio.get_uncommitted_events()
        assert len(pending) == len(before_pending)
        assert all(a is b for a, b in zip(pending, before_pending, strict=True))
        assert self.audio.version == before_version
        assert self.audio.status == before_status
        assert self.audio.attempts == before_attempts
        return False

    # === Rules: one per command, tried in every status ===

    @rule(language=LANGUAGES, enable_diarization=st.booleans())
    def start_processing(self, language: str, enable_diarization: bool) -> None:
        if self._run(
            "start_processing",
            lambda: self.audio.start_processing(language, enable_diarization),
        ):
            assert self.audio.language == language
            assert self.audio.failure_reason is None

    @rule(text=TEXTS, confidence=CONFIDENCES, language=LANGUAGES)
    def complete_transcription(
        self, text: str, confidence: float, language: str
    ) -> None:
        if self._run(
            "complete_transcription",
            lambda: self.audio.complete_transcription(text, confidence, language),
        ):
            assert self.audio.transcription is not None
            assert self.audio.transcription.text == text
            assert self.audio.transcription.confidence == confidence
            assert self.audio.transcription.language == language

    @rule()
    def complete_processing(self) -> None:
        self._run("complete_processing", self.audio.complete_processing)

    @rule(reason=REASONS, retryable=st.booleans())
    def fail_processing(self, reason: str, retryable: bool) -> None:
        if self._run(
            "fail_processing",
            lambda: self.audio.fail_processing(reason, retryable),
        ):
            assert self.audio.failure_reason == reason

    @rule()
    def delete(self) -> None:
        if self._run("delete", self.audio.delete):
            assert self.audio.transcription is None

    @precondition(lambda self: bool(self.audio.get_uncommitted_events()))
    @rule()
    def commit(self) -> None:
        before = self.audio.version
        pending = self.audio.get_uncommitted_events()
        self.committed.extend(pending)
        self.audio.mark_events_as_committed()
        assert self.audio.version == before + len(pending)
        assert self.audio.get_uncommitted_events() == []

    # === Invariants ===

    @invariant()
    def matches_model(self) -> None:
        assert self.audio.status == self.status
        assert self.audio.attempts == self.attempts

    @invariant()
    def versions_count_events(self) -> None:
        assert self.audio.version == len(self.committed)

    @invariant()
    def replay_rebuilds_the_live_aggregate(self) -> None:
        history = self.committed + self.audio.get_uncommitted_events()
        rebuilt = AudioFile.reconstitute(list(enumerate(history, start=1)))
        live = self.audio
        assert rebuilt.version == len(history)
        assert rebuilt.version == live.version + len(live.get_uncommitted_events())
        assert rebuilt.get_uncommitted_events() == []
        assert rebuilt.id == live.id
        assert rebuilt.status == live.status
        assert rebuilt.attempts == live.attempts
        assert rebuilt.failure_reason == live.failure_reason
        assert rebuilt.language == live.language
        assert _text(rebuilt) == _text(live)


def _text(audio: AudioFile) -> str | None:
    return None if audio.transcription is None else audio.transcription.text


TestAudioFileModel = AudioFileMachine.TestCase
TestAudioFileModel.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None
)


def test_created_aggregate_starts_its_stream_with_audio_created_at_version_1() -> None:
    audio = AudioFile.create(uuid4(), "audio/u/a.wav", {"title": "会議"})
    [event] = audio.get_uncommitted_events()
    audio.mark_events_as_committed()

    assert isinstance(event, AudioCreated)
    assert event.audio_id == audio.audio_id
    assert audio.version == 1
    assert audio.get_uncommitted_events() == []
    rebuilt = AudioFile.reconstitute([(1, event)])
    assert rebuilt.version == 1
    assert rebuilt.status == audio.status == "pending"
