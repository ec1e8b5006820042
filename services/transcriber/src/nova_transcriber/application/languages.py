"""Language codes: the seed's (`ja-JP`, `en-US`, `auto`) and each engine's.

Nova's events carry BCP-47 codes with a region, as Amazon Transcribe uses
them. Whisper knows only the language (`ja`, `en`); what it detects is given a
region back from `REGIONS` (the most common one), or stays `auto` when Nova
has no region for it.
"""

from __future__ import annotations

import re

AUTO = "auto"

REGIONS: dict[str, str] = {
    "ar": "ar-SA",
    "cs": "cs-CZ",
    "da": "da-DK",
    "de": "de-DE",
    "el": "el-GR",
    "en": "en-US",
    "es": "es-ES",
    "fa": "fa-IR",
    "fi": "fi-FI",
    "fr": "fr-FR",
    "he": "he-IL",
    "hi": "hi-IN",
    "id": "id-ID",
    "it": "it-IT",
    "ja": "ja-JP",
    "ko": "ko-KR",
    "ms": "ms-MY",
    "nl": "nl-NL",
    "no": "no-NO",
    "pl": "pl-PL",
    "pt": "pt-BR",
    "ro": "ro-RO",
    "ru": "ru-RU",
    "sv": "sv-SE",
    "th": "th-TH",
    "tr": "tr-TR",
    "uk": "uk-UA",
    "vi": "vi-VN",
    "zh": "zh-CN",
}
"""Whisper language -> the seed code Nova records for it when detected."""

_SEED = re.compile(r"^([a-z]{2,3})-[A-Z]{2}$")


def to_whisper(language: str) -> str | None:
    """`ja-JP` -> `ja`; `auto` -> None (Whisper then detects the language).

    Raises ValueError for a code that is neither `auto` nor `xx-YY`.
    """
    if language == AUTO:
        return None
    found = _SEED.match(language)
    if found is None:
        raise ValueError(
            f"language {language!r} is not a code like `ja-JP` or `en-US`, nor `auto`"
        )
    return found.group(1)


def from_whisper(detected: str, requested: str) -> str:
    """The seed code to record for Whisper's `detected` language.

    The requested code when it names that language (`en-GB` stays `en-GB`),
    else the usual region for it, else `auto`.
    """
    if requested != AUTO and requested.split("-", 1)[0] == detected:
        return requested
    return REGIONS.get(detected, AUTO)


def to_aws(language: str) -> str | None:
    """Amazon Transcribe takes the seed codes as they are; `auto` -> None."""
    if language == AUTO:
        return None
    if _SEED.match(language) is None:
        raise ValueError(
            f"language {language!r} is not a code like `ja-JP` or `en-US`, nor `auto`"
        )
    return language
