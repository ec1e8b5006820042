"""The user key store on DynamoDB (moto), and the KMS key wrapper on moto's KMS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any
from uuid import uuid4

import pytest

from nova_events import (
    AUDIO_FILE,
    EventEnvelope,
    EventMetadata,
    TranscriptionCompleted,
    encode_payload,
)
from nova_platform.aws import client_kwargs, session
from nova_platform.personal import PersonalData, open_personal_data
from nova_platform.settings import NovaSettings
from nova_platform.user_keys import (
    DynamoDBUserKeys,
    KeyWrappingError,
    KmsKeyWrapper,
)

from ..contracts.user_keys import UserKeyStoreContract

pytestmark = pytest.mark.integration


@pytest.fixture
async def ddb(settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("dynamodb", **client_kwargs(settings)) as client:
        yield client


@pytest.fixture
async def kms(settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("kms", **client_kwargs(settings)) as client:
        yield client


@pytest.fixture
async def kms_key_id(kms: Any) -> str:
    created = await kms.create_key(Description="nova test key-encryption key")
    return str(created["KeyMetadata"]["KeyId"])


class TestDynamoDBUserKeys(UserKeyStoreContract):
    @pytest.fixture
    def keys(self, ddb: Any, settings: NovaSettings) -> DynamoDBUserKeys:
        return DynamoDBUserKeys(ddb, settings.user_keys_table)


def transcript_envelope() -> EventEnvelope:
    audio_id = uuid4()
    return EventEnvelope(
        aggregate_type=AUDIO_FILE,
        aggregate_id=audio_id,
        event_type="TranscriptionCompleted",
        schema_version=1,
        version=3,
        metadata=EventMetadata(correlation_id="kms-test"),
        data=encode_payload(
            TranscriptionCompleted(
                audio_id=audio_id, text="kms sealed words", confidence=1, language="en"
            )
        ),
    )


async def test_kms_wraps_a_data_key_that_only_its_user_unwraps(
    kms: Any, kms_key_id: str
) -> None:
    wrapper = KmsKeyWrapper(kms, kms_key_id)
    user, other = uuid4(), uuid4()

    key, wrapped = await wrapper.new_data_key(user)

    assert len(key) == 32
    assert key not in wrapped
    assert await wrapper.unwrap(wrapped, user) == key
    with pytest.raises(KeyWrappingError, match="NOVA_KMS_KEY_ID"):
        await wrapper.unwrap(wrapped, other)  # the encryption context differs
    assert wrapper.wrapping == f"kms:{kms_key_id}"


async def test_services_seal_and_open_with_kms_wrapped_keys_in_dynamodb(
    settings: NovaSettings, kms_key_id: str, ddb: Any
) -> None:
    configured = settings.model_copy(
        update={"kms_key_id": kms_key_id, "master_key": None}
    )
    owner = uuid4()
    async with AsyncExitStack() as stack:
        writer = await open_personal_data(configured, stack)
        reader = await open_personal_data(configured, stack)
        envelope = transcript_envelope()

        sealed = await writer.seal(envelope, owner)
        opened = await reader.open(sealed)

        assert "kms sealed words" not in sealed.model_dump_json()
        assert opened.data == envelope.data
        stored = await ddb.get_item(
            TableName=settings.user_keys_table,
            Key={"pk": {"S": f"USER#{owner}"}},
            ConsistentRead=True,
        )
        assert stored["Item"]["wrapping"]["S"] == f"kms:{kms_key_id}"

        await writer.erase(owner)
        late = await open_personal_data(configured, stack)
        erased = await late.open(sealed)
        assert erased.erased
        assert erased.data["text"] == "<erased>"


async def test_racing_first_writers_in_two_processes_share_one_key(
    settings: NovaSettings,
) -> None:
    owner = uuid4()
    async with AsyncExitStack() as stack:
        replicas: list[PersonalData] = [
            await open_personal_data(settings, stack) for _ in range(4)
        ]
        envelopes = [transcript_envelope() for _ in replicas]

        sealed = await asyncio.gather(
            *(p.seal(e, owner) for p, e in zip(replicas, envelopes, strict=True))
        )

        for replica in replicas:
            for original, each in zip(envelopes, sealed, strict=True):
                assert (await replica.open(each)).data == original.data
