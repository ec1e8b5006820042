"""An in-memory audio store for fast unit tests; same contract as S3's."""

from __future__ import annotations

from typing import BinaryIO

from ..application.storage import StoredObject

_CHUNK = 1024 * 1024


class InMemoryAudioStorage:
    """Objects as bytes in a dict; `objects` shows them to tests' assertions."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, str]] = {}

    async def put(self, key: str, body: BinaryIO, size: int, content_type: str) -> None:
        if size < 0:
            raise ValueError(f"size must be 0 or more, got {size}")
        data = bytearray()
        while len(data) <= size:
            # One byte past the promised size tells a longer body from a full one.
            chunk = body.read(min(_CHUNK, size + 1 - len(data)))
            if not chunk:
                break
            data += chunk
        if len(data) > size:
            raise ValueError(
                f"the body holds more than the {size} bytes it was said to; "
                "pass its real size"
            )
        if len(data) < size:
            raise ValueError(
                f"the body ended after {len(data)} of the {size} bytes it was "
                "said to hold; pass its real size"
            )
        self._objects[key] = (bytes(data), content_type)

    async def head(self, key: str) -> StoredObject | None:
        found = self._objects.get(key)
        if found is None:
            return None
        data, content_type = found
        return StoredObject(key=key, size=len(data), content_type=content_type)

    async def delete(self, key: str) -> None:
        self._objects.pop(key, None)

    async def delete_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._objects if key.startswith(prefix)]
        for key in doomed:
            del self._objects[key]
        return len(doomed)

    @property
    def objects(self) -> dict[str, bytes]:
        """A copy of what is stored, key to content; for tests' assertions."""
        return {key: data for key, (data, _) in self._objects.items()}
