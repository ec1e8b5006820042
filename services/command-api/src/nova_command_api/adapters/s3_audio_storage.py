"""The audio store on S3 (or any S3 API, such as moto's), through aioboto3.

`put` streams the body with aioboto3's managed `upload_fileobj`: one
`PutObject` below 8 MiB, a multipart upload in parts of at least 8 MiB above
it, with a bounded number of parts in memory at a time. botocore's errors end
here: a missing object becomes None (`head`) or nothing to do (`delete`),
everything else an `AudioStorageError` naming the bucket and the error code.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..application.storage import AudioStorageError, StoredObject

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 8 * MiB
"""Bodies of this size or more go up as a multipart upload."""
MAX_PARTS = 10_000
"""S3's limit on the parts of one multipart upload."""
CONCURRENT_PARTS = 4
"""Parts sent at once; about twice as many are held in memory at most."""

_MISSING = frozenset({"404", "NoSuchKey", "NotFound"})


class _ExactlySized:
    """Reads `body` in chunks and fails unless it holds exactly `size` bytes.

    Raising from `read` makes `upload_fileobj` stop before `PutObject`, or
    abort its multipart upload, so a wrong-sized body never becomes an object.
    """

    def __init__(self, body: BinaryIO, size: int) -> None:
        self._body = body
        self._size = size
        self._read = 0

    def read(self, n: int = -1) -> bytes:
        remaining = self._size - self._read
        # One byte past the promised size tells a longer body from a full one.
        chunk = self._body.read(remaining + 1 if n < 0 else min(n, remaining + 1))
        self._read += len(chunk)
        if self._read > self._size:
            raise ValueError(
                f"the body holds more than the {self._size} bytes it was said "
                "to; pass its real size"
            )
        if not chunk and n != 0 and self._read < self._size:
            raise ValueError(
                f"the body ended after {self._read} of the {self._size} bytes it "
                "was said to hold; pass its real size"
            )
        return chunk


class S3AudioStorage:
    """Audio objects in one S3 bucket; `client` is an open aioboto3 S3 client."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    async def put(self, key: str, body: BinaryIO, size: int, content_type: str) -> None:
        if size < 0:
            raise ValueError(f"size must be 0 or more, got {size}")
        # Parts must be big enough that the whole body fits in S3's 10,000.
        part_size = max(MULTIPART_THRESHOLD, -(-size // MAX_PARTS))
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=part_size,
            max_concurrency=CONCURRENT_PARTS,
            max_io_queue=CONCURRENT_PARTS,
        )
        reader = _ExactlySized(body, size)
        try:
            await self._client.upload_fileobj(
                # aioboto3 only ever calls `read(n)` on it.
                cast(IO[Any], reader),
                self._bucket,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=config,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error("store", key, exc) from exc

    async def head(self, key: str) -> StoredObject | None:
        try:
            found = await self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise self._error("look up", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("look up", key, exc) from exc
        return StoredObject(
            key=key,
            size=found["ContentLength"],
            content_type=found.get("ContentType") or None,
        )

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return
            raise self._error("delete", key, exc) from exc
        except BotoCoreError as exc:
            raise self._error("delete", key, exc) from exc

    async def delete_prefix(self, prefix: str) -> int:
        # A listing page holds at most 1,000 keys, which is what one
        # DeleteObjects takes; each page is deleted before the next is read.
        deleted = 0
        request: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        try:
            while True:
                page = await self._client.list_objects_v2(**request)
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": o["Key"]} for o in page.get("Contents", [])
                ]
                if keys:
                    answer = await self._client.delete_objects(
                        Bucket=self._bucket, Delete={"Objects": keys, "Quiet": True}
                    )
                    if failed := answer.get("Errors"):
                        first = failed[0]
                        raise AudioStorageError(
                            "delete",
                            self._bucket,
                            str(first.get("Key", prefix)),
                            str(first.get("Code", "unknown")),
                        )
                    deleted += len(keys)
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    return deleted
                request["ContinuationToken"] = token
        except (ClientError, BotoCoreError) as exc:
            raise self._error("delete everything under", prefix, exc) from exc

    def _error(
        self, operation: str, key: str, exc: ClientError | BotoCoreError
    ) -> AudioStorageError:
        code = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
        return AudioStorageError(operation, self._bucket, key, code)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))
