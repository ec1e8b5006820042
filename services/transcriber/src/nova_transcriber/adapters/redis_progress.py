"""Transcription progress in Redis (`nova_platform.cache.progress_key`).

Each write replaces the entry and sets its TTL (`PROGRESS_TTL_S`), so an
entry of a crashed transcriber disappears by itself. query-api reads it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from uuid import UUID

from redis.asyncio import Redis

from nova_platform.cache import PROGRESS_TTL_S, progress_key
from nova_platform.settings import NovaSettings


class RedisProgressStore:
    def __init__(
        self, redis: Redis, settings: NovaSettings, ttl_s: float = PROGRESS_TTL_S
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._ttl_ms = max(int(ttl_s * 1000), 1)

    async def write(self, audio_id: UUID, entry: Mapping[str, object]) -> None:
        await self._redis.set(
            progress_key(self._settings, str(audio_id)),
            json.dumps(dict(entry)),
            px=self._ttl_ms,
        )
