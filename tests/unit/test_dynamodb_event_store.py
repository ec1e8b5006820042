"""The DynamoDB event store's requests, against a stub that records each call.

The contract suite proves what the store does against moto; these tests pin how
it does it: which DynamoDB operations a commit costs, and how each refusal
DynamoDB can answer with is translated.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast
from uuid import uuid4

import pytest
from botocore.exceptions import ClientError

from nova_command_api.adapters.dynamodb_event_store import DynamoDBEventStore
from nova_command_api.application.ports import (
    ConcurrencyError,
    EventStoreUnavailableError,
)
from nova_events import (
    AUDIO_FILE,
    AudioProcessingCompleted,
    AudioProcessingStarted,
    TranscriptionCompleted,
)

from ..contracts.event_store import META, created


def refusal(code: str, *reasons: str) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": code}}
    if reasons:
        response["CancellationReasons"] = [{"Code": r} for r in reasons]
    return ClientError(response, "Write")  # type: ignore[arg-type]


class RecordingDynamoDB:
    """One table in a dict: conditional writes, reads by key, the last version.

    `refuse` makes the next write fail with that error instead.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.refuse: ClientError | None = None

    @property
    def operations(self) -> list[str]:
        return [name for name, _ in self.calls]

    def _key(self, item: dict[str, Any]) -> tuple[str, str]:
        return item["pk"]["S"], item["sk"]["S"]

    def _refused(self) -> None:
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise error

    async def put_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("put_item", request))
        self._refused()
        key = self._key(request["Item"])
        if key in self.items:
            raise refusal("ConditionalCheckFailedException")
        self.items[key] = request["Item"]
        return {}

    async def transact_write_items(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("transact_write_items", request))
        self._refused()
        puts = [entry["Put"]["Item"] for entry in request["TransactItems"]]
        taken = [self._key(item) in self.items for item in puts]
        if any(taken):
            reasons = ["ConditionalCheckFailed" if t else "None" for t in taken]
            raise refusal("TransactionCanceledException", *reasons)
        self.items.update({self._key(item): item for item in puts})
        return {}

    async def get_item(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("get_item", request))
        key = request["Key"]["pk"]["S"], request["Key"]["sk"]["S"]
        return {"Item": self.items[key]} if key in self.items else {}

    async def query(self, **request: Any) -> dict[str, Any]:
        self.calls.append(("query", request))
        stream = request["ExpressionAttributeValues"].get(":pk", {}).get("S")
        found = sorted(
            (item for (pk, _), item in self.items.items() if pk == stream),
            key=lambda item: item["sk"]["S"],
            reverse=not request.get("ScanIndexForward", True),
        )
        return {"Items": found[: request.get("Limit", len(found))]}


@pytest.fixture
def ddb() -> RecordingDynamoDB:
    return RecordingDynamoDB()


@pytest.fixture
def store(ddb: RecordingDynamoDB) -> DynamoDBEventStore:
    return DynamoDBEventStore(cast(Any, ddb), "nova-event-store")


async def started_stream(store: DynamoDBEventStore, ddb: RecordingDynamoDB) -> Any:
    """A stream at version 2; the calls it took are forgotten."""
    audio_id = uuid4()
    await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)
    started = AudioProcessingStarted(audio_id=audio_id)
    await store.append_events(AUDIO_FILE, audio_id, [started], 1, META)
    ddb.calls.clear()
    return audio_id


async def test_one_event_on_a_new_stream_is_one_put_item(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB
) -> None:
    audio_id = uuid4()

    await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)

    assert ddb.operations == ["put_item"]
    [(_, request)] = ddb.calls
    assert request["ConditionExpression"] == "attribute_not_exists(pk)"
    assert request["Item"]["sk"] == {"S": "v0000000001"}


async def test_one_event_after_a_version_is_one_write_and_no_transaction(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB
) -> None:
    audio_id = await started_stream(store, ddb)

    await store.append_events(
        AUDIO_FILE, audio_id, [AudioProcessingCompleted(audio_id=audio_id)], 2, META
    )

    # The read checks that version 2 exists; the write stays a single PutItem.
    assert ddb.operations == ["get_item", "put_item"]
    assert ddb.calls[0][1]["Key"]["sk"] == {"S": "v0000000002"}
    assert ddb.calls[0][1]["ConsistentRead"] is True


