"""Speech in, transcript out, with each service a separate process.

Upload (command-api) -> transcribe -> relay -> Kafka -> transcriber (Whisper
base on the CPU) -> transcription-result (command-api) -> relay -> Kafka ->
projector-readmodel -> `completed` with the transcript in the read model.
A file that passes the upload probe but holds no decodable sound ends in
`failed` with a reason the user can read.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from nova_platform.auth.dev_token import issue
from nova_platform.aws import client_kwargs, session
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from ..backends import ROOT, Backends
from ..conftest import JWT_SECRET
from ..net import free_port
from ..speech import PANGRAM, corrupt_flac, spoken_wav, words_found
from ..waiting import eventually

sys.path.insert(0, str(ROOT / "deploy" / "local"))
from processes import (
    SERVICES,
    RunningService,
    start_services,
    stop_services,
    wait_healthy,
)

pytestmark = pytest.mark.e2e

WANTED = ("command-api", "relay", "projector-readmodel", "transcriber")
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
async def own_settings(settings: NovaSettings) -> NovaSettings:
    mine = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "s"}
    )
    await ensure_all(mine)
    return mine


@pytest.fixture(scope="module")
def services(
    request: pytest.FixtureRequest,
    own_settings: NovaSettings,
    backends: Backends,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RunningService]]:
    spoken_wav("check")  # skip before starting anything when espeak-ng is missing
    wanted = tuple(s for s in SERVICES if s.name in WANTED)
    ports = {s.name: free_port() for s in wanted}
    env = {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": own_settings.resource_suffix,
        "NOVA_JWT_SECRET": JWT_SECRET,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
        "NOVA_COMMAND_API_URL": f"http://127.0.0.1:{ports['command-api']}",
        "NOVA_WHISPER_MODEL_DIR": str(ROOT / ".nova" / "models" / "whisper-base"),
    }
    logs = tmp_path_factory.mktemp("transcription-logs")
    running = start_services(BIN, env, logs, ports, wanted)
    try:
        wait_healthy(running, timeout=120)
        yield {r.service.name: r for r in running}
    finally:
        stop_services(running)
        for item in running if request.session.testsfailed else ():
            sys.stderr.write(
                f"--- {item.service.name} log tail ---\n{item.log_tail(20)}\n"
            )


@pytest.fixture(scope="module")
async def ddb(own_settings: NovaSettings) -> AsyncIterator[Any]:
    async with session().client("dynamodb", **client_kwargs(own_settings)) as client:
        yield client


async def upload_and_transcribe(
    command_api: str, name: str, content: bytes, content_type: str
) -> str:
    token = issue(uuid4(), "audio:read audio:write", JWT_SECRET)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=command_api, timeout=30) as http:
        created = await http.post(
            "/commands/audio",
            files={"file": (name, content, content_type)},
            data={"title": name, "language": "en-US"},
            headers=headers,
        )
        assert created.status_code == 201, created.text
        audio_id = str(created.json()["audio_id"])
        started = await http.post(
            f"/commands/audio/{audio_id}/transcribe",
            json={"language": "en-US"},
            headers=headers,
        )
        assert started.status_code == 202, started.text
    return audio_id


async def settled(ddb: Any, settings: NovaSettings, audio_id: str) -> dict[str, Any]:
    """The read-model item once its status is `completed` or `failed`."""

    async def probe() -> dict[str, Any] | None:
        found = await ddb.get_item(
            TableName=settings.read_model_table,
            Key={"pk": {"S": f"AUDIO#{audio_id}"}, "sk": {"S": "METADATA"}},
            ConsistentRead=True,
        )
        item: dict[str, Any] | None = found.get("Item")
        if item and item["status"]["S"] in ("completed", "failed"):
            return item
        return None

    return await eventually(probe, timeout=120, interval=0.2, what="a result")


async def test_spoken_english_ends_completed_with_its_words(
    services: dict[str, RunningService], own_settings: NovaSettings, ddb: Any
) -> None:
    audio_id = await upload_and_transcribe(
        services["command-api"].url, "fox.wav", spoken_wav(PANGRAM), "audio/wav"
    )
    item = await settled(ddb, own_settings, audio_id)
    assert item["status"]["S"] == "completed", item.get("failure_reason")
    text = item["transcription"]["S"]
    assert words_found(PANGRAM, text) >= 0.7, text


async def test_audio_without_decodable_sound_ends_failed_with_a_reason(
    services: dict[str, RunningService], own_settings: NovaSettings, ddb: Any
) -> None:
    audio_id = await upload_and_transcribe(
        services["command-api"].url, "broken.flac", corrupt_flac(), "audio/flac"
    )
    item = await settled(ddb, own_settings, audio_id)
    assert item["status"]["S"] == "failed"
    assert "no decodable sound" in item["failure_reason"]["S"]
    assert item["failure_retryable"]["BOOL"] is False
