"""Writes read-model changes to `nova-audio-read-model`, conditional on version."""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from uuid import UUID

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from nova_platform.projections import TableName, resolve

from ..application.projection import ERASED, PERSONAL_ATTRIBUTES, ItemChange
from ..application.projector import ProjectionGapError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

logger = logging.getLogger(__name__)
_serializer = TypeSerializer()
USER_INDEX = "gsi1-user-audio"


def _plain_decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _plain_decimals(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_decimals(v) for v in value]
    return value


class DynamoDBReadModel:
    """The read-model table; `table` is a fixed name (a rebuild's new table) or
    `nova_platform.projections.ActiveReadModelTable`, read on every change so
    the live projector follows a rebuild's switch."""

    def __init__(self, client: DynamoDBClient, table: str | TableName) -> None:
        self._client = client
        self._table = table

    async def apply(self, change: ItemChange) -> bool:
        """Apply `change` once; returns False when it was already applied."""
        key = {"pk": {"S": f"AUDIO#{change.audio_id}"}, "sk": {"S": "METADATA"}}
        values = {k: v for k, v in change.set.items() if v is not None}
        names = {f"#a{i}": k for i, k in enumerate(values)}
        attr_values = {
            f":a{i}": _serializer.serialize(_plain_decimals(v))
            for i, v in enumerate(values.values())
        }
        assignments = [f"#a{i} = :a{i}" for i in range(len(values))]
        names["#version"] = "version"
        attr_values[":version"] = {"N": str(change.version)}
        assignments.append("#version = :version")
        expression = "SET " + ", ".join(assignments)
        if change.remove:
            removed = {f"#r{i}": k for i, k in enumerate(change.remove)}
            names.update(removed)
            expression += " REMOVE " + ", ".join(removed)
        if change.create:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "#version = :previous"
            attr_values[":previous"] = {"N": str(change.version - 1)}
        table = await resolve(self._table)
        try:
            if change.create:
                # The whole item in one PutItem: no reader ever sees it partial.
                item = {
                    **key,
                    **{
                        k: _serializer.serialize(_plain_decimals(v))
                        for k, v in values.items()
                    },
                    "version": {"N": str(change.version)},
                }
                await self._client.put_item(
                    TableName=table, Item=item, ConditionExpression=condition
                )
            else:
                await self._client.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression=expression,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=attr_values,
                )
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
        stored = await self._stored_version(table, key)
        if stored is not None and stored >= change.version:
            logger.info(
                "duplicate event ignored",
                extra={"audio_id": change.audio_id, "version": change.version},
            )
            return False
        raise ProjectionGapError(change.audio_id, change.version, stored)

    async def erase_user(self, user_id: UUID, erased_at: datetime) -> list[str]:
        """Strip every item of the user found through `gsi1-user-audio`."""
        table = await resolve(self._table)
        request: dict[str, Any] = {
            "TableName": table,
            "IndexName": USER_INDEX,
            "KeyConditionExpression": "gsi1pk = :u",
            "ExpressionAttributeValues": {":u": {"S": f"USER#{user_id}"}},
            "ProjectionExpression": "pk",
        }
        names = {f"#p{i}": a for i, a in enumerate(PERSONAL_ATTRIBUTES)}
        erased: list[str] = []
        while True:
            page = await self._client.query(**request)
            for item in page.get("Items", []):
                key = {"pk": item["pk"], "sk": {"S": "METADATA"}}
                try:
                    await self._client.update_item(
                        TableName=table,
                        Key=key,
                        UpdateExpression="SET personal_data = :e, erased_at = :at "
                        "REMOVE " + ", ".join(names),
                        ConditionExpression="attribute_exists(pk)",
                        ExpressionAttributeNames=names,
                        ExpressionAttributeValues={
                            ":e": {"S": ERASED},
                            ":at": {"S": erased_at.isoformat()},
                        },
                    )
                except ClientError as exc:
                    code = exc.response["Error"]["Code"]
                    if code != "ConditionalCheckFailedException":
                        raise
                    continue  # the index lags behind an item gone since
                erased.append(item["pk"]["S"].removeprefix("AUDIO#"))
            last = page.get("LastEvaluatedKey")
            if not last:
                return erased
            request["ExclusiveStartKey"] = last

    async def _stored_version(self, table: str, key: dict[str, Any]) -> int | None:
        item = await self._client.get_item(
            TableName=table,
            Key=key,
            ConsistentRead=True,
            ProjectionExpression="#v",
            ExpressionAttributeNames={"#v": "version"},
        )
        found = item.get("Item")
        return int(found["version"]["N"]) if found and "version" in found else None