async def test_two_events_are_one_transaction(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB
) -> None:
    audio_id = await started_stream(store, ddb)
    done = TranscriptionCompleted(
        audio_id=audio_id, text="x", confidence=1.0, language="en-US"
    )

    await store.append_events(
        AUDIO_FILE,
        audio_id,
        [done, AudioProcessingCompleted(audio_id=audio_id)],
        2,
        META,
    )

    assert ddb.operations == ["get_item", "transact_write_items"]
    puts = ddb.calls[1][1]["TransactItems"]
    assert [p["Put"]["Item"]["sk"]["S"] for p in puts] == ["v0000000003", "v0000000004"]
    assert {p["Put"]["ConditionExpression"] for p in puts} == {
        "attribute_not_exists(pk)"
    }


async def test_a_taken_version_in_a_transaction_is_a_conflict_with_the_real_version(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB
) -> None:
    audio_id = await started_stream(store, ddb)
    ddb.refuse = refusal(
        "TransactionCanceledException", "ConditionalCheckFailed", "None"
    )
    events = [AudioProcessingStarted(audio_id=audio_id)] * 2

    with pytest.raises(ConcurrencyError) as caught:
        await store.append_events(AUDIO_FILE, audio_id, events, 1, META)

    assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)


@pytest.mark.parametrize(
    "error",
    [
        refusal("TransactionCanceledException", "None", "TransactionConflict"),
        refusal("TransactionCanceledException", "ThrottlingError", "None"),
        refusal("TransactionCanceledException", "ProvisionedThroughputExceeded"),
    ],
    ids=["transaction-conflict", "throttled", "over-capacity"],
)
async def test_a_transaction_cancelled_for_now_is_transient_not_a_conflict(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB, error: ClientError
) -> None:
    audio_id = await started_stream(store, ddb)
    ddb.refuse = error
    events = [AudioProcessingStarted(audio_id=audio_id)] * 2

    with pytest.raises(EventStoreUnavailableError) as caught:
        await store.append_events(AUDIO_FILE, audio_id, events, 2, META)

    assert caught.value.retriable
    assert not isinstance(caught.value, ConcurrencyError)
    assert len(ddb.items) == 2


@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "ProvisionedThroughputExceededException",
        "TransactionConflictException",
    ],
)
async def test_a_throttled_put_is_transient(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB, code: str
) -> None:
    audio_id = uuid4()
    ddb.refuse = refusal(code)

    with pytest.raises(EventStoreUnavailableError, match=code):
        await store.append_events(AUDIO_FILE, audio_id, [created(audio_id)], 0, META)


async def test_a_transaction_cancelled_as_invalid_is_neither_conflict_nor_transient(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB
) -> None:
    audio_id = await started_stream(store, ddb)
    ddb.refuse = refusal("TransactionCanceledException", "ValidationError", "None")
    events = [AudioProcessingStarted(audio_id=audio_id)] * 2

    with pytest.raises(ClientError) as caught:
        await store.append_events(AUDIO_FILE, audio_id, events, 2, META)

    assert not isinstance(caught.value, ConcurrencyError | EventStoreUnavailableError)


async def test_an_expected_version_the_stream_never_reached_writes_nothing(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB
) -> None:
    audio_id = await started_stream(store, ddb)

    with pytest.raises(ConcurrencyError) as caught:
        await store.append_events(
            AUDIO_FILE, audio_id, [AudioProcessingStarted(audio_id=audio_id)], 5, META
        )

    assert (caught.value.expected_version, caught.value.actual_version) == (5, 2)
    assert "put_item" not in ddb.operations
    assert len(ddb.items) == 2


async def test_events_by_type_compares_from_time_in_utc(
    store: DynamoDBEventStore, ddb: RecordingDynamoDB
) -> None:
    tokyo = timezone(timedelta(hours=9))

    await store.get_events_by_type(
        "AudioCreated", from_time=datetime(2025, 1, 1, 9, 0, tzinfo=tokyo)
    )

    [(_, query)] = ddb.calls
    assert query["ExpressionAttributeValues"][":from"] == {
        "S": datetime(2025, 1, 1, 0, 0, tzinfo=UTC).isoformat()
    }


async def test_events_by_type_refuses_a_naive_from_time(
    store: DynamoDBEventStore,
) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.get_events_by_type("AudioCreated", from_time=datetime(2025, 1, 1))
