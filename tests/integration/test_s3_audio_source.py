"""The transcriber's S3 download against moto (the local stack)."""

from __future__ import annotations

import io

import pytest

from nova_platform.aws import client_kwargs, session
from nova_platform.settings import NovaSettings
from nova_transcriber.adapters.s3_audio import CHUNK, S3AudioSource
from nova_transcriber.application.ports import TranscriptionFailedError

pytestmark = pytest.mark.integration


async def test_downloads_the_object_and_fails_readably_when_missing(
    settings: NovaSettings,
) -> None:
    content = bytes(range(256)) * (CHUNK // 256 + 7)  # more than one chunk
    async with session().client("s3", **client_kwargs(settings)) as s3:
        await s3.upload_fileobj(io.BytesIO(content), settings.audio_bucket, "t/a.bin")
        source = S3AudioSource(s3, settings.audio_bucket)
        async with source.download("t/a.bin") as path:
            assert path.read_bytes() == content
        assert not path.exists()

        with pytest.raises(TranscriptionFailedError, match="not in storage"):
            async with source.download("t/missing.bin"):
                pass
