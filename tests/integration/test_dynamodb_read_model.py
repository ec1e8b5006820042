from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from nova_platform.aws import client_kwargs, session
from nova_platform.settings import NovaSettings
from nova_projector_readmodel.adapters.dynamodb_read_model import DynamoDBReadModel

from ..contracts.read_model import ReadModelContract

pytestmark = pytest.mark.integration


class TestDynamoDBReadModel(ReadModelContract):
    @pytest.fixture
    async def read_model(
        self, settings: NovaSettings
    ) -> AsyncIterator[DynamoDBReadModel]:
        async with session().client("dynamodb", **client_kwargs(settings)) as ddb:
            self.ddb: Any = ddb
            self.table = settings.read_model_table
            yield DynamoDBReadModel(ddb, settings.read_model_table)

    async def item(self, audio_id: str) -> dict[str, object] | None:
        found = await self.ddb.get_item(
            TableName=self.table,
            Key={"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}},
            ConsistentRead=True,
        )
        item = found.get("Item")
        if item is None:
            return None
        plain = {k: TypeDeserializer().deserialize(v) for k, v in item.items()}
        plain["version"] = int(plain["version"])
        return plain
