"""Errors of the command handlers; the HTTP layer maps each to a problem type."""

from __future__ import annotations

from uuid import UUID


class AudioNotFoundError(LookupError):
    """Raised when no audio with this id exists for the caller.

    Another user's audio raises this too, so ids cannot be probed.
    """

    def __init__(self, audio_id: UUID) -> None:
        self.audio_id = audio_id
        super().__init__(f"no audio {audio_id} visible to you; check the id")


class VersionMismatchError(Exception):
    """Raised when `If-Match` names a version the audio is no longer at."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the audio is at version {actual}, not {expected}; read it again and "
            f'resend with If-Match: "{actual}" if the command still applies'
        )


class StaleAttemptError(Exception):
    """Raised when a transcription result belongs to an earlier attempt."""

    def __init__(self, attempt: int, current: int) -> None:
        self.attempt = attempt
        self.current = current
        super().__init__(
            f"this result is for attempt {attempt}, but attempt {current} is the "
            "current one; drop the result"
        )


class AudioAlreadyRegisteredError(Exception):
    """Raised when an object is registered that is some audio's file already.

    `deleted` is True when that audio was erased: its key cannot be reused.
    """

    def __init__(self, s3_key: str, audio_id: UUID, *, deleted: bool) -> None:
        self.s3_key = s3_key
        self.audio_id = audio_id
        self.deleted = deleted
        if deleted:
            advice = "it was erased; upload the file again under a new key"
        else:
            advice = f"use audio {audio_id}, or register another object"
        super().__init__(
            f"{s3_key!r} is registered as audio {audio_id} already; {advice}"
        )
