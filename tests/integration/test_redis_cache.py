from __future__ import annotations

from uuid import uuid4

import pytest
from redis.asyncio import Redis

from nova_platform.cache import audio_fill_key, audio_key
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.adapters.redis_cache import RedisCacheInvalidator

pytestmark = pytest.mark.integration


async def test_invalidation_deletes_the_changed_entries_and_their_fill_tokens(
    settings: NovaSettings,
) -> None:
    redis = Redis.from_url(settings.redis_url)
    changed, untouched = str(uuid4()), str(uuid4())
    keys = (audio_key, audio_fill_key)
    try:
        for audio_id in (changed, untouched):
            for key in keys:
                await redis.set(key(settings, audio_id), b"x")

        await RedisCacheInvalidator(redis, settings).invalidate([changed])

        assert [await redis.get(k(settings, changed)) for k in keys] == [None, None]
        assert [await redis.get(k(settings, untouched)) for k in keys] == [b"x", b"x"]
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
