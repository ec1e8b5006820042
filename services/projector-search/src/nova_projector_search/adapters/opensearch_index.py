"""Reads and bulk-writes transcript documents with external versioning.

The stream version is the document's external version, so OpenSearch itself
refuses a write older than what it holds: duplicates and stale redeliveries
become harmless version conflicts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from opensearchpy import AsyncOpenSearch

from ..application.documents import ERASED, Document, erased_document

logger = logging.getLogger(__name__)

ERASE_PAGE = 500
ERASE_ROUNDS = 20


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

    async def erase_user(self, user_id: UUID) -> int:
        """Tombstone the user's documents page by page, each at the version it
        is at (`external_gte`), so a later event's version still goes in.

        A document a projector rewrote meanwhile refuses the tombstone (409)
        and is found again by the next round's query.
        """
        query = {
            "bool": {
                "filter": [{"term": {"user_id": str(user_id)}}],
                "must_not": [{"term": {"personal_data": ERASED}}],
            }
        }
        erased = 0
        for _ in range(ERASE_ROUNDS):
            await self._client.indices.refresh(index=self._alias)
            found = await self._client.search(
                index=self._alias,
                body={"query": query, "size": ERASE_PAGE, "version": True},
            )
            hits = found["hits"]["hits"]
            if not hits:
                return erased
            body: list[dict[str, Any]] = []
            for hit in hits:
                meta = {
                    "_index": hit["_index"],
                    "_id": hit["_id"],
                    "version": hit["_version"],
                    "version_type": "external_gte",
                }
                body.extend(({"index": meta}, erased_document(hit["_source"])))
            response = await self._client.bulk(body=body)
            erased += self._check(response)
        raise BulkWriteError(
            f"documents of user {user_id} kept changing during {ERASE_ROUNDS} "
            "rounds of erasure; the batch is retried",
            retriable=True,
        )

    def _check(self, response: dict[str, Any]) -> int:
        """How many items were written; raises for failures other than 409."""
        written = 0
        failures = []
        retriable = False
        for entry in response["items"]:
            result = next(iter(entry.values()))
            status = result.get("status", 500)
            if status < 300:
                written += 1
            elif status != 409:
                failures.append(
                    f"{result.get('_id')} ({status}): {result.get('error')}"
                )
                retriable = retriable or status == 429 or status >= 500
        if failures:
            raise BulkWriteError("; ".join(failures[:5]), retriable=retriable)
        return written

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
