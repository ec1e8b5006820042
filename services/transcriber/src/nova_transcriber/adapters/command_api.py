"""Submits results to command-api over HTTP (httpx).

`POST /commands/audio/{id}/transcription-result` with a bearer token of scope
`service:transcriber`. A connection error, a timeout, a 429 or a 5xx is
retried here a few times with backoff, then raised as
`CommandApiUnavailableError`, which the consume loop treats as transient (its
`retriable` flag): the batch is rewound and nothing is committed. A 409
`invalid-state` or `stale-attempt` means the result no longer applies (a
duplicate delivery, or a newer attempt): done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID, uuid5

import httpx

from nova_platform.auth.dev_token import issue
from nova_platform.tracing import current_traceparent

from ..application.ports import Completed, Result, ResultRejectedError

logger = logging.getLogger(__name__)

SERVICE_USER = uuid5(UUID("6f1c7a52-3b8e-4f0e-9a37-1f0c2d5e8b41"), "nova-transcriber")
"""The subject of development tokens minted by the transcriber."""
SCOPE = "service:transcriber"
_DONE = frozenset({"invalid-state", "stale-attempt"})


class CommandApiUnavailableError(Exception):
    """command-api could not take the result now; retrying later may work."""

    retriable = True  # read by nova_platform.batches.is_transient


def dev_token_provider(secret: str) -> Callable[[], str]:
    """Mints a fresh short-lived development token for every request."""
    return lambda: issue(SERVICE_USER, SCOPE, secret, ttl_s=300)


def body(result: Result) -> dict[str, Any]:
    """The JSON body command-api's `TranscriptionResult` expects."""
    if isinstance(result, Completed):
        t = result.transcript
        return {
            "outcome": "completed",
            "attempt": result.attempt,
            "text": t.text,
            "confidence": t.confidence,
            "language": t.language,
            "segments": [
                {
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "confidence": s.confidence,
                    "language": s.language,
                }
                for s in t.segments
            ],
        }
    return {
        "outcome": "failed",
        "attempt": result.attempt,
        "reason": result.reason,
        "retryable": result.retryable,
    }


class HttpCommandApi:
    """`ResultSink` over command-api's HTTP API."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        token: Callable[[], str],
        *,
        tries: int = 4,
        first_backoff_s: float = 0.5,
    ) -> None:
        self._client = client
        self._token = token
        self._tries = tries
        self._first_backoff_s = first_backoff_s

    async def submit(self, audio_id: UUID, result: Result) -> bool:
        path = f"/commands/audio/{audio_id}/transcription-result"
        payload = body(result)
        problem = ""
        for attempt in range(1, self._tries + 1):
            if attempt > 1:
                await asyncio.sleep(self._first_backoff_s * 2 ** (attempt - 2))
            try:
                response = await self._client.post(
                    path,
                    json=payload,
                    headers=_headers(self._token()),
                )
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            status = response.status_code
            if status in (200, 201):
                return True
            kind, detail = _problem(response)
            if status == 409 and kind in _DONE:
                logger.info(
                    "command-api: the result no longer applies",
                    extra={"audio_id": str(audio_id), "kind": kind, "detail": detail},
                )
                return False
            if status in (404, 410):  # 410: its owner was erased meanwhile
                logger.warning(
                    "command-api does not know the audio; dropping its result",
                    extra={"audio_id": str(audio_id), "detail": detail},
                )
                return False
            if status in (401, 403):
                # Every result would fail alike: keep the requests until fixed.
                raise CommandApiUnavailableError(
                    f"command-api refused the transcriber's token ({status} {kind}: "
                    f"{detail}); set NOVA_TRANSCRIBER_TOKEN to a token with scope "
                    f"`{SCOPE}`, or NOVA_JWT_SECRET to command-api's secret"
                )
            if status in (409, 429) or status >= 500:  # 409: concurrent-write
                problem = f"{status} {kind}: {detail}"
                continue
            raise ResultRejectedError(status, kind, detail)
        raise CommandApiUnavailableError(
            f"command-api did not take the result after {self._tries} tries "
            f"({problem}); is it running at {self._client.base_url}?"
        )


def _problem(response: httpx.Response) -> tuple[str, str]:
    try:
        document = response.json()
    except ValueError:
        return "", response.text[:300]
    if not isinstance(document, dict):
        return "", response.text[:300]
    kind = str(document.get("type", "")).rsplit("/", 1)[-1]
    return kind, str(document.get("detail", ""))[:1000]


def _headers(token: str) -> dict[str, str]:
    """The bearer token, and the trace context so the result's events
    continue the trace of the request being answered."""
    headers = {"Authorization": f"Bearer {token}"}
    traceparent = current_traceparent()
    if traceparent:
        headers["traceparent"] = traceparent
    return headers
