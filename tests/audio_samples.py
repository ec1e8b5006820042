"""Real audio made on the spot: a sine tone as 16-bit mono WAV."""

from __future__ import annotations

import io
import math
import struct
import wave


def sine_wav(seconds: float = 1.0, rate: int = 16_000, hz: float = 440.0) -> bytes:
    frames = int(seconds * rate)
    samples = (
        int(12_000 * math.sin(2 * math.pi * hz * i / rate)) for i in range(frames)
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()
