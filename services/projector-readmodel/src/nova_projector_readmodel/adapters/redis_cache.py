"""Drops query-api's cached copies of the items a batch changed."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from nova_platform.cache import audio_fill_key, audio_key
from nova_platform.settings import NovaSettings

logger = logging.getLogger(__name__)


class RedisCacheInvalidator:
    """Deletes the cache entries of changed audios, in one round trip.

    Each entry's fill token goes with it: a query-api reader that read the
    read model before this change can then no longer store its copy (see
    `nova_platform.cache`). Call it only after the changes are written.

    A Redis outage is logged and does not hold the projection back: entries
    expire by their TTL, and readers that send `min_version` skip a stale one.
    """

    def __init__(self, redis: Redis, settings: NovaSettings) -> None:
        self._redis = redis
        self._settings = settings
        self.failures = 0

    async def invalidate(self, audio_ids: Sequence[str]) -> None:
        keys = [
            key
            for a in audio_ids
            for key in (audio_key(self._settings, a), audio_fill_key(self._settings, a))
        ]
        try:
            await self._redis.delete(*keys)
        except (RedisError, OSError) as exc:
            self.failures += 1
            logger.warning(
                "cache invalidation failed; entries expire by TTL",
                extra={"keys": len(keys), "error": str(exc)},
            )
