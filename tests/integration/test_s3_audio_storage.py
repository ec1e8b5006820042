from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, BinaryIO

import pytest
from botocore.exceptions import ClientError

from nova_command_api.adapters.s3_audio_storage import S3AudioStorage
from nova_command_api.application.storage import AudioStorageError
from nova_platform.aws import client_kwargs, session
from nova_platform.settings import NovaSettings

from ..contracts.audio_storage import (
    LARGE_SIZE,
    AudioStorageContract,
    ReadBack,
    new_key,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

pytestmark = pytest.mark.integration


@pytest.fixture
async def s3(settings: NovaSettings) -> AsyncIterator[S3Client]:
    async with session().client("s3", **client_kwargs(settings)) as client:
        yield client


@pytest.fixture
def storage(s3: S3Client, settings: NovaSettings) -> S3AudioStorage:
    return S3AudioStorage(s3, settings.audio_bucket)


@pytest.fixture
def read_back(s3: S3Client, settings: NovaSettings) -> ReadBack:
    async def read(key: str) -> bytes | None:
        try:
            found = await s3.get_object(Bucket=settings.audio_bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                return None
            raise
        async with found["Body"] as body:
            return await body.read()

    return read


class TestS3AudioStorage(AudioStorageContract):
    async def test_a_large_object_goes_up_in_parts(
        self,
        storage: S3AudioStorage,
        s3: S3Client,
        settings: NovaSettings,
        large_body: tuple[BinaryIO, str],
    ) -> None:
        key = new_key()

        await storage.put(key, large_body[0], LARGE_SIZE, "audio/flac")

        found = await s3.head_object(Bucket=settings.audio_bucket, Key=key)
        # A multipart upload's ETag is "<md5 of the part md5s>-<part count>".
        assert found["ETag"].strip('"').endswith("-2")

    async def test_a_missing_bucket_is_a_storage_error(self, s3: S3Client) -> None:
        missing = S3AudioStorage(s3, "nova-no-such-bucket-" + new_key()[6:14])

        with pytest.raises(AudioStorageError, match="nova-init"):
            await missing.put(new_key(), io.BytesIO(b"audio"), 5, "audio/wav")
        with pytest.raises(AudioStorageError, match="NoSuchBucket"):
            await missing.delete(new_key())
