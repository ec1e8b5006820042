"""Webhook signatures: how Nova signs a delivery and how a receiver checks it.

Every delivery carries these headers::

    Nova-Event-Id: <event id; the payload's "id">
    Nova-Event-Type: <public type; the payload's "type">
    Nova-Timestamp: <Unix time in whole seconds when the attempt was signed>
    Nova-Signature: v1=<hex HMAC-SHA256 of b"<timestamp>." + body, keyed by the
                    subscription's secret (UTF-8)>

`Nova-Signature` may hold several comma-separated ``v1=`` values (for example
while a secret is being rotated); one matching value is enough. Each retry is
signed afresh with its own timestamp, so a receiver can refuse anything older
than its tolerance.

`verify` uses only the standard library: receivers may copy this module.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

EVENT_ID_HEADER = "Nova-Event-Id"
EVENT_TYPE_HEADER = "Nova-Event-Type"
TIMESTAMP_HEADER = "Nova-Timestamp"
SIGNATURE_HEADER = "Nova-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A delivery whose signature is missing, wrong, or outside the tolerance."""


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``b"<timestamp>." + body`` keyed by `secret`."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signed_headers(
    *, event_id: str, event_type: str, body: bytes, secret: str, timestamp: int
) -> dict[str, str]:
    """The headers of one delivery attempt of `body`, signed at `timestamp`."""
    return {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: f"{SCHEME}={signature(body, secret, timestamp)}",
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    raise SignatureError(f"missing {name} header")


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> None:
    """Check a received delivery; raise `SignatureError` unless it is genuine.

    `headers` are the request's (names in any case), `body` its raw bytes as
    received (before any JSON parsing), `now` the receiver's Unix time in
    seconds. A timestamp further than `tolerance_s` from `now`, in either
    direction, is refused as a possible replay. Signatures are compared in
    constant time.
    """
    raw_timestamp = _header(headers, TIMESTAMP_HEADER).strip()
    if not raw_timestamp.isascii() or not raw_timestamp.isdigit():
        raise SignatureError(f"{TIMESTAMP_HEADER} is not a Unix time in seconds")
    timestamp = int(raw_timestamp)
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(
            f"{TIMESTAMP_HEADER} is {now - timestamp:.0f} s away from now, "
            f"beyond the {tolerance_s:g} s tolerance"
        )
    expected = signature(body, secret, timestamp)
    candidates = [
        part.strip()[len(SCHEME) + 1 :]
        for part in _header(headers, SIGNATURE_HEADER).split(",")
        if part.strip().startswith(f"{SCHEME}=")
    ]
    if not candidates:
        raise SignatureError(f"{SIGNATURE_HEADER} holds no {SCHEME}= signature")
    matched = False
    for candidate in candidates:
        # compare_digest on bytes: str arguments must be ASCII or it raises.
        matched |= hmac.compare_digest(
            candidate.encode("utf-8"), expected.encode("ascii")
        )
    if not matched:
        raise SignatureError("signature does not match the body and secret")
