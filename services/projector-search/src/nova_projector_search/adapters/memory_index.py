"""An in-memory search index with OpenSearch's external versioning, for tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from uuid import UUID

from ..application.documents import ERASED, Document, erased_document


class InMemorySearchIndex:
    def __init__(self) -> None:
        self.docs: dict[str, Document] = {}
        self.versions: dict[str, int] = {}

    async def fetch(self, audio_ids: Sequence[str]) -> dict[str, Document]:
        return {a: dict(self.docs[a]) for a in audio_ids if a in self.docs}

    async def write(
        self, documents: Mapping[str, Document | None], versions: Mapping[str, int]
    ) -> None:
        for audio_id, doc in documents.items():
            version = versions[audio_id]
            # External versioning: only a strictly newer version is written.
            if self.versions.get(audio_id, 0) >= version:
                continue
            self.versions[audio_id] = version
            if doc is None:
                self.docs.pop(audio_id, None)
            else:
                self.docs[audio_id] = dict(doc)

    async def erase_user(self, user_id: UUID) -> int:
        mine = [
            a
            for a, d in self.docs.items()
            if d.get("user_id") == str(user_id) and d.get("personal_data") != ERASED
        ]
        for audio_id in mine:
            self.docs[audio_id] = erased_document(self.docs[audio_id])
        return len(mine)
