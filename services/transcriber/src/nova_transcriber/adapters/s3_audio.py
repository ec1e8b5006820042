"""Fetches an audio object from S3 into a temporary file, through aioboto3."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from nova_platform.batches import is_transient

from ..application.ports import TranscriptionFailedError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
CHUNK = 1024 * 1024


class S3AudioSource:
    """Objects of the audio bucket, each downloaded to a file while it is used."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    @asynccontextmanager
    async def download(self, key: str) -> AsyncIterator[Path]:
        """The object `key` as a local file, deleted on exit.

        A missing object raises `TranscriptionFailedError` (the audio was
        deleted, or registered with a key that never held it); transient errors
        escape as they are.
        """
        try:
            response = await self._client.get_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING and not is_transient(exc):
                raise TranscriptionFailedError(
                    f"the audio file is not in storage (s3://{self._bucket}/{key}); "
                    "upload it again"
                ) from exc
            raise
        with tempfile.NamedTemporaryFile(prefix="nova-audio-") as file:
            body = response["Body"]
            async with body:  # releases the connection; reads go through `body`
                async for chunk in body.iter_chunks(CHUNK):
                    file.write(chunk)
            file.flush()
            yield Path(file.name)
