"""The audio storage contract: every adapter must pass these same tests."""

from __future__ import annotations

import hashlib
import io
import random
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import BinaryIO
from uuid import uuid4

import pytest

from nova_command_api.application.storage import AudioStorage, StoredObject

ReadBack = Callable[[str], Awaitable[bytes | None]]
"""The bytes stored under a key, read around the port; None if there are none."""

MiB = 1024 * 1024
LARGE_SIZE = 12 * MiB + 123
"""Over 10 MiB and over the 8 MiB multipart threshold, ending in a short part."""


def new_key() -> str:
    return f"audio/{uuid4()}/{uuid4().hex[:8]}.wav"


class AudioStorageContract:
    """Subclasses provide `storage` (the adapter) and `read_back` fixtures."""

    @pytest.fixture
    def large_body(self) -> Iterator[tuple[BinaryIO, str]]:
        """`LARGE_SIZE` pseudo-random bytes in a temporary file, and their sha256.

        Written a MiB at a time, so the test holds one MiB, not the whole body.
        """
        rng = random.Random(7)
        digest = hashlib.sha256()
        with tempfile.TemporaryFile() as file:
            left = LARGE_SIZE
            while left:
                chunk = rng.randbytes(min(MiB, left))
                digest.update(chunk)
                file.write(chunk)
                left -= len(chunk)
            file.seek(0)
            yield file, digest.hexdigest()

    async def test_put_then_head(
        self, storage: AudioStorage, read_back: ReadBack
    ) -> None:
        key = new_key()
        data = b"RIFF" + bytes(range(256)) * 4

        await storage.put(key, io.BytesIO(data), len(data), "audio/wav")

        assert await storage.head(key) == StoredObject(key, len(data), "audio/wav")
        assert await read_back(key) == data

    async def test_head_of_a_missing_key_is_none(self, storage: AudioStorage) -> None:
        assert await storage.head(new_key()) is None

    async def test_put_replaces(
        self, storage: AudioStorage, read_back: ReadBack
    ) -> None:
        key = new_key()
        await storage.put(key, io.BytesIO(b"first"), 5, "audio/wav")

        await storage.put(key, io.BytesIO(b"second!"), 7, "audio/mpeg")

        assert await storage.head(key) == StoredObject(key, 7, "audio/mpeg")
        assert await read_back(key) == b"second!"

    async def test_an_empty_object(self, storage: AudioStorage) -> None:
        key = new_key()

        await storage.put(key, io.BytesIO(b""), 0, "audio/wav")

        assert await storage.head(key) == StoredObject(key, 0, "audio/wav")

    async def test_reads_the_body_from_its_position(
        self, storage: AudioStorage, read_back: ReadBack
    ) -> None:
        key = new_key()
        body = io.BytesIO(b"skipped|stored")
        body.seek(len(b"skipped|"))

        await storage.put(key, body, len(b"stored"), "audio/ogg")

        assert await read_back(key) == b"stored"

    @pytest.mark.parametrize("size", [4, 6], ids=["said-shorter", "said-longer"])
    async def test_a_wrongly_sized_body_writes_nothing(
        self, storage: AudioStorage, read_back: ReadBack, size: int
    ) -> None:
        key = new_key()
        await storage.put(key, io.BytesIO(b"earlier"), 7, "audio/wav")

        with pytest.raises(ValueError, match="real size"):
            await storage.put(key, io.BytesIO(b"12345"), size, "audio/flac")

        assert await storage.head(key) == StoredObject(key, 7, "audio/wav")
        assert await read_back(key) == b"earlier"
        other = new_key()
        with pytest.raises(ValueError, match="real size"):
            await storage.put(other, io.BytesIO(b"12345"), size, "audio/flac")
        assert await storage.head(other) is None

    async def test_delete_removes(
        self, storage: AudioStorage, read_back: ReadBack
    ) -> None:
        key = new_key()
        await storage.put(key, io.BytesIO(b"audio"), 5, "audio/wav")

        await storage.delete(key)

        assert await storage.head(key) is None
        assert await read_back(key) is None

    async def test_delete_is_idempotent(self, storage: AudioStorage) -> None:
        key = new_key()
        await storage.put(key, io.BytesIO(b"audio"), 5, "audio/wav")

        await storage.delete(key)
        await storage.delete(key)
        await storage.delete(new_key())

        assert await storage.head(key) is None

    async def test_delete_prefix_removes_one_users_objects_only(
        self, storage: AudioStorage, read_back: ReadBack
    ) -> None:
        user = uuid4()
        mine = [f"audio/{user}/{n}.wav" for n in range(3)] + [f"audio/{user}/x/y.mp3"]
        theirs = [f"audio/{user}0/a.wav", f"audio/{uuid4()}/b.wav"]
        for key in mine + theirs:
            await storage.put(key, io.BytesIO(b"audio"), 5, "audio/wav")

        deleted = await storage.delete_prefix(f"audio/{user}/")

        assert deleted == len(mine)
        for key in mine:
            assert await read_back(key) is None
        for key in theirs:
            assert await read_back(key) == b"audio"
        assert await storage.delete_prefix(f"audio/{user}/") == 0

    async def test_a_large_object(
        self,
        storage: AudioStorage,
        read_back: ReadBack,
        large_body: tuple[BinaryIO, str],
    ) -> None:
        key = new_key()
        body, sha256 = large_body

        await storage.put(key, body, LARGE_SIZE, "audio/flac")

        assert await storage.head(key) == StoredObject(key, LARGE_SIZE, "audio/flac")
        stored = await read_back(key)
        assert stored is not None
        assert hashlib.sha256(stored).hexdigest() == sha256
