"""Cache-aside copies of read-model items in Redis, as JSON with their version,
and the transcriber's progress entries (`RedisProgress`).

A copy read from the read model is stored only with a fill token taken
before that read, and only while the token is still there: the projector
deletes an audio's entry and token whenever its item changes
(`nova_projector_readmodel.adapters.redis_cache`), so a copy read just before
a change can never be stored after it (the classic cache-aside race). Each
step is one Lua script, so Redis runs it atomically. Entries also expire
after `NOVA_CACHE_TTL_S`. Errors propagate: the query handler logs them and
reads the read model directly, so a Redis outage never fails a request.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID, uuid4

from redis.asyncio import Redis

from nova_platform.cache import audio_fill_key, audio_key, progress_key
from nova_platform.settings import NovaSettings

from ..application.queries import AudioReadModel, CacheLookup

# KEYS: entry, fill token. ARGV: a new token, TTL in ms, `lookup` or `reserve`.
# A lookup answers {1, entry} on a hit; otherwise {0, token}, the token
# created unless one is already out (readers share it until it is dropped).
_LOOKUP = """
local entry = redis.call('GET', KEYS[1])
if entry and ARGV[3] == 'lookup' then return {1, entry} end
local token = redis.call('GET', KEYS[2])
if not token then
  token = ARGV[1]
  redis.call('SET', KEYS[2], token, 'PX', ARGV[2])
end
return {0, token}
"""

# KEYS: entry, fill token. ARGV: token, item JSON, TTL in ms, item version.
# Stores only while the token is the one taken before the read, and never
# over a copy at the same or a newer version.
_PUT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, cached = pcall(cjson.decode, current)
  local version = ok and type(cached) == 'table' and tonumber(cached['version'])
  if version and version >= tonumber(ARGV[4]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


class RedisAudioCache:
    """`AudioCache` in Redis; fill tokens live as long as entries (`ttl_s`):
    one that expires during a read only means that copy is not stored."""

    def __init__(self, redis: Redis, settings: NovaSettings, ttl_s: float) -> None:
        self._redis = redis
        self._settings = settings
        self._ttl_ms = max(int(ttl_s * 1000), 1)
        self._lookup = redis.register_script(_LOOKUP)
        self._put = redis.register_script(_PUT)

    def _keys(self, audio_id: UUID) -> list[str]:
        return [
            audio_key(self._settings, str(audio_id)),
            audio_fill_key(self._settings, str(audio_id)),
        ]

    async def get(self, audio_id: UUID) -> CacheLookup:
        hit, value = await self._lookup(
            keys=self._keys(audio_id), args=[uuid4().hex, self._ttl_ms, "lookup"]
        )
        if hit:
            return CacheLookup(AudioReadModel.model_validate_json(value))
        return CacheLookup(None, _text(value))

    async def reserve(self, audio_id: UUID) -> str:
        _, token = await self._lookup(
            keys=self._keys(audio_id), args=[uuid4().hex, self._ttl_ms, "reserve"]
        )
        return _text(token)

    async def put(self, audio: AudioReadModel, fill_token: str) -> bool:
        stored = await self._put(
            keys=self._keys(audio.audio_id),
            args=[fill_token, audio.model_dump_json(), self._ttl_ms, audio.version],
        )
        return bool(stored)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
