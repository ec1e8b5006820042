"""Runs a command at most once per `Idempotency-Key` and replays its answer."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID, uuid4

from fastapi import Response

from nova_platform.http.problems import Problem

from ..application.idempotency import (
    IdempotencyRecord,
    IdempotencyStore,
    Lease,
    RecordedResponse,
)
from .problems import as_problem

logger = logging.getLogger(__name__)

KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"
"""What an `Idempotency-Key` may be, matched whole (as in the OpenAPI document)."""
_KEY = re.compile(KEY_PATTERN)
_REPLAYED_HEADERS = ("location", "etag", "content-type")
# Answers that depend on a moment, not on the request: a retry should run again.
# So do 5xx answers (a backend was unavailable).
_NOT_RECORDED = {409, 412, 429}
# Longer than any request takes (an upload of the largest file to S3 included):
# a claim still running past it may be taken over by a retry.
LEASE_S = 60.0
_POLL_S = 0.05


def fingerprint(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\x00")
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise Problem(
            "Idempotency-Key must be 1 to 255 visible ASCII characters, e.g. a UUID",
            status=400,
            kind="invalid-idempotency-key",
            title="Invalid Idempotency-Key",
        )
    return key


@dataclass(frozen=True, slots=True)
class CommandRun:
    """One run of a command: the id its events carry, and whether it resumes.

    `resumed` is True when this run took over from one that stopped without an
    answer; that run may have committed already under the same `command_id`.
    """

    command_id: str
    resumed: bool = False


def _recorded(response: Response) -> RecordedResponse:
    return RecordedResponse(
        status=response.status_code,
        body=bytes(response.body),
        headers={k: v for k, v in response.headers.items() if k in _REPLAYED_HEADERS},
    )


def _replayed(recorded: RecordedResponse) -> Response:
    logger.info("idempotent replay", extra={"status": recorded.status})
    headers = dict(recorded.headers)
    headers["Idempotent-Replayed"] = "true"
    return Response(recorded.body, status_code=recorded.status, headers=headers)


def _reused() -> Problem:
    return Problem(
        "this Idempotency-Key was used for a different request; use a "
        "new key for a new request",
        status=422,
        kind="idempotency-key-reused",
        title="Idempotency-Key reused",
    )


class IdempotentRunner:
    """Runs a command once per (user, `Idempotency-Key`) and replays its answer.

    A claim holds the key for `lease_s`, which must be longer than any request
    takes: once it runs out without an answer, a retry takes the claim over.
    """

    def __init__(
        self,
        store: IdempotencyStore,
        wait_s: float = 10.0,
        lease_s: float = LEASE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._wait_s = wait_s
        self._lease_s = lease_s
        self._clock = clock

    async def run(
        self,
        user_id: UUID,
        key: str | None,
        request_fingerprint: str,
        command: Callable[[], Awaitable[Response]],
    ) -> Response:
        """`run_command` for a command that appends no events."""
        return await self.run_command(
            user_id, key, request_fingerprint, lambda _: command()
        )

    async def run_command(
        self,
        user_id: UUID,
        key: str | None,
        request_fingerprint: str,
        command: Callable[[CommandRun], Awaitable[Response]],
    ) -> Response:
        if key is None:
            return await command(CommandRun(str(uuid4())))
        scoped = f"{user_id}#{check_key(key)}"
        deadline = time.monotonic() + self._wait_s
        while True:
            claimed = await self._store.claim(
                scoped, request_fingerprint, self._lease_s
            )
            if isinstance(claimed, Lease):
                return await self._execute(scoped, claimed, command)
            if claimed.fingerprint != request_fingerprint:
                raise _reused()
            if claimed.response is not None:
                return _replayed(claimed.response)
            recorded = await self._await_answer(
                scoped, request_fingerprint, claimed, deadline
            )
            if recorded is not None:
                return _replayed(recorded)
            # The claimant's lease ran out without an answer: claim it again.

    async def _execute(
        self,
        scoped: str,
        lease: Lease,
        command: Callable[[CommandRun], Awaitable[Response]],
    ) -> Response:
        if lease.taken_over:
            logger.warning(
                "idempotency claim taken over after its lease ran out",
                extra={"command_id": lease.command_id},
            )
        try:
            response = await command(CommandRun(lease.command_id, lease.taken_over))
        except Exception as exc:
            problem = as_problem(exc)
            if (
                problem is None
                or problem.status in _NOT_RECORDED
                or problem.status >= 500
            ):
                await self._store.release(scoped, lease)
                raise
            response = problem.response()
        if not await self._store.complete(scoped, lease, _recorded(response)):
            logger.warning(
                "idempotency claim was taken over while this run was running; "
                "the run that took it over records its own answer",
                extra={"command_id": lease.command_id},
            )
        return response

    async def _await_answer(
        self,
        scoped: str,
        request_fingerprint: str,
        record: IdempotencyRecord,
        deadline: float,
    ) -> RecordedResponse | None:
        """The claimant's answer once recorded; None once its lease runs out."""
        while record.response is None:
            if time.monotonic() > deadline:
                raise Problem(
                    "a request with this Idempotency-Key is still running; retry "
                    "in a moment with the same key",
                    status=409,
                    kind="idempotency-key-in-use",
                    title="Request in progress",
                    retry_after_s=1,
                )
            await asyncio.sleep(_POLL_S)
            found = await self._store.get(scoped)
            if found is None:
                raise Problem(
                    "the first request with this Idempotency-Key failed; send it again",
                    status=409,
                    kind="idempotency-key-released",
                    title="First attempt failed",
                )
            if found.fingerprint != request_fingerprint:
                raise _reused()
            if found.response is None and found.lease_expires_at <= self._clock():
                return None
            record = found
        return record.response
