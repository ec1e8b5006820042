"""The real Whisper base model on real (synthetic) speech."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from nova_transcriber.adapters.whisper import (
    MODEL_SHA256,
    WhisperGateway,
    assemble_model,
    load_model,
)

from ..backends import ROOT
from ..speech import PANGRAM, spoken_wav, words_found

pytestmark = pytest.mark.integration

MODEL_DIR = ROOT / ".nova" / "models" / "whisper-base"


class LocalFiles:
    def __init__(self, path: Path) -> None:
        self.path = path

    @asynccontextmanager
    async def download(self, key: str) -> AsyncIterator[Path]:
        yield self.path


@pytest.fixture(scope="module")
def model() -> Any:
    started = time.monotonic()
    loaded = load_model(MODEL_DIR)
    seconds = time.monotonic() - started
    print(f"\nwhisper base: assembled/checked and loaded in {seconds:.2f} s")  # noqa: T201
    return loaded


def test_assembled_model_is_checked_and_reused(model: Any) -> None:
    assert assemble_model(MODEL_DIR) == MODEL_DIR
    assert (MODEL_DIR / "model.bin").stat().st_size == 94_371_840 + 50_845_767
    assert len(MODEL_SHA256) == 64


@pytest.mark.parametrize("language", ["en-US", "auto"])
async def test_whisper_transcribes_espeak_english(
    model: Any, tmp_path: Path, language: str
) -> None:
    path = tmp_path / "fox.wav"
    path.write_bytes(spoken_wav(PANGRAM))
    gateway = WhisperGateway(model, LocalFiles(path), max_duration_s=60)

    started = time.monotonic()
    transcript = await gateway.transcribe("audio/u/fox.wav", language, False)
    print(  # noqa: T201
        f"\n{language}: {transcript.duration_s} s of speech in "
        f"{time.monotonic() - started:.2f} s: {transcript.text!r}"
    )

    assert words_found(PANGRAM, transcript.text) >= 0.7, transcript.text
    assert transcript.language == "en-US"
    assert 0 < transcript.confidence <= 1
    assert transcript.segments
    assert all(0 <= s.start <= s.end for s in transcript.segments)
