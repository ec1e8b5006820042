"""EventBridge forwarding happens once per event, on the real DynamoDB API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import uuid4

import pytest

from nova_integration.adapters.forwarded_ledger import OnceForwarder
from nova_platform.aws import client_kwargs, session
from nova_platform.settings import NovaSettings

pytestmark = pytest.mark.integration


class Recording:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def forward(self, payloads: Sequence[dict[str, Any]]) -> None:
        if self.fail:
            raise ConnectionError("EventBridge unreachable")
        self.batches.append([p["id"] for p in payloads])


def payloads(audio: str, count: int, first: int = 1) -> list[dict[str, Any]]:
    return [
        {"id": str(uuid4()), "audio_id": audio, "sequence": n, "type": "audio.created"}
        for n in range(first, first + count)
    ]


async def test_each_event_is_forwarded_once_across_redeliveries(
    settings: NovaSettings,
) -> None:
    audio = str(uuid4())
    first = payloads(audio, 130)  # more than one BatchGetItem of 100
    later = payloads(audio, 5, first=131)
    async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
        inner = Recording()
        target = f"eventbridge:test-{uuid4()}"
        once = OnceForwarder(inner, ddb, settings.webhooks_table, target)

        await once.forward(first)
        await once.forward(first)  # redelivered
        await once.forward(first[100:] + later)  # a rewound batch with new events

        failing = OnceForwarder(
            Recording(fail=True), ddb, settings.webhooks_table, target
        )
        more = payloads(audio, 3, first=136)
        with pytest.raises(ConnectionError):
            await failing.forward(more)
        await once.forward(more)  # not recorded as sent: sent now

        elsewhere = Recording()
        await OnceForwarder(
            elsewhere, ddb, settings.webhooks_table, f"{target}-2"
        ).forward(first[:2])

    assert inner.batches == [
        [p["id"] for p in first],
        [p["id"] for p in later],
        [p["id"] for p in more],
    ]
    assert elsewhere.batches == [[p["id"] for p in first[:2]]]  # targets are apart
