from __future__ import annotations

import pytest

from nova_command_api.adapters.memory_audio_storage import InMemoryAudioStorage

from ..contracts.audio_storage import AudioStorageContract, ReadBack


@pytest.fixture
def storage() -> InMemoryAudioStorage:
    return InMemoryAudioStorage()


@pytest.fixture
def read_back(storage: InMemoryAudioStorage) -> ReadBack:
    async def read(key: str) -> bytes | None:
        return storage.objects.get(key)

    return read


class TestInMemoryAudioStorage(AudioStorageContract):
    pass
