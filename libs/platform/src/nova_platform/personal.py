"""Crypto-shredding: the personal fields of every event, sealed per user.

`PersonalData.seal` takes the fields an event's schema marks `x-personal` out
of its `data` and puts them, encrypted, under one key (`data["_sealed"]`)::

    {"alg": "AES-256-GCM", "key_id": "<owner's user id>",
     "nonce": "<base64, 12 bytes, fresh per event>", "ciphertext": "<base64>"}

with the owner's data key (`nova_platform.user_keys`). The ids, types,
versions, timestamps, statuses, languages and numbers stay readable. The
additional authenticated data binds the ciphertext to its event (event id,
aggregate, event type, schema version, key id): copied into another event it
no longer opens. That sealed form is what the event store holds and what the
relay publishes, untouched.

`PersonalData.open` is the one way back, used by every reader (the command
side's store, consumers through `BatchProcessor`, rebuilds, query history,
integration, the transcriber). Once the owner was erased (their key destroyed)
the fields open to erased values that still validate against the model
(`nova_events.personal.erase_personal`), and the envelope says `erased`:
never a crash, never ciphertext. A payload that was tampered with raises
`PersonalDataError`. Events stored before sealing existed (no `_sealed`)
open unchanged until `nova-relay reseal` rewrites them sealed (`seal`, or
`shred` for an owner erased already).

Keys are cached per process for `NOVA_KEY_CACHE_TTL_S` (30 s), erasures too,
so opening costs no DynamoDB read per event. The process that erases a user
drops its cached key at once; any other process may still open (or seal with)
that user's key for at most the TTL after the erasure. That is why consumers
apply `UserErased` only once the TTL has passed since `erased_at`
(`wait_for_erasure`): whatever a projection wrote with a cached key was
written before, so the erasure removes it, and everything read later opens to
erased.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nova_events import SEALED_KEY, EventEnvelope, UnknownEventError, UserErased
from nova_events.personal import erase_personal, merge_personal, split_personal

from .aws import client_kwargs, session
from .settings import NovaSettings, master_key_bytes
from .user_keys import (
    DynamoDBUserKeys,
    KeyWrapper,
    KmsKeyWrapper,
    LocalKeyWrapper,
    UserKey,
    UserKeyStore,
    new_user_key,
)

logger = logging.getLogger(__name__)

ALGORITHM = "AES-256-GCM"
_NONCE_BYTES = 12
_AAD_PREFIX = "nova-personal-v1"
DEFAULT_CACHE_TTL_S = 30.0
DEV_MASTER_KEY = "+akyB+tQM2EVAD2XbU2Vt/aSXJ9QLxCwWwiJ+xT2Zd4="
"""The `NOVA_MASTER_KEY` of `make run`, compose and the tests: development only
(it is public, so it protects nothing)."""
CLOCK_SKEW_S = 1.0
"""Added to the TTL before an erasure counts as settled everywhere."""


class PersonalDataError(ValueError):
    """Raised when a sealed payload does not open: it was changed, moved from
    another event, or is malformed. Not retriable: the event is poison."""


class UserErasedError(Exception):
    """Raised when personal data is to be sealed for a user who was erased:
    their key is destroyed and none is made again. Nothing was written."""

    def __init__(self, user_id: UUID, erased_at: datetime | None) -> None:
        self.user_id = user_id
        self.erased_at = erased_at
        when = f" at {erased_at.isoformat()}" if erased_at else ""
        super().__init__(
            f"user {user_id} was erased{when}; nothing more is stored for them"
        )


class KeyWrapperMissingError(RuntimeError):
    """Raised at start-up when neither key-encryption key is configured."""


@dataclass(frozen=True, slots=True)
class _Entry:
    expires_at: float
    cipher: AESGCM | None
    """None: the user has no key (erased, or never had one)."""
    erased_at: datetime | None


class PersonalData:
    """Seals and opens the personal fields of events with per-user data keys."""

    def __init__(
        self,
        keys: UserKeyStore,
        wrapper: KeyWrapper,
        *,
        cache_ttl_s: float = DEFAULT_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if cache_ttl_s <= 0:
            raise ValueError(f"cache_ttl_s must be positive, not {cache_ttl_s}")
        self._keys = keys
        self._wrapper = wrapper
        self._ttl = cache_ttl_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._cache: dict[UUID, _Entry] = {}
        self._loading: dict[tuple[UUID, bool], asyncio.Future[_Entry]] = {}

    @property
    def cache_ttl_s(self) -> float:
        return self._ttl

    # -- sealing -------------------------------------------------------------

    async def seal(self, envelope: EventEnvelope, owner: UUID) -> EventEnvelope:
        """The stored form of `envelope`: its personal fields sealed with the
        key of `owner` (created on the user's first event). An event without
        personal fields, or one sealed already, is returned as it is.

        Raises `UserErasedError` when `owner` was erased.
        """
        parts = _parts_to_seal(envelope)
        if parts is None:
            return envelope
        public, personal = parts
        entry = await self._entry(owner, create=True)
        if entry.cipher is None:
            raise UserErasedError(owner, entry.erased_at)
        return _sealed(envelope, public, personal, owner, entry.cipher)

    async def shred(self, envelope: EventEnvelope, owner: UUID) -> EventEnvelope:
        """The stored form of an event of `owner`, who was erased, that was
        stored before sealing existed: its personal fields dropped, and a sealed
        part that holds nothing, under a key no one keeps, so that it opens
        erased like every other event of theirs. An event without personal
        fields, or one sealed already, is returned as it is.

        Raises `ValueError` when `owner` was not erased (read afresh): their
        events are to be sealed with their key (`seal`).
        """
        parts = _parts_to_seal(envelope)
        if parts is None:
            return envelope
        if await self.erased_at(owner) is None:
            raise ValueError(
                f"user {owner} was not erased; seal their events with their key"
            )
        discarded = AESGCM(AESGCM.generate_key(bit_length=256))
        return _sealed(envelope, parts[0], {}, owner, discarded)

    async def seal_all(
        self, envelopes: Sequence[EventEnvelope], owner: UUID
    ) -> list[EventEnvelope]:
        return [await self.seal(envelope, owner) for envelope in envelopes]

    # -- opening -------------------------------------------------------------

    async def open(self, envelope: EventEnvelope) -> EventEnvelope:
        """`envelope` with its personal fields back in `data`, or erased (and
        marked `erased`) when the owner's key is gone. An envelope without a
        sealed part (no personal fields, or stored before sealing) is
        returned as it is. Raises `PersonalDataError` when it does not open.
        """
        sealed = envelope.data.get(SEALED_KEY)
        if sealed is None:
            return envelope
        key_id, nonce, ciphertext = _parse(envelope, sealed)
        public = {k: v for k, v in envelope.data.items() if k != SEALED_KEY}
        entry = await self._entry(key_id, create=False)
        if entry.cipher is None:
            try:
                erased = erase_personal(
                    envelope.event_type, envelope.schema_version, public
                )
            except UnknownEventError as exc:
                raise PersonalDataError(
                    f"{envelope.event_type} v{envelope.schema_version} is unknown "
                    "here, so its erased form is too; upgrade nova-events"
                ) from exc
            return envelope.as_erased(erased)
        try:
            plaintext = entry.cipher.decrypt(
                nonce, ciphertext, _aad(envelope, str(key_id))
            )
        except InvalidTag as exc:
            raise PersonalDataError(
                f"the personal data of {envelope.event_type} {envelope.event_id} "
                f"does not open with the key of user {key_id}: it was changed or "
                "copied from another event"
            ) from exc
        personal: dict[str, Any] = orjson.loads(plaintext)
        return envelope.model_copy(update={"data": merge_personal(public, personal)})

    async def open_all(self, envelopes: Sequence[EventEnvelope]) -> list[EventEnvelope]:
        """Every envelope opened (keys fetched once per user, concurrently).

        A `UserErased` among them drops that user's cached key first, so the
        user's other events here open to erased. Raises `PersonalDataError`
        for the first one that does not open.
        """
        opened = await self.open_each(envelopes)
        for result in opened:
            if isinstance(result, PersonalDataError):
                raise result
        return [r for r in opened if isinstance(r, EventEnvelope)]

    async def open_each(
        self, envelopes: Sequence[EventEnvelope]
    ) -> list[EventEnvelope | PersonalDataError]:
        """Like `open_all`, but each envelope that does not open gives its
        `PersonalDataError` in its place. Key store failures raise."""
        for envelope in envelopes:
            if envelope.event_type == UserErased.event_type():
                self.forget(envelope.aggregate_id)
        await self._prefetch(envelopes)
        results: list[EventEnvelope | PersonalDataError] = []
        for envelope in envelopes:
            try:
                results.append(await self.open(envelope))
            except PersonalDataError as exc:
                results.append(exc)
        return results

    # -- erasure -------------------------------------------------------------

    async def erase(self, user_id: UUID) -> datetime:
        """Destroy the user's data key, leaving a tombstone; returns when it
        was destroyed (the first time, if erased before)."""
        tombstone = await self._keys.erase(user_id, datetime.now(UTC))
        erased_at = tombstone.erased_at or datetime.now(UTC)
        self._cache[user_id] = _Entry(self._clock() + self._ttl, None, erased_at)
        logger.info("data key destroyed", extra={"user_id": str(user_id)})
        return erased_at

    async def erased_at(self, user_id: UUID) -> datetime | None:
        """When the user was erased, read afresh; None if they were not."""
        found = await self._keys.get(user_id)
        return found.erased_at if found is not None else None

    async def cached_erased_at(self, user_id: UUID) -> datetime | None:
        """When the user was erased, as this process's key cache knows it; None
        if they were not. Shares the cache `open` and `seal` use, so it reads
        the key store (and unwraps the key) only when nothing fresh is cached:
        an erasure by this process shows at once, one by another process
        within `cache_ttl_s`."""
        entry = await self._entry(user_id, create=False)
        return entry.erased_at

    def forget(self, user_id: UUID) -> None:
        """Drop what this process cached of the user's key."""
        self._cache.pop(user_id, None)

    def erasure_settles_at(self, erased_at: datetime) -> float:
        """The wall-clock time (Unix seconds) after which no process opens
        or seals with the key destroyed at `erased_at` (cached keys expired)."""
        return erased_at.timestamp() + self._ttl + CLOCK_SKEW_S

    async def wait_for_erasure(self, erased_at: datetime) -> None:
        """Wait until `erasure_settles_at(erased_at)`; at once for an old one."""
        delay = self.erasure_settles_at(erased_at) - self._wall_clock()
        if delay > 0:
            logger.info(
                "waiting for cached keys to expire before applying an erasure",
                extra={"wait_s": round(delay, 3)},
            )
            await self._sleep(delay)

    # -- keys ------------------------------------------------------------------

    async def _prefetch(self, envelopes: Iterable[EventEnvelope]) -> None:
        wanted: set[UUID] = set()
        now = self._clock()
        for envelope in envelopes:
            sealed = envelope.data.get(SEALED_KEY)
            if not isinstance(sealed, dict):
                continue
            try:
                user_id = UUID(str(sealed.get("key_id")))
            except ValueError:
                continue
            cached = self._cache.get(user_id)
            if cached is None or cached.expires_at <= now:
                wanted.add(user_id)
        wanted -= {user_id for user_id, _ in self._loading}
        if len(wanted) < 2:
            if wanted:
                await self._entry(wanted.pop(), create=False)
            return
        # One batched read for the batch's users (a catch-up meets hundreds),
        # then each key unwrapped; the unwrapping is what KMS is asked for.
        users = sorted(wanted)
        before = {u: self._cache.get(u) for u in users}
        stored = await self._keys.get_many(users)
        entries = await asyncio.gather(
            *(self._unwrapped(u, stored.get(u)) for u in users)
        )
        for user_id, entry in zip(users, entries, strict=True):
            # An entry put meanwhile (an erasure by this process) is newer.
            if self._cache.get(user_id) is before[user_id]:
                self._cache[user_id] = entry

    async def _entry(self, user_id: UUID, *, create: bool) -> _Entry:
        cached = self._cache.get(user_id)
        fresh = cached is not None and cached.expires_at > self._clock()
        # A reader's "no key" may be a user whose first event comes now.
        unknown = cached is not None and cached.cipher is None and not cached.erased_at
        if cached is not None and fresh and not (create and unknown):
            return cached
        flight = (user_id, create)
        loading = self._loading.get(flight)
        if loading is None:
            loading = asyncio.ensure_future(self._load(user_id, create))
            self._loading[flight] = loading
            loading.add_done_callback(lambda _: self._loading.pop(flight, None))
        return await asyncio.shield(loading)

    async def _load(self, user_id: UUID, create: bool) -> _Entry:
        stored = await self._keys.get(user_id)
        if stored is None and create:
            key, wrapped = await self._wrapper.new_data_key(user_id)
            mine = new_user_key(user_id, wrapped, self._wrapper.wrapping)
            stored = await self._keys.create(mine)
            if stored is mine or stored.wrapped_key == wrapped:
                return self._remember(user_id, AESGCM(key), None)
        entry = await self._unwrapped(user_id, stored)
        self._cache[user_id] = entry
        return entry

    async def _unwrapped(self, user_id: UUID, stored: UserKey | None) -> _Entry:
        expires = self._clock() + self._ttl
        if stored is None or stored.wrapped_key is None:
            erased_at = stored.erased_at if stored is not None else None
            return _Entry(expires, None, erased_at)
        key = await self._wrapper.unwrap(stored.wrapped_key, user_id)
        return _Entry(expires, AESGCM(key), None)

    def _remember(
        self, user_id: UUID, cipher: AESGCM | None, erased_at: datetime | None
    ) -> _Entry:
        entry = _Entry(self._clock() + self._ttl, cipher, erased_at)
        self._cache[user_id] = entry
        return entry


async def open_personal_data(
    settings: NovaSettings, stack: AsyncExitStack, ddb: Any | None = None
) -> PersonalData:
    """The `PersonalData` of a service: keys in `nova-user-keys`, wrapped by
    KMS (`NOVA_KMS_KEY_ID`) or the development master key (`NOVA_MASTER_KEY`).

    Clients are closed by `stack`; `ddb` reuses an open DynamoDB client.
    Raises `KeyWrapperMissingError` when neither is set: a service does not
    start without one.
    """
    wrapper: KeyWrapper
    if settings.kms_key_id:
        kms = await stack.enter_async_context(
            session().client("kms", **client_kwargs(settings))
        )
        wrapper = KmsKeyWrapper(kms, settings.kms_key_id)
    elif settings.master_key is not None:
        wrapper = LocalKeyWrapper(
            master_key_bytes(settings.master_key.get_secret_value())
        )
    else:
        raise KeyWrapperMissingError(
            "set NOVA_KMS_KEY_ID (production: the KMS key that wraps the users' "
            "data keys) or NOVA_MASTER_KEY (development: base64 of 32 random "
            "bytes); without one, personal data can neither be sealed nor opened"
        )
    client: Any = ddb
    if client is None:
        client = await stack.enter_async_context(
            session().client("dynamodb", **client_kwargs(settings))
        )
    return PersonalData(
        DynamoDBUserKeys(client, settings.user_keys_table),
        wrapper,
        cache_ttl_s=settings.key_cache_ttl_s,
    )


def _parts_to_seal(
    envelope: EventEnvelope,
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The public and the personal fields of `envelope`; None when there is
    nothing to seal (sealed already, or no personal field)."""
    if SEALED_KEY in envelope.data:
        return None
    public, personal = split_personal(
        envelope.event_type, envelope.schema_version, envelope.data
    )
    return (public, personal) if personal else None


def _sealed(
    envelope: EventEnvelope,
    public: dict[str, Any],
    personal: dict[str, Any],
    owner: UUID,
    cipher: AESGCM,
) -> EventEnvelope:
    key_id = str(owner)
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = cipher.encrypt(nonce, orjson.dumps(personal), _aad(envelope, key_id))
    public[SEALED_KEY] = {
        "alg": ALGORITHM,
        "key_id": key_id,
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    return envelope.model_copy(update={"data": public})


def _aad(envelope: EventEnvelope, key_id: str) -> bytes:
    return "|".join(
        (
            _AAD_PREFIX,
            str(envelope.event_id),
            envelope.aggregate_type,
            str(envelope.aggregate_id),
            envelope.event_type,
            str(envelope.schema_version),
            key_id,
        )
    ).encode()


def _parse(envelope: EventEnvelope, sealed: Any) -> tuple[UUID, bytes, bytes]:
    try:
        if not isinstance(sealed, dict) or sealed.get("alg") != ALGORITHM:
            raise ValueError(f"not an {ALGORITHM} sealed part")
        key_id = UUID(str(sealed["key_id"]))
        nonce = base64.b64decode(sealed["nonce"], validate=True)
        ciphertext = base64.b64decode(sealed["ciphertext"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise PersonalDataError(
            f"the sealed part of {envelope.event_type} {envelope.event_id} is "
            f"malformed ({exc}); it was not written by Nova"
        ) from exc
    if len(nonce) != _NONCE_BYTES:
        raise PersonalDataError(
            f"the sealed part of {envelope.event_type} {envelope.event_id} has a "
            f"{len(nonce)}-byte nonce, not {_NONCE_BYTES}"
        )
    return key_id, nonce, ciphertext
