from __future__ import annotations

from uuid import uuid4

import pytest
from redis.asyncio import Redis

from nova_platform.cache import audio_key
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.adapters.redis_cache import RedisCacheInvalidator

pytestmark = pytest.mark.integration


async def test_invalidation_deletes_the_changed_entries(settings: NovaSettings) -> None:
    redis = Redis.from_url(settings.redis_url)
    changed, untouched = str(uuid4()), str(uuid4())
    try:
        await redis.set(audio_key(settings, changed), b"{}")
        await redis.set(audio_key(settings, untouched), b"{}")

        await RedisCacheInvalidator(redis, settings).invalidate([changed])

        assert await redis.get(audio_key(settings, changed)) is None
        assert await redis.get(audio_key(settings, untouched)) == b"{}"
    finally:
        await redis.aclose()


async def test_a_redis_outage_does_not_stop_the_projection(
    settings: NovaSettings,
) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    invalidator = RedisCacheInvalidator(unreachable, settings)
    try:
        await invalidator.invalidate([str(uuid4())])
    finally:
        await unreachable.aclose()

    assert invalidator.failures == 1
