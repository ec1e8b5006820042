from __future__ import annotations

import io
import math
import os
import shutil
import struct
import subprocess
import wave
from pathlib import Path

import pytest

from nova_command_api.adapters.audio_probe import probe_audio
from nova_command_api.application.storage import NotAudioError

RATE = 16_000
SECONDS = 1.5

needs_sox = pytest.mark.skipif(
    shutil.which("sox") is None, reason="sox is not installed (apt install sox)"
)


def sine_wav(frames: int = int(RATE * SECONDS)) -> bytes:
    """A mono 16-bit WAV of a 440 Hz sine, `frames` samples at 16 kHz."""
    samples = (
        int(12_000 * math.sin(2 * math.pi * 440 * i / RATE)) for i in range(frames)
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()


def adts_aac(frames: int) -> bytes:
    """Raw AAC-LC in ADTS frames at 16 kHz mono; silent payloads of 200 bytes."""
    length = 7 + 200
    header = bytes(
        [
            0xFF,
            0xF1,  # sync, MPEG-4, layer 0, no CRC
            0x60,  # AAC LC, 16 kHz, channel configuration high bit 0
            0x40 | length >> 11,  # channel configuration 1
            (length >> 3) & 0xFF,
            (length & 7) << 5 | 0x1F,  # buffer fullness 0x7FF (variable)
            0xFC,  # one raw data block
        ]
    )
    return (header + bytes(200)) * frames


def test_a_wav() -> None:
    info = probe_audio(io.BytesIO(sine_wav()))

    assert (info.format, info.content_type) == ("wav", "audio/wav")
    assert info.duration_s == pytest.approx(SECONDS, abs=0.01)


def test_leaves_the_file_rewound() -> None:
    file = io.BytesIO(sine_wav())
    file.seek(100)

    probe_audio(file)

    assert file.tell() == 0


def test_raw_aac_without_a_file_name() -> None:
    # 250 frames of 1024 samples at 16 kHz: 16 s.
    info = probe_audio(io.BytesIO(adts_aac(250)))

    assert (info.format, info.content_type) == ("aac", "audio/aac")
    assert info.duration_s == pytest.approx(16.0, abs=0.01)


class CountingReads(io.BytesIO):
    """A file that counts the bytes read from it."""

    bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_reads_headers_not_the_whole_file() -> None:
    minutes = 5
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(2 * RATE * 60 * minutes))
    file = CountingReads(buffer.getvalue())

    info = probe_audio(file)

    assert info.duration_s == pytest.approx(60 * minutes)
    assert file.bytes_read < 64 * 1024


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (os.urandom(64 * 1024), "format is not one Nova reads"),
        (b"", "empty"),
        (b"Hello, this is a transcript, not audio.\n" * 50, "not one Nova reads"),
        (sine_wav()[:20], "could not be parsed"),
        (sine_wav(frames=0), "holds no audio"),
        (sine_wav()[:1000], "cut off"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + os.urandom(4096), "could not be parsed"),
        (b"fLaC" + os.urandom(4096), "could not be parsed"),
    ],
    ids=[
        "random-bytes",
        "empty",
        "text",
        "wav-header-cut-at-20-bytes",
        "wav-without-frames",
        "wav-cut-short",
        "id3-tag-without-mp3",
        "flac-magic-without-flac",
    ],
)
def test_refuses(body: bytes, reason: str) -> None:
    with pytest.raises(NotAudioError, match=reason) as refused:
        probe_audio(io.BytesIO(body))

    assert "WAV, MP3, Ogg/Opus/Vorbis, FLAC, M4A/AAC" in str(refused.value)
    assert "send a recording in one of those formats" in str(refused.value)


@needs_sox
@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        ("flac", ("flac", "audio/flac")),
        ("ogg", ("ogg", "audio/ogg")),  # sox writes Ogg Vorbis
    ],
)
def test_converted_by_sox(
    tmp_path: Path, suffix: str, expected: tuple[str, str]
) -> None:
    source = tmp_path / "sine.wav"
    source.write_bytes(sine_wav())
    target = tmp_path / f"sine.{suffix}"
    subprocess.run(["sox", str(source), str(target)], check=True)

    with target.open("rb") as file:
        info = probe_audio(file)

    assert (info.format, info.content_type) == expected
    assert info.duration_s == pytest.approx(SECONDS, abs=0.01)
