"""Audio probing with mutagen: which format an upload is and how long it plays.

mutagen reads container headers and seeks; it never loads the samples, so a
large upload costs a few small reads, not its size in memory. It is still
blocking file I/O and parsing: call `probe_audio` from a worker thread
(`anyio.to_thread.run_sync`) in async code.

Accepted, with the content type stored for each:

| format | `AudioInfo.format` | content type |
| --- | --- | --- |
| WAV (RIFF/WAVE) | wav | audio/wav |
| MP3 | mp3 | audio/mpeg |
| Ogg Vorbis, Ogg Opus | ogg | audio/ogg |
| FLAC | flac | audio/flac |
| MP4/M4A with an audio track (AAC, ALAC) | m4a | audio/mp4 |
| raw AAC (ADTS or ADIF) | aac | audio/aac |

WebM/Matroska (what browsers' MediaRecorder often produces) is refused:
mutagen has no reader for it, so its length cannot be checked.
"""

from __future__ import annotations

import math
import os
import struct
from typing import BinaryIO

import mutagen
from mutagen import FileType, MutagenError
from mutagen.aac import AAC
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from ..application.storage import AudioInfo, NotAudioError

# ADTS frames start with a 12-bit sync word, then MPEG version, layer 0 and
# the CRC flag: 0xFFF0, 0xFFF1, 0xFFF8 or 0xFFF9.
_ADTS_SYNC = (b"\xff\xf0", b"\xff\xf1", b"\xff\xf8", b"\xff\xf9")


class _AAC(AAC):
    """mutagen's AAC, also recognised by an ADTS sync word, not only by name.

    mutagen scores raw ADTS streams by a `.aac` file name alone, and uploads
    arrive without one.
    """

    @staticmethod
    def score(filename: str, fileobj: BinaryIO, header: bytes) -> int:
        by_name: int = AAC.score(filename, fileobj, header)  # type: ignore[no-untyped-call]
        return by_name + 2 * header.startswith(_ADTS_SYNC)


_FORMATS: dict[type[FileType], tuple[str, str]] = {
    WAVE: ("wav", "audio/wav"),
    MP3: ("mp3", "audio/mpeg"),
    OggVorbis: ("ogg", "audio/ogg"),
    OggOpus: ("ogg", "audio/ogg"),
    FLAC: ("flac", "audio/flac"),
    MP4: ("m4a", "audio/mp4"),
    _AAC: ("aac", "audio/aac"),
}

# What a malformed file can make mutagen's parsers raise besides MutagenError:
# short reads surface as struct, EOF, index and value errors, bad sizes as
# arithmetic ones.
_PARSE_ERRORS = (
    MutagenError,
    struct.error,
    EOFError,
    ValueError,
    LookupError,
    ArithmeticError,
)


def probe_audio(file: BinaryIO) -> AudioInfo:
    """The format, canonical content type and duration of the audio in `file`.

    `file` must be seekable; it is read from its start and left rewound.
    Raises `NotAudioError` if it is empty, not one of the formats above,
    malformed, or plays for no time at all.
    """
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(0)
    if size == 0:
        raise NotAudioError("the file is empty")
    try:
        found: FileType | None = mutagen.File(file, options=list(_FORMATS))
    except _PARSE_ERRORS as exc:
        why = str(exc) or type(exc).__name__
        raise NotAudioError(f"it could not be parsed ({why})") from exc
    finally:
        file.seek(0)
    if found is None:
        raise NotAudioError("its format is not one Nova reads")
    audio_format, content_type = _FORMATS[type(found)]
    length = getattr(found.info, "length", 0.0)
    duration = float(length) if isinstance(length, int | float) else 0.0
    if not math.isfinite(duration) or duration <= 0:
        raise NotAudioError(f"the {audio_format} file holds no audio (length 0 s)")
    if isinstance(found, WAVE):
        # mutagen takes a WAV's length from its header; a cut-off upload keeps
        # the header of the whole recording.
        bitrate = getattr(found.info, "bitrate", 0)
        held = size * 8 / bitrate if bitrate else math.inf
        if duration > held + 0.01:
            raise NotAudioError(
                f"the wav file is cut off: its header promises {duration:.2f} s "
                f"but it holds at most {held:.2f} s; upload the whole file"
            )
    return AudioInfo(
        content_type=content_type, duration_s=duration, format=audio_format
    )
