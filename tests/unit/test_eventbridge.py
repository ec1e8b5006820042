"""The EventBridge forwarder against a scripted fake `PutEvents`."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest
from botocore.exceptions import ClientError

from nova_events import (
    AudioProcessingFailed,
    DomainEvent,
    EventEnvelope,
    EventMetadata,
    Segment,
    TranscriptionCompleted,
    encode_payload,
)
from nova_integration.adapters.eventbridge import (
    MAX_CALL_BYTES,
    TOO_LARGE_CODE,
    EventBridgeForwarder,
    EventBridgeRejectedError,
    EventBridgeUnavailableError,
)
from nova_integration.domain.payload import encode_body, public_payload
from nova_platform.batches import is_transient

AT = datetime(2026, 12, 3, 20, 28, 42, 123456, tzinfo=UTC)
BUS = "nova-bus"
OK = None


def payload_of(event: DomainEvent, version: int = 3) -> dict[str, Any]:
    envelope = EventEnvelope(
        aggregate_type="AudioFile",
        aggregate_id=event.audio_id,
        event_type=event.event_type(),
        schema_version=event.schema_version,
        version=version,
        occurred_at=AT,
        metadata=EventMetadata(correlation_id="c"),
        data=encode_payload(event),
    )
    return public_payload(envelope)


def transcript(
    text: str = "hello", segments: tuple[Segment, ...] = ()
) -> dict[str, Any]:
    return payload_of(
        TranscriptionCompleted(
            audio_id=uuid4(),
            text=text,
            confidence=0.9,
            language="en-US",
            segments=segments,
        )
    )


class FakeEvents:
    """Records each `put_events` call and answers the next scripted result.

    A script is one error code (or `OK`) per entry of the call; calls beyond
    the script succeed.
    """

    def __init__(self, *scripts: Sequence[str | None]) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self._scripts = list(scripts)

    async def put_events(
        self,
        *,
        Entries: list[dict[str, Any]],  # noqa: N803 - the AWS parameter name
    ) -> dict[str, Any]:
        self.calls.append(list(Entries))
        codes = self._scripts.pop(0) if self._scripts else [OK] * len(Entries)
        assert len(codes) == len(Entries), "the script does not fit the call"
        return {
            "FailedEntryCount": sum(code is not None for code in codes),
            "Entries": [
                {"EventId": str(uuid4())}
                if code is None
                else {"ErrorCode": code, "ErrorMessage": f"{code} happened"}
                for code in codes
            ],
        }

    def ids(self) -> list[list[str]]:
        """The payload ids sent, call by call."""
        return [[json.loads(e["Detail"])["id"] for e in call] for call in self.calls]


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def forwarder(
    client: FakeEvents, sleep: FakeSleep | None = None, **kwargs: Any
) -> EventBridgeForwarder:
    return EventBridgeForwarder(
        client,
        BUS,
        sleep=sleep or FakeSleep(),
        rng=kwargs.pop("rng", random.Random(7)),
        **kwargs,
    )


def entry_size(entry: dict[str, Any]) -> int:
    fields = ("Source", "DetailType", "Detail", "EventBusName")
    return sum(len(entry[f].encode()) for f in fields) + (14 if "Time" in entry else 0)


async def test_an_entry_carries_the_public_payload() -> None:
    payload = transcript(
        text="こんにちは", segments=(Segment(start=0, end=1, text="x"),)
    )
    client = FakeEvents()

    await forwarder(client).forward([payload])

    assert client.calls == [
        [
            {
                "Source": "nova.audio",
                "DetailType": "audio.transcription.completed",
                "Detail": encode_body(payload).decode(),
                "EventBusName": BUS,
                "Resources": [],
                "Time": AT,
            }
        ]
    ]
    assert json.loads(client.calls[0][0]["Detail"]) == payload


async def test_nothing_to_forward_makes_no_call() -> None:
    client = FakeEvents()

    await forwarder(client).forward([])

    assert client.calls == []


async def test_calls_hold_at_most_ten_entries_in_order() -> None:
    payloads = [transcript(text=f"t{n}") for n in range(23)]
    client = FakeEvents()

    await forwarder(client).forward(payloads)

    assert [len(call) for call in client.calls] == [10, 10, 3]
    assert [i for call in client.ids() for i in call] == [p["id"] for p in payloads]


async def test_calls_hold_at_most_256_kib() -> None:
    payloads = [transcript(text="a" * 100_000) for _ in range(5)]
    client = FakeEvents()

    await forwarder(client).forward(payloads)

    assert [len(call) for call in client.calls] == [2, 2, 1]
    assert [i for call in client.ids() for i in call] == [p["id"] for p in payloads]
    for call in client.calls:
        assert sum(entry_size(e) for e in call) <= MAX_CALL_BYTES


async def test_only_the_failed_entries_are_retried_in_order_after_a_jitter() -> None:
    payloads = [transcript(text=f"t{n}") for n in range(4)]
    client = FakeEvents(
        [OK, "ThrottlingException", OK, "InternalFailure"],
        ["ServiceUnavailable", OK],
    )
    sleep = FakeSleep()

    await forwarder(client, sleep, rng=random.Random(7)).forward(payloads)

    ids = [p["id"] for p in payloads]
    assert client.ids() == [ids, [ids[1], ids[3]], [ids[1]]]
    twin = random.Random(7)
    assert sleep.delays == [twin.uniform(0, 0.2), twin.uniform(0, 0.4)]


@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "InternalFailure",
        "InternalException",
        "ServiceUnavailable",
        "RequestThrottled",
    ],
)
async def test_retryable_codes_are_retried(code: str) -> None:
    client = FakeEvents([code])

    await forwarder(client).forward([transcript()])

    assert len(client.calls) == 2


async def test_retryable_failures_outlasting_the_attempts_are_transient() -> None:
    payload = transcript()
    client = FakeEvents(*[["ThrottlingException"]] * 4)
    sleep = FakeSleep()
    fwd = forwarder(
        client,
        sleep,
        rng=random.Random(3),
        max_attempts=4,
        base_delay_s=1.0,
        max_delay_s=1.5,
    )

    with pytest.raises(EventBridgeUnavailableError) as caught:
        await fwd.forward([payload])

    assert len(client.calls) == 4
    twin = random.Random(3)  # the third delay is capped at max_delay_s
    assert sleep.delays == [
        twin.uniform(0, 1.0),
        twin.uniform(0, 1.5),
        twin.uniform(0, 1.5),
    ]
    assert [f.event_id for f in caught.value.failures] == [payload["id"]]
    assert "ThrottlingException" in str(caught.value)
    assert is_transient(caught.value)


@pytest.mark.parametrize(
    "code", ["MalformedDetail", "InvalidArgument", "AccessDeniedException"]
)
async def test_rejected_entries_are_not_retried_and_not_transient(code: str) -> None:
    payloads = [transcript(text=f"t{n}") for n in range(3)]
    client = FakeEvents([OK, code, "ThrottlingException"])

    with pytest.raises(EventBridgeRejectedError) as caught:
        await forwarder(client).forward(payloads)

    ids = [p["id"] for p in payloads]
    assert client.ids() == [ids, [ids[2]]]  # the others are delivered first
    assert [f.event_id for f in caught.value.failures] == [ids[1]]
    assert ids[1] in str(caught.value)
    assert code in str(caught.value)
    assert not is_transient(caught.value)


async def test_an_error_of_the_call_itself_propagates_unchanged() -> None:
    error = ClientError(
        {"Error": {"Code": "ThrottlingException", "Message": "slow down"}},
        "PutEvents",
    )

    class Failing(FakeEvents):
        async def put_events(
            self,
            *,
            Entries: list[dict[str, Any]],  # noqa: N803 - the AWS parameter name
        ) -> dict[str, Any]:
            raise error

    with pytest.raises(ClientError) as caught:
        await forwarder(Failing()).forward([transcript()])

    assert caught.value is error


async def test_an_oversize_transcript_is_sent_without_its_segments() -> None:
    segments = tuple(Segment(start=n, end=n + 1, text="w" * 100) for n in range(3000))
    big, small = transcript(text="short", segments=segments), transcript()
    client = FakeEvents()

    await forwarder(client).forward([big, small])

    [[sent_big, sent_small]] = client.calls
    detail = json.loads(sent_big["Detail"])
    assert detail["data"] == {
        "text": "short",
        "confidence": 0.9,
        "language": "en-US",
        "truncated": True,
    }
    assert {k: v for k, v in detail.items() if k != "data"} == {
        k: v for k, v in big.items() if k != "data"
    }
    assert json.loads(sent_small["Detail"]) == small
    assert entry_size(sent_big) <= MAX_CALL_BYTES


async def test_an_oversize_text_is_dropped_as_well() -> None:
    segments = (Segment(start=0, end=1, text="w"),)
    big = transcript(text="w" * (MAX_CALL_BYTES + 1), segments=segments)
    client = FakeEvents()

    await forwarder(client).forward([big])

    detail = json.loads(client.calls[0][0]["Detail"])
    assert detail["data"] == {"confidence": 0.9, "language": "en-US", "truncated": True}


async def test_an_entry_too_large_without_a_transcript_is_rejected() -> None:
    huge = payload_of(
        AudioProcessingFailed(
            audio_id=uuid4(), reason="x" * (MAX_CALL_BYTES + 1), retryable=False
        )
    )
    fine = transcript()
    client = FakeEvents()

    with pytest.raises(EventBridgeRejectedError) as caught:
        await forwarder(client).forward([huge, fine])

    assert client.ids() == [[fine["id"]]]
    assert [(f.event_id, f.error_code) for f in caught.value.failures] == [
        (huge["id"], TOO_LARGE_CODE)
    ]
