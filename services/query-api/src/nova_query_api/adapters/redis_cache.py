"""Cache-aside copies of read-model items in Redis, as JSON with their version,
and the transcriber's progress entries (`RedisProgress`).

The projector deletes an audio's key whenever its item changes
(`nova_projector_readmodel.adapters.redis_cache`); entries also expire after
`NOVA_CACHE_TTL_S`. Errors propagate: the query handler logs them and reads
the read model directly, so a Redis outage never fails a request.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from nova_platform.cache import audio_key, progress_key
from nova_platform.settings import NovaSettings

from ..application.queries import AudioReadModel


class RedisAudioCache:
    def __init__(self, redis: Redis, settings: NovaSettings, ttl_s: float) -> None:
        self._redis = redis
        self._settings = settings
        self._ttl_ms = max(int(ttl_s * 1000), 1)

    async def get(self, audio_id: UUID) -> AudioReadModel | None:
        raw = await self._redis.get(audio_key(self._settings, str(audio_id)))
        if raw is None:
            return None
        return AudioReadModel.model_validate_json(raw)

    async def put(self, audio: AudioReadModel) -> None:
        await self._redis.set(
            audio_key(self._settings, str(audio.audio_id)),
            audio.model_dump_json(),
            px=self._ttl_ms,
        )


class RedisProgress:
    """The transcriber's progress entries (`progress_key`), read as JSON."""

    def __init__(self, redis: Redis, settings: NovaSettings) -> None:
        self._redis = redis
        self._settings = settings

    async def get(self, audio_id: UUID) -> dict[str, Any] | None:
        raw = await self._redis.get(progress_key(self._settings, str(audio_id)))
        if raw is None:
            return None
        entry = json.loads(raw)
        return entry if isinstance(entry, dict) else None
