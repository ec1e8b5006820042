"""Erasing a user from the OpenSearch index: tombstones at the stored version."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import pytest
from opensearchpy import AsyncOpenSearch

from nova_platform.resources import search_index_body
from nova_platform.settings import NovaSettings
from nova_projector_search.adapters.opensearch_index import OpenSearchIndex

pytestmark = pytest.mark.integration


@pytest.fixture
async def index(settings: NovaSettings) -> AsyncIterator[tuple[AsyncOpenSearch, str]]:
    client = AsyncOpenSearch(hosts=[settings.opensearch_url])
    name = f"{settings.search_alias}-erasure-{uuid4().hex[:8]}"
    await client.indices.create(index=name, body=search_index_body())
    try:
        yield client, name
    finally:
        await client.indices.delete(index=name)
        await client.close()


def doc(audio_id: str, user_id: str, version: int) -> dict[str, object]:
    return {
        "audio_id": audio_id,
        "user_id": user_id,
        "status": "completed",
        "title": "Private title",
        "transcription": "private words",
        "language": "en-US",
        "version": version,
    }


async def test_a_users_documents_become_tombstones_that_later_versions_replace(
    index: tuple[AsyncOpenSearch, str],
) -> None:
    client, name = index
    target = OpenSearchIndex(client, name)
    alice, bob = str(uuid4()), str(uuid4())
    alices = [str(uuid4()) for _ in range(3)]
    bobs = str(uuid4())
    await target.write(
        {a: doc(a, alice, 4) for a in alices} | {bobs: doc(bobs, bob, 2)},
        {a: 4 for a in alices} | {bobs: 2},
    )

    erased = await target.erase_user(UUID(alice))

    assert erased == 3
    found = await target.fetch([*alices, bobs])
    for audio_id in alices:
        assert "title" not in found[audio_id]
        assert "transcription" not in found[audio_id]
        assert found[audio_id]["personal_data"] == "erased"
        assert found[audio_id]["version"] == 4
        got = await client.get(index=name, id=audio_id)
        assert got["_version"] == 4, "the tombstone keeps the stream version"
    assert found[bobs]["transcription"] == "private words"
    assert await target.erase_user(UUID(alice)) == 0

    later = {**found[alices[0]], "status": "deleted", "version": 5}
    await target.write({alices[0]: later}, {alices[0]: 5})
    assert (await target.fetch([alices[0]]))[alices[0]]["status"] == "deleted"
    matches = await client.search(
        index=name, body={"query": {"match": {"transcription": "private"}}}
    )
    assert {h["_id"] for h in matches["hits"]["hits"]} == {bobs}
