"""Opaque, signed page cursors: base64url(JSON) + "." + base64url(HMAC-SHA256).

A cursor is bound to a *scope* (which listing or search, for whom), so a cursor
copied from another user's listing, another query, or edited by hand is
refused as `InvalidCursorError`, never trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

MAX_CURSOR_CHARS = 4096
"""The cursors this API issues are far shorter; longer ones are not decoded."""


class InvalidCursorError(ValueError):
    """The cursor was not issued by this API for this query."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs and checks cursors with one HMAC key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a cursor key must not be empty")
        self._key = key

    def _sign(self, scope: str, body: bytes) -> bytes:
        return hmac.new(
            self._key, scope.encode() + b"\x00" + body, hashlib.sha256
        ).digest()

    def encode(self, scope: str, position: dict[str, Any]) -> str:
        """A cursor for `position` that only `decode(scope, ...)` accepts."""
        body = json.dumps(position, separators=(",", ":"), sort_keys=True).encode()
        return f"{_b64(body)}.{_b64(self._sign(scope, body))}"

    def decode(self, scope: str, cursor: str) -> dict[str, Any]:
        """The position in `cursor`; raises InvalidCursorError if it is not ours."""
        if len(cursor) > MAX_CURSOR_CHARS:
            raise InvalidCursorError(
                f"the cursor has {len(cursor)} characters, more than any this API "
                f"issues ({MAX_CURSOR_CHARS})"
            )
        body_text, dot, signature_text = cursor.partition(".")
        if not dot:
            raise InvalidCursorError("the cursor is malformed")
        try:
            body = _unb64(body_text)
            signature = _unb64(signature_text)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCursorError("the cursor is malformed") from exc
        if not hmac.compare_digest(signature, self._sign(scope, body)):
            raise InvalidCursorError(
                "the cursor was not issued for this query (or was altered)"
            )
        try:
            position = json.loads(body)
        except ValueError as exc:  # pragma: no cover - we signed valid JSON
            raise InvalidCursorError("the cursor is malformed") from exc
        if not isinstance(position, dict):
            raise InvalidCursorError("the cursor is malformed")
        return position
