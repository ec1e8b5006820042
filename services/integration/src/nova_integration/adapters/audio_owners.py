"""Who owns an audio: the `user_id` of its `AudioCreated`, from the event store.

Only `AudioCreated` names the owner; a later event of an audio whose creation
is not in the same batch needs one `Query` (the stream's first item), cached
since an audio never changes hands.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING
from uuid import UUID

from nova_events import AUDIO_FILE, AudioCreated, decode_payload
from nova_platform.event_items import from_item
from nova_platform.personal import PersonalData

from ..application.ports import AudioOwnerUnknownError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient


class EventStoreAudioOwners:
    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        cache_size: int = 10_000,
        personal: PersonalData | None = None,
    ) -> None:
        self._client = client
        self._table = table_name
        self._personal = personal
        self._cache: OrderedDict[UUID, UUID] = OrderedDict()
        self._cache_size = cache_size

    async def owner_of(self, audio_id: UUID) -> UUID:
        owner = self._cache.get(audio_id)
        if owner is not None:
            self._cache.move_to_end(audio_id)
            return owner
        page = await self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"{AUDIO_FILE}#{audio_id}"}},
            ConsistentRead=True,
            Limit=1,
        )
        items = page.get("Items", [])
        created = None
        if items:
            first = from_item(items[0])
            if self._personal is not None:
                first = await self._personal.open(first)
            created = decode_payload(first)
        if not isinstance(created, AudioCreated):
            raise AudioOwnerUnknownError(
                f"the event store has no AudioCreated for audio {audio_id}; "
                "its events cannot be matched to a user's webhooks"
            )
        self._cache[audio_id] = created.user_id
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return created.user_id
