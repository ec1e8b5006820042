"""Reads and bulk-writes transcript documents with external versioning.

The stream version is the document's external version, so OpenSearch itself
refuses a write older than what it holds: duplicates and stale redeliveries
become harmless version conflicts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from opensearchpy import AsyncOpenSearch

from ..application.documents import Document

logger = logging.getLogger(__name__)


class BulkWriteError(Exception):
    """Raised when a bulk item failed for a reason other than a stale version.

    `retriable` is true when an item was throttled (429) or met a server error
    (5xx): the consume loop then retries the batch with backoff instead of
    parking its audios. A mapping or validation error (other 4xx) is not; in a
    bulk that also holds a throttled item, it is found when the retried batch
    is narrowed down to its audios.
    """

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable


class OpenSearchIndex:
    def __init__(self, client: AsyncOpenSearch, alias: str) -> None:
        self._client = client
        self._alias = alias

    async def fetch(self, audio_ids: Iterable[str]) -> dict[str, Document]:
        ids = list(audio_ids)
        if not ids:
            return {}
        response = await self._client.mget(index=self._alias, body={"ids": ids})
        return {d["_id"]: d["_source"] for d in response["docs"] if d.get("found")}

    async def write(
        self, documents: Mapping[str, Document | None], versions: Mapping[str, int]
    ) -> None:
        """Index each document (or delete it when None) at its stream version."""
        body: list[dict[str, Any]] = []
        for audio_id, doc in documents.items():
            meta = {
                "_index": self._alias,
                "_id": audio_id,
                "version": versions[audio_id],
                "version_type": "external",
            }
            if doc is None:
                body.append({"delete": meta})
            else:
                body.append({"index": meta})
                body.append(doc)
        if not body:
            return
        response = await self._client.bulk(body=body)
        if not response.get("errors"):
            return
        failures = []
        retriable = False
        for entry in response["items"]:
            result = next(iter(entry.values()))
            status = result.get("status", 500)
            # 409: OpenSearch already holds this version or a newer one.
            # 404: deleting a document that was never indexed.
            if status >= 300 and status not in (409, 404):
                failures.append(
                    f"{result.get('_id')} ({status}): {result.get('error')}"
                )
                retriable = retriable or status == 429 or status >= 500
        if failures:
            # Items already written are harmless to write again: the retry
            # meets them as version conflicts.
            raise BulkWriteError("; ".join(failures[:5]), retriable=retriable)
