"""Every user's data key: where it is kept, and what wraps it.

A data key (32 random bytes, AES-256) encrypts the personal fields of one
user's events (see `nova_platform.personal`). It is stored only wrapped, by a
key-encryption key: a KMS key in production (`NOVA_KMS_KEY_ID`), a local
master key in development (`NOVA_MASTER_KEY`). Erasing a user replaces the
item by a tombstone: the wrapped key is gone, so is every personal field ever
sealed under it, and the tombstone's `erased_at` keeps a new key from ever
being created for that user.

Table `nova-user-keys`, one item per user: ``pk = USER#<user id>``,
``wrapped_key`` (binary), ``wrapping`` (which key wrapped it), ``created_at``,
and ``erased_at`` once erased. A backup or point-in-time copy of this table
still holds the keys of users erased since: keep its retention short.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from botocore.exceptions import ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

DATA_KEY_BYTES = 32
_NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class UserKey:
    """A user's item: the wrapped data key, or the tombstone of its erasure."""

    user_id: UUID
    wrapped_key: bytes | None
    wrapping: str
    """Which key-encryption key wrapped it: `local:<fingerprint>`, `kms:<key id>`."""
    created_at: datetime
    erased_at: datetime | None = None

    @property
    def erased(self) -> bool:
        return self.erased_at is not None


class KeyWrappingError(RuntimeError):
    """Raised when a stored data key cannot be unwrapped by this process's
    key-encryption key: it was wrapped by another master key or KMS key. Give
    every service the same `NOVA_MASTER_KEY` or `NOVA_KMS_KEY_ID`."""


class UserKeyStore(Protocol):
    """Where the wrapped data keys and the erasure tombstones are kept."""

    async def get(self, user_id: UUID) -> UserKey | None:
        """The user's item (strongly consistent); None if there is none."""
        ...

    async def get_many(self, user_ids: Collection[UUID]) -> dict[UUID, UserKey]:
        """The items of those users that have one (strongly consistent), in
        as few requests as the store allows."""
        ...

    async def create(self, key: UserKey) -> UserKey:
        """Store `key` unless the user has an item already; returns the item
        stored now: `key`, or the one (or the tombstone) another writer put
        first. Of concurrent creators, exactly one wins."""
        ...

    async def erase(self, user_id: UUID, erased_at: datetime) -> UserKey:
        """Replace the user's data key by a tombstone; returns the tombstone.

        An earlier erasure keeps its `erased_at`; a user without a key gets a
        tombstone all the same, so that no key is created for them later.
        """
        ...


class KeyWrapper(Protocol):
    """The key-encryption key: makes data keys and unwraps stored ones."""

    @property
    def wrapping(self) -> str:
        """The name stored with each key it wraps (`UserKey.wrapping`)."""
        ...

    async def new_data_key(self, user_id: UUID) -> tuple[bytes, bytes]:
        """A fresh data key for `user_id`: (the key, the key wrapped)."""
        ...

    async def unwrap(self, wrapped: bytes, user_id: UUID) -> bytes:
        """The data key `wrapped` holds; raises `KeyWrappingError`."""
        ...


class InMemoryUserKeys:
    """`UserKeyStore` in a dict, for unit tests."""

    def __init__(self) -> None:
        self.keys: dict[UUID, UserKey] = {}
        self.reads = 0

    async def get(self, user_id: UUID) -> UserKey | None:
        self.reads += 1
        await asyncio.sleep(0)
        return self.keys.get(user_id)

    async def get_many(self, user_ids: Collection[UUID]) -> dict[UUID, UserKey]:
        self.reads += 1
        await asyncio.sleep(0)
        return {u: self.keys[u] for u in user_ids if u in self.keys}

    async def create(self, key: UserKey) -> UserKey:
        await asyncio.sleep(0)
        return self.keys.setdefault(key.user_id, key)

    async def erase(self, user_id: UUID, erased_at: datetime) -> UserKey:
        await asyncio.sleep(0)
        found = self.keys.get(user_id)
        if found is not None and found.erased_at is not None:
            return found
        tombstone = UserKey(
            user_id,
            None,
            found.wrapping if found else "",
            found.created_at if found else erased_at,
            erased_at,
        )
        self.keys[user_id] = tombstone
        return tombstone


BATCH_GET_LIMIT = 100
"""Keys per BatchGetItem, DynamoDB's limit."""
UNPROCESSED_ROUNDS = 4
"""BatchGetItem calls for one hundred keys before the rest is read one by one."""


