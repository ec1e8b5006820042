"""Webhooks end to end: commands -> relay -> Kafka -> integration -> a receiver.

The receiver is a real HTTP server on loopback that verifies every signature
and deduplicates on the event id (`tests/webhook_receiver.py`). One endpoint
fails its first requests on purpose, one never answers until it is "fixed",
and one belongs to another user. The integration service is SIGKILLed and
started again in the middle, so what it stored before the kill must still go
out, once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from nova_platform.auth.dev_token import issue
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from ..audio_samples import sine_wav
from ..backends import Backends
from ..conftest import JWT_SECRET
from ..service_processes import (
    BIN,
    RunningService,
    running_services,
    start_services,
    wait_healthy,
)
from ..waiting import eventually
from ..webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.e2e

WANTED = ("command-api", "relay", "integration")
AUDIOS = 3
EVENTS_PER_AUDIO = 3  # created, processing started, deleted


@pytest.fixture
async def own_settings(settings: NovaSettings) -> NovaSettings:
    mine = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "w"}
    )
    await ensure_all(mine)
    return mine


@pytest.fixture
def env(own_settings: NovaSettings, backends: Backends) -> dict[str, str]:
    return {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": own_settings.resource_suffix,
        "NOVA_JWT_SECRET": JWT_SECRET,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
        "NOVA_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the receiver is on loopback
        "NOVA_WEBHOOK_MAX_ATTEMPTS": "5",
        "NOVA_WEBHOOK_BASE_DELAY_S": "0.2",
        "NOVA_WEBHOOK_MAX_DELAY_S": "1",
        "NOVA_WEBHOOK_TIMEOUT_S": "1",
        "NOVA_WEBHOOK_POLL_INTERVAL_S": "0.5",
    }


@pytest.fixture
def pipeline(
    request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path
) -> Iterator[dict[str, RunningService]]:
    # The test puts a service it restarts in place of the one it killed.
    with running_services(request, env, tmp_path, WANTED) as running:
        yield running


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    found = WebhookReceiver()
    await found.start()
    yield found
    await found.stop()


def bearer(user: UUID, scopes: str = "audio:read audio:write") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue(user, scopes, JWT_SECRET)}"}


async def subscribe(
    http: httpx.AsyncClient, base: str, user: UUID, url: str
) -> tuple[str, str]:
    answer = await http.post(
        f"{base}/commands/webhooks",
        json={"url": url, "event_types": ["*"]},
        headers=bearer(user),
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return body["subscription_id"], body["secret"]


async def audio_history(http: httpx.AsyncClient, base: str, user: UUID) -> str:
    """Create, start transcribing and delete one audio: three events."""
    created = await http.post(
        f"{base}/commands/audio",
        files={"file": ("a.wav", sine_wav(0.2), "audio/wav")},
        headers=bearer(user),
    )
    assert created.status_code == 201, created.text
    audio_id: str = created.json()["audio_id"]
    started = await http.post(
        f"{base}/commands/audio/{audio_id}/transcribe", headers=bearer(user)
    )
    assert started.status_code == 202, started.text
    deleted = await http.delete(
        f"{base}/commands/audio/{audio_id}", headers=bearer(user)
    )
    assert deleted.status_code == 200, deleted.text
    return audio_id


async def deliveries(
    http: httpx.AsyncClient, base: str, user: UUID, sid: str, status: str
) -> list[dict[str, Any]]:
    answer = await http.get(
        f"{base}/commands/webhooks/{sid}/deliveries",
        params={"status": status, "limit": 100},
        headers=bearer(user),
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


async def test_webhooks_arrive_once_in_order_signed_and_parked_ones_can_be_resent(
    pipeline: dict[str, RunningService],
    receiver: WebhookReceiver,
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    base = pipeline["command-api"].url
    alice, bob = uuid4(), uuid4()
    async with httpx.AsyncClient(timeout=15) as http:
        # Secrets are made by Nova; the receiver learns them from the answer.
        flaky_url = receiver.endpoint("flaky", "")
        flaky, flaky_secret = await subscribe(http, base, alice, flaky_url)
        receiver.endpoints["flaky"].secret = flaky_secret
        receiver.endpoints["flaky"].fail_first = 3  # then accepts
        dead_url = receiver.endpoint("dead", "", hang=True)
        dead, dead_secret = await subscribe(http, base, alice, dead_url)
        receiver.endpoints["dead"].secret = dead_secret
        other_url = receiver.endpoint("bobs", "")
        bobs, bobs_secret = await subscribe(http, base, bob, other_url)
        receiver.endpoints["bobs"].secret = bobs_secret

        alices = [await audio_history(http, base, alice)]
        bobs_audio = await audio_history(http, base, bob)

        # Kill the integration service once it has work in flight, start a
        # fresh one: what was stored before the kill still goes out, once.
        await eventually(
            lambda: _at_least(receiver.endpoints["flaky"].requests, 1),
            timeout=60,
            what="the first webhook request",
        )
        integration = pipeline["integration"]
        integration.process.kill()
        integration.process.wait()
        integration.stop()  # closes its log
        alices += [await audio_history(http, base, alice) for _ in range(AUDIOS - 1)]
        (restarted,) = start_services(
            BIN,
            env,
            tmp_path / "again",
            {"integration": integration.port},
            (integration.service,),
        )
        pipeline["integration"] = restarted
        # In a thread: the receiver shares this event loop and must go on answering.
        await asyncio.to_thread(wait_healthy, [restarted], 60)

        expected = AUDIOS * EVENTS_PER_AUDIO
        await eventually(
            lambda: _at_least(len(receiver.endpoints["flaky"].accepted), expected),
            timeout=90,
            what=f"{expected} events at the flaky endpoint",
        )

        # The dead endpoint: each audio's first delivery is parked after its
        # attempts, and the ones behind it are parked with it, in order.
        async def all_parked() -> list[dict[str, Any]] | None:
            parked = await deliveries(http, base, alice, dead, "parked")
            return parked if len(parked) == expected else None

        parked = await eventually(all_parked, timeout=90, what="parked deliveries")
        heads = [p for p in parked if p["sequence"] == 1]
        assert len(heads) == AUDIOS
        for head in heads:
            assert head["attempts_used"] == 5
            assert [a["response_code"] for a in head["attempts"]] == [None] * 5
            assert "gave up after 5 attempts" in head["parked_reason"]
        assert receiver.endpoints["dead"].accepted == {}

        # Fixed; re-send each audio's first parked delivery: the lane follows.
        receiver.endpoints["dead"].hang = False
        for head in heads:
            resent = await http.post(
                f"{base}/commands/webhooks/{dead}/deliveries/"
                f"{head['audio_id']}/{head['sequence']}/resend",
                headers=bearer(alice),
            )
            assert resent.status_code == 202, resent.text
            assert len(resent.json()["requeued"]) == EVENTS_PER_AUDIO
        await eventually(
            lambda: _at_least(len(receiver.endpoints["dead"].accepted), expected),
            timeout=60,
            what="the re-sent deliveries",
        )
        delivered = await deliveries(http, base, alice, flaky, "delivered")
        assert len(delivered) == expected
        await eventually(
            lambda: _at_least(len(receiver.endpoints["bobs"].accepted), 3),
            what="bob's events",
        )
        metrics = (await http.get(f"{restarted.url}/metrics")).text

    for name in ("flaky", "dead"):
        endpoint = receiver.endpoints[name]
        assert endpoint.bad_signatures == 0
        assert {p["audio_id"] for p in endpoint.order} == set(alices)
        for audio_id in alices:
            assert receiver.sequences(name, audio_id) == [1, 2, 3]
            types = [p["type"] for p in endpoint.order if p["audio_id"] == audio_id]
            assert types == [
                "audio.created",
                "audio.processing.started",
                "audio.deleted",
            ]
    # A user's subscription only ever receives that user's events, signed
    # with that subscription's own secret.
    bobs_endpoint = receiver.endpoints["bobs"]
    assert bobs_endpoint.bad_signatures == 0
    assert bobs_endpoint.requests >= EVENTS_PER_AUDIO
    assert {p["audio_id"] for p in bobs_endpoint.order} == {bobs_audio}
    assert receiver.sequences("bobs", bobs_audio) == [1, 2, 3]
    # The 503s were retried and recorded: some delivery took more than one try.
    assert receiver.endpoints["flaky"].requests >= expected + 3
    assert any(len(d["attempts"]) > 1 for d in delivered)
    # Nothing reached the dead endpoint twice. (The flaky one may see a repeat:
    # a kill between its answer and the stored outcome sends that one again,
    # which its deduplication on the event id absorbs.)
    assert sum(receiver.endpoints["dead"].duplicates.values()) == 0
    for outcome in ("delivered", "parked"):
        assert f'nova_webhook_attempts_total{{outcome="{outcome}"}}' in metrics
    assert "nova_consumer_applied_events_total" in metrics

    # SIGTERM (what Kubernetes sends) with a webhook request in flight: the
    # service lets it end (here: its 1 s timeout), records it, and exits well
    # inside the pod's 30 s grace period.
    bobs_endpoint.hang = True
    asked = bobs_endpoint.requests
    async with httpx.AsyncClient(timeout=15) as http:
        hanging_audio = await audio_history(http, base, bob)
        await eventually(
            lambda: _at_least(bobs_endpoint.requests, asked + 1),
            timeout=30,
            what="a request to bob's hanging endpoint",
        )
        stopping = time.monotonic()
        restarted.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(restarted.process.wait, 30)
        took = time.monotonic() - stopping
        # uvicorn shuts down, then re-raises the signal as its exit status.
        assert code == -signal.SIGTERM, restarted.log_tail(20)
        assert "Application shutdown complete" in restarted.log_tail(5)
        assert took < 15
        waiting = await deliveries(http, base, bob, bobs, "pending")
    (head,) = [
        d for d in waiting if d["audio_id"] == hanging_audio and d["sequence"] == 1
    ]
    assert [a["response_code"] for a in head["attempts"]] == [None]


async def _at_least(value: int, wanted: int) -> bool | None:
    return True if value >= wanted else None
