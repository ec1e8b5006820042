"""`nova-init` creates every resource with the seed's layout, and can run again."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from opensearchpy import AsyncOpenSearch

from nova_platform.aws import client_kwargs, session
from nova_platform.resources import EVENTS_TOPIC_PARTITIONS, ensure_all
from nova_platform.settings import NovaSettings

pytestmark = pytest.mark.integration


async def test_init_is_idempotent_and_matches_the_seed(settings: NovaSettings) -> None:
    await ensure_all(settings)  # a second run on top of the fixture's first

    async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
        store = (await ddb.describe_table(TableName=settings.event_store_table))[
            "Table"
        ]
        read_model = (await ddb.describe_table(TableName=settings.read_model_table))[
            "Table"
        ]
        user_keys = (await ddb.describe_table(TableName=settings.user_keys_table))[
            "Table"
        ]
    assert [k["AttributeName"] for k in store["KeySchema"]] == ["pk", "sk"]
    assert [i["IndexName"] for i in store["GlobalSecondaryIndexes"]] == ["gsi1"]
    assert store["StreamSpecification"]["StreamViewType"] == "NEW_IMAGE"
    assert [i["IndexName"] for i in read_model["GlobalSecondaryIndexes"]] == [
        "gsi1-user-audio"
    ]
    assert [k["AttributeName"] for k in user_keys["KeySchema"]] == ["pk"]

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        [topic] = await admin.describe_topics([settings.events_topic])
    finally:
        await admin.close()
    assert len(topic["partitions"]) == EVENTS_TOPIC_PARTITIONS

    search = AsyncOpenSearch(hosts=[settings.opensearch_url])
    try:
        aliases = await search.indices.get_alias(name=settings.search_alias)
        [index] = aliases
        mapping = await search.indices.get_mapping(index=index)
        analyzed = await search.indices.analyze(
            index=index,
            body={"field": "transcription.cjk", "text": "音声認識"},
        )
    finally:
        await search.close()
    properties = mapping[index]["mappings"]["properties"]
    assert properties["personal_data"]["type"] == "keyword"
    transcript = properties["transcription"]
    assert transcript["analyzer"] == "english"
    assert transcript["fields"]["cjk"]["analyzer"] == "cjk"
    assert [t["token"] for t in analyzed["tokens"]] == ["音声", "声認", "認識"]
