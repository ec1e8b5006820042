"""Real speech made on the spot: espeak-ng speaks, sox makes it 16 kHz mono."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

PANGRAM = "the quick brown fox jumps over the lazy dog"


def spoken_wav(text: str = PANGRAM, voice: str = "en") -> bytes:
    """`text` spoken by espeak-ng as 16-bit 16 kHz mono WAV; skips without tools."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed: `make install` installs them "
            f"as root, else run `sudo apt-get install -y {' '.join(missing)}`"
        )
    with tempfile.TemporaryDirectory() as tmp:
        raw, out = Path(tmp) / "raw.wav", Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True)
        subprocess.run(
            ["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(out)],
            check=True,
        )
        return out.read_bytes()


def words_found(expected: str, transcript: str) -> float:
    """The share of `expected`'s words that occur in `transcript`."""
    heard = set(re.findall(r"[a-z']+", transcript.lower()))
    wanted = expected.lower().split()
    return sum(w in heard for w in wanted) / len(wanted)


def corrupt_flac(seconds: float = 2.0, rate: int = 16_000) -> bytes:
    """A FLAC header promising `seconds` of sound, then bytes that are no frames.

    It passes command-api's upload probe (which reads only the header) and
    decodes to nothing.
    """
    packed = (rate << 44) | (15 << 36) | int(seconds * rate)  # 1 channel, 16 bit
    info = struct.pack(">HH", 4096, 4096) + bytes(6) + packed.to_bytes(8, "big")
    info += bytes(16)  # no MD5
    header = b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info
    return header + b"\x13" * 5000