class DynamoDBUserKeys:
    """`UserKeyStore` on the `nova-user-keys` table."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    async def get(self, user_id: UUID) -> UserKey | None:
        found = await self._ddb.get_item(
            TableName=self._table, Key=_key(user_id), ConsistentRead=True
        )
        return _user_key(found["Item"]) if "Item" in found else None

    async def get_many(self, user_ids: Collection[UUID]) -> dict[UUID, UserKey]:
        found: dict[UUID, UserKey] = {}
        wanted = list(dict.fromkeys(user_ids))
        for start in range(0, len(wanted), BATCH_GET_LIMIT):
            keys = [_key(u) for u in wanted[start : start + BATCH_GET_LIMIT]]
            for attempt in range(UNPROCESSED_ROUNDS):
                if attempt:
                    await asyncio.sleep(0.05 * 2**attempt)
                answer = await self._ddb.batch_get_item(
                    RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}}
                )
                for item in answer.get("Responses", {}).get(self._table, []):
                    key = _user_key(item)
                    found[key.user_id] = key
                # What DynamoDB left for later (throttled, or over 16 MB).
                unprocessed: dict[str, Any] = dict(answer.get("UnprocessedKeys", {}))
                keys = list(unprocessed.get(self._table, {}).get("Keys", []))
                if not keys:
                    break
            # Still throttled: one GetItem each, which raises if it stays so.
            for left_key in keys:
                user_id = UUID(left_key["pk"]["S"].removeprefix("USER#"))
                if (one := await self.get(user_id)) is not None:
                    found[user_id] = one
        return found

    async def create(self, key: UserKey) -> UserKey:
        item: dict[str, Any] = {
            **_key(key.user_id),
            "wrapping": {"S": key.wrapping},
            "created_at": {"S": key.created_at.isoformat()},
        }
        if key.wrapped_key is not None:
            item["wrapped_key"] = {"B": key.wrapped_key}
        if key.erased_at is not None:
            item["erased_at"] = {"S": key.erased_at.isoformat()}
        try:
            await self._ddb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
            winner = await self.get(key.user_id)
            if winner is None:  # created and erased, then removed by hand
                raise
            return winner
        return key

    async def erase(self, user_id: UUID, erased_at: datetime) -> UserKey:
        answer = await self._ddb.update_item(
            TableName=self._table,
            Key=_key(user_id),
            UpdateExpression=(
                "SET erased_at = if_not_exists(erased_at, :at), "
                "created_at = if_not_exists(created_at, :at), "
                "wrapping = if_not_exists(wrapping, :none) REMOVE wrapped_key"
            ),
            ExpressionAttributeValues={
                ":at": {"S": erased_at.isoformat()},
                ":none": {"S": ""},
            },
            ReturnValues="ALL_NEW",
        )
        return _user_key(answer["Attributes"])


class LocalKeyWrapper:
    """Wraps data keys with a local master key (AES-256-GCM): development only,
    since whoever reads `NOVA_MASTER_KEY` can unwrap every stored key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != DATA_KEY_BYTES:
            raise ValueError(f"the master key must be {DATA_KEY_BYTES} bytes")
        self._cipher = AESGCM(master_key)
        fingerprint = hashlib.sha256(b"nova-master-key:" + master_key).hexdigest()
        self._wrapping = f"local:{fingerprint[:16]}"

    @property
    def wrapping(self) -> str:
        return self._wrapping

    async def new_data_key(self, user_id: UUID) -> tuple[bytes, bytes]:
        key = AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)
        nonce = os.urandom(_NONCE_BYTES)
        return key, nonce + self._cipher.encrypt(nonce, key, _context(user_id))

    async def unwrap(self, wrapped: bytes, user_id: UUID) -> bytes:
        nonce, sealed = wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:]
        try:
            return self._cipher.decrypt(nonce, sealed, _context(user_id))
        except InvalidTag as exc:
            raise KeyWrappingError(
                f"the data key of user {user_id} does not unwrap with this "
                "NOVA_MASTER_KEY; give every service the key it was wrapped with"
            ) from exc


class KmsKeyWrapper:
    """Data keys from AWS KMS (`GenerateDataKey`), unwrapped by `Decrypt`, both
    bound to the user by the encryption context `nova:user_id`."""

    def __init__(self, client: Any, key_id: str) -> None:
        self._kms = client
        self._key_id = key_id

    @property
    def wrapping(self) -> str:
        return f"kms:{self._key_id}"

    async def new_data_key(self, user_id: UUID) -> tuple[bytes, bytes]:
        answer = await self._kms.generate_data_key(
            KeyId=self._key_id,
            KeySpec="AES_256",
            EncryptionContext=_kms_context(user_id),
        )
        return bytes(answer["Plaintext"]), bytes(answer["CiphertextBlob"])

    async def unwrap(self, wrapped: bytes, user_id: UUID) -> bytes:
        try:
            answer = await self._kms.decrypt(
                CiphertextBlob=wrapped,
                KeyId=self._key_id,
                EncryptionContext=_kms_context(user_id),
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise KeyWrappingError(
                    f"the data key of user {user_id} does not unwrap with KMS key "
                    f"{self._key_id} ({code}); give every service the key it was "
                    "wrapped with (NOVA_KMS_KEY_ID)"
                ) from exc
            raise
        return bytes(answer["Plaintext"])


def new_user_key(user_id: UUID, wrapped: bytes, wrapping: str) -> UserKey:
    """The item of a data key made now."""
    return UserKey(user_id, wrapped, wrapping, datetime.now(UTC))


def _context(user_id: UUID) -> bytes:
    return f"nova-user-key:{user_id}".encode()


def _kms_context(user_id: UUID) -> dict[str, str]:
    return {"nova:user_id": str(user_id)}


def _key(user_id: UUID) -> dict[str, Any]:
    return {"pk": {"S": f"USER#{user_id}"}}


def _user_key(item: dict[str, Any]) -> UserKey:
    erased = item.get("erased_at", {}).get("S")
    wrapped = item.get("wrapped_key", {}).get("B")
    return UserKey(
        user_id=UUID(item["pk"]["S"].removeprefix("USER#")),
        wrapped_key=bytes(wrapped) if wrapped is not None else None,
        wrapping=item.get("wrapping", {}).get("S", ""),
        created_at=datetime.fromisoformat(item["created_at"]["S"]),
        erased_at=datetime.fromisoformat(erased) if erased else None,
    )
