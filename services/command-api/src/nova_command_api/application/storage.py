"""The audio object store port, and what the command side knows about audio.

Uploaded audio lives in an object store (S3 in production) under
`audio/<user id>/...`; the command side writes it, checks that it exists and
removes it. `AudioInfo` is what probing an upload found out about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO, Protocol

SUPPORTED_AUDIO = "WAV, MP3, Ogg/Opus/Vorbis, FLAC, M4A/AAC"
"""The audio formats Nova accepts, as the errors name them to clients."""


@dataclass(frozen=True)
class AudioInfo:
    """What probing an upload found: a canonical content type and its length.

    `format` is a short name: "wav", "mp3", "ogg", "flac", "m4a" or "aac".
    """

    content_type: str
    duration_s: float
    format: str


@dataclass(frozen=True)
class StoredObject:
    """An object in the audio store; `content_type` is None if none was set."""

    key: str
    size: int
    content_type: str | None


class NotAudioError(ValueError):
    """Raised when an upload is not audio Nova can read, or plays for no time.

    `reason` says what was wrong with this upload; the message also names the
    formats Nova accepts.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"the upload is not audio Nova can read ({SUPPORTED_AUDIO}): {reason}; "
            "send a recording in one of those formats"
        )


class AudioObjectMissingError(LookupError):
    """Raised when a command names an audio object that is not in the store.

    The message names the key and says to upload the file first, e.g.
    "there is no object at 'audio/<user>/a.wav'; upload the file first".
    """


class AudioStorageError(RuntimeError):
    """Raised when the object store refuses a request or cannot be reached.

    The message names the bucket and the store's error code; it is an
    operator's problem (a missing bucket, missing permissions), not the
    client's: log it, and answer the client 503 "try again later" without it.
    """

    def __init__(self, operation: str, bucket: str, key: str, code: str) -> None:
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.code = code
        super().__init__(
            f"could not {operation} {key!r} in bucket {bucket!r}: {code}; check "
            "that the bucket exists (`nova-init` creates it) and that this "
            "service's credentials may read and write it"
        )


class AudioStorage(Protocol):
    """Where uploaded audio is kept: one object per key."""

    async def put(self, key: str, body: BinaryIO, size: int, content_type: str) -> None:
        """Store the `size` bytes `body` holds from its position under `key`.

        `body` is read in chunks, never whole. An existing object under `key`
        is replaced. Raises `ValueError` if `body` holds more or fewer than
        `size` bytes; then nothing is written (an earlier object stays).
        """
        ...

    async def head(self, key: str) -> StoredObject | None:
        """The object under `key`, without its content; None if there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object under `key`; removing a missing object is fine."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix` (a user's
        `audio/<user id>/`); returns how many there were."""
        ...
