"""The load generator: audio histories sent as commands, each with its own key.

Every command has one `Idempotency-Key`, sent on every attempt, and the same
value as `X-Correlation-Id`, so its events carry the key and the checker finds
them in the store whether or not the command was acknowledged. A command is
resent with its key after a transport error, a 5xx, a 429 or a 409 that says
"try again" (a claim in use or released, a concurrent write), until it is
acknowledged or its deadline passes. On top of that, some acknowledged
commands are sent again on purpose, and some creates are sent a second time
while the first is still running: every answer to one key must be the same.

The transcriber is not run: the load generator submits each audio's result
itself with the service scope, as the transcriber does, and that result is
the one command whose commit holds two events.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import httpx

from nova_events import (
    AudioCreated,
    AudioDeleted,
    AudioProcessingCompleted,
    AudioProcessingFailed,
    AudioProcessingStarted,
    TranscriptionCompleted,
)
from nova_platform.auth.dev_token import issue

from ..audio_samples import sine_wav

EXPECTED_EVENTS: dict[str, tuple[str, ...]] = {
    "create": (AudioCreated.event_type(),),
    "transcribe": (AudioProcessingStarted.event_type(),),
    "complete": (
        TranscriptionCompleted.event_type(),
        AudioProcessingCompleted.event_type(),
    ),
    "fail": (AudioProcessingFailed.event_type(),),
    "delete": (AudioDeleted.event_type(),),
}
"""The event types one commit of each kind of command appends, in order."""

RETRIED_CONFLICTS = (
    "idempotency-key-in-use",
    "idempotency-key-released",
    "concurrent-write",
)
COMMAND_DEADLINE_S = 150.0
"""Longer than an idempotency claim's 60 s lease plus a restart: a command
whose run was killed is taken over by a retry once the lease has run out."""
REQUEST_TIMEOUT_S = 20.0
RACE_DELAY_S = 0.0
"""How long after a create its racing copy goes out: at the same instant, so
both copies race for the claim's conditional put (the local stack's moto
answers one request at a time, as DynamoDB evaluates each condition atomically;
see deploy/local/moto_serialized.py)."""
TOKEN_TTL_S = 6 * 3600


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool


@dataclass
class Command:
    """One command and everything its attempts were answered."""

    key: str
    kind: str
    user_id: UUID
    audio_id: UUID | None
    """Known before sending for all but a create."""
    attempts: int = 0
    answers: list[Answer] = field(default_factory=list)
    last_failure: str = ""
    """What the latest unanswered attempt met (for an unacknowledged one)."""
    rejected: Answer | None = None
    """A 4xx that no retry can change: the command is refused, not lost."""
    acknowledged_at: float | None = None
    raced: bool = False
    """Sent a second time with its key while the first is still running."""

    @property
    def acknowledged(self) -> bool:
        return bool(self.answers)

    @property
    def first(self) -> Answer:
        return self.answers[0]


@dataclass
class LoadStats:
    transport_errors: int = 0
    retried_statuses: dict[int, int] = field(default_factory=dict)
    deliberate_retries: int = 0
    raced_creates: int = 0
    starts_skipped: int = 0
    """Histories not started because `max_in_flight` were under way."""


class LoadGenerator:
    """Sends audio histories to command-api, `rate` new ones a second."""

    def __init__(
        self,
        command_api: str,
        users: list[UUID],
        jwt_secret: str,
        *,
        rate: float = 4.0,
        max_in_flight: int = 64,
        seed: int = 0,
        retry_share: float = 0.3,
        race_share: float = 0.15,
    ) -> None:
        self._base = command_api
        self._users = users
        self._tokens = {
            user: issue(user, "audio:read audio:write", jwt_secret, TOKEN_TTL_S)
            for user in users
        }
        self._service_token = issue(
            uuid4(), "service:transcriber", jwt_secret, TOKEN_TTL_S
        )
        self._rate = rate
        self._max_in_flight = max_in_flight
        self._random = random.Random(seed)
        self._retry_share = retry_share
        self._race_share = race_share
        self._wav = sine_wav(0.1)
        self.commands: list[Command] = []
        self.stats = LoadStats()

    async def run(self, stop: asyncio.Event) -> None:
        """Start `rate` histories a second until `stop`; those under way finish.

        Starts do not wait for earlier histories: a command stuck behind a
        killed run's claim (up to its lease) holds up only its own history.
        """
        limits = httpx.Limits(max_connections=self._max_in_flight * 2)
        running: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
            while not stop.is_set():
                if len(running) < self._max_in_flight:
                    user = self._random.choice(self._users)
                    task = asyncio.create_task(self._history(http, stop, user))
                    running.add(task)
                    task.add_done_callback(running.discard)
                else:
                    self.stats.starts_skipped += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1 / self._rate)
            await asyncio.gather(*running)

    async def _history(
        self, http: httpx.AsyncClient, stop: asyncio.Event, user: UUID
    ) -> None:
        """create -> transcribe -> a transcript (or a failure) -> maybe delete."""
        created = self._command("create", user, None)
        created.raced = self._random.random() < self._race_share
        if created.raced:
            self.stats.raced_creates += 1
            await asyncio.gather(
                self._send(http, created), self._send(http, created, RACE_DELAY_S)
            )
        else:
            await self._send(http, created)
        if not created.acknowledged:
            return
        audio_id = UUID(created.first.body["audio_id"])
        plan = ["transcribe"]
        plan.append("complete" if self._random.random() < 0.85 else "fail")
        if self._random.random() < 0.3:
            plan.append("delete")
        for kind in plan:
            if stop.is_set():
                return
            command = self._command(kind, user, audio_id)
            await self._send(http, command)
            if not command.acknowledged:
                return

    def _command(self, kind: str, user: UUID, audio_id: UUID | None) -> Command:
        command = Command(f"faults-{kind}-{uuid4()}", kind, user, audio_id)
        self.commands.append(command)
        return command

    async def _send(
        self, http: httpx.AsyncClient, command: Command, after_s: float = 0.0
    ) -> None:
        """Send until acknowledged, refused or past the deadline; maybe again."""
        await asyncio.sleep(after_s)
        deadline = time.monotonic() + COMMAND_DEADLINE_S
        answer = await self._until_answered(http, command, deadline)
        if answer is None:
            return
        if command.acknowledged_at is None:
            command.acknowledged_at = time.monotonic()
        command.answers.append(answer)
        if self._random.random() < self._retry_share:
            self.stats.deliberate_retries += 1
            again = await self._until_answered(http, command, deadline)
            if again is not None:
                command.answers.append(again)

    async def _until_answered(
        self, http: httpx.AsyncClient, command: Command, deadline: float
    ) -> Answer | None:
        delay = 0.1
        while True:
            command.attempts += 1
            try:
                response = await self._request(http, command)
            except httpx.TransportError as exc:
                self.stats.transport_errors += 1
                command.last_failure = repr(exc)[:200]
            else:
                if response.is_success:
                    return Answer(
                        response.status_code,
                        response.json(),
                        response.headers.get("Idempotent-Replayed") == "true",
                    )
                if not _worth_retrying(response):
                    command.rejected = Answer(
                        response.status_code, _json(response), replayed=False
                    )
                    return None
                command.last_failure = f"{response.status_code} {response.text[:200]}"
                statuses = self.stats.retried_statuses
                statuses[response.status_code] = (
                    statuses.get(response.status_code, 0) + 1
                )
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(delay * (0.5 + self._random.random()))
            delay = min(delay * 2, 1.0)

    async def _request(
        self, http: httpx.AsyncClient, command: Command
    ) -> httpx.Response:
        base = self._base
        headers = {
            "Authorization": f"Bearer {self._tokens[command.user_id]}",
            "Idempotency-Key": command.key,
            "X-Correlation-Id": command.key,
        }
        audio = f"{base}/commands/audio/{command.audio_id}"
        if command.kind == "create":
            return await http.post(
                f"{base}/commands/audio",
                files={"file": ("tone.wav", self._wav, "audio/wav")},
                data={"title": "Fault test", "language": "en-US"},
                headers=headers,
            )
        if command.kind == "transcribe":
            return await http.post(
                f"{audio}/transcribe", json={"language": "en-US"}, headers=headers
            )
        if command.kind == "delete":
            return await http.delete(audio, headers=headers)
        headers["Authorization"] = f"Bearer {self._service_token}"
        result: dict[str, Any]
        if command.kind == "complete":
            text = f"transcript of {command.audio_id}"
            result = {
                "outcome": "completed",
                "attempt": 1,
                "text": text,
                "confidence": 0.9,
                "language": "en-US",
                "segments": [{"start": 0.0, "end": 0.1, "text": text}],
            }
        else:
            result = {
                "outcome": "failed",
                "attempt": 1,
                "reason": "fault test",
                "retryable": False,
            }
        return await http.post(
            f"{audio}/transcription-result", json=result, headers=headers
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"text": response.text[:500]}
    return body if isinstance(body, dict) else {"body": body}


def _worth_retrying(response: httpx.Response) -> bool:
    if response.status_code >= 500 or response.status_code == 429:
        return True
    if response.status_code != 409:
        return False
    kind = str(_json(response).get("type", "")).rsplit("/", 1)[-1]
    return kind in RETRIED_CONFLICTS
