"""Bulk item failures: throttling is retried, a mapping error is poison."""

from __future__ import annotations

from typing import Any, cast

import pytest
from opensearchpy import AsyncOpenSearch

from nova_platform.batches import is_transient
from nova_projector_search.adapters.opensearch_index import (
    BulkWriteError,
    OpenSearchIndex,
)


class BulkAnswers:
    """Stands in for AsyncOpenSearch.bulk: answers each item with a status."""

    def __init__(self, statuses: dict[str, int]) -> None:
        self._statuses = statuses

    async def bulk(self, body: list[dict[str, Any]]) -> dict[str, Any]:
        items = []
        for line in body:
            action = next(iter(line))
            if action not in ("index", "delete"):
                continue  # a document's source, not an action
            status = self._statuses[line[action]["_id"]]
            result: dict[str, Any] = {"_id": line[action]["_id"], "status": status}
            if status >= 300:
                result["error"] = {"type": f"status {status}"}
            items.append({action: result})
        return {
            "errors": any(s >= 300 for s in self._statuses.values()),
            "items": items,
        }


async def write(statuses: dict[str, int]) -> None:
    client = cast(AsyncOpenSearch, BulkAnswers(statuses))
    index = OpenSearchIndex(client, "audio-transcriptions")
    await index.write(
        {audio_id: {"audio_id": audio_id} for audio_id in statuses},
        dict.fromkeys(statuses, 3),
    )


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_throttled_or_failing_item_is_transient(status: int) -> None:
    with pytest.raises(BulkWriteError) as raised:
        await write({"a": 201, "b": status})

    assert is_transient(raised.value)
    assert f"b ({status})" in str(raised.value)


async def test_a_mapping_error_is_poison() -> None:
    with pytest.raises(BulkWriteError) as raised:
        await write({"a": 201, "b": 400})

    assert not is_transient(raised.value)


async def test_a_throttled_item_beside_a_mapping_error_retries_the_bulk() -> None:
    with pytest.raises(BulkWriteError) as raised:
        await write({"a": 400, "b": 429})

    assert is_transient(raised.value)


async def test_stale_versions_and_missing_deletes_are_done() -> None:
    await write({"a": 409, "b": 404, "c": 201})
