"""Speech in, transcript out, with each service a separate process.

Upload (command-api) -> transcribe -> relay -> Kafka -> transcriber (Whisper
base on the CPU) -> transcription-result (command-api) -> relay -> Kafka ->
projector-readmodel / projector-search -> query-api answers `completed` with
the transcript, and its search finds the audio by one of the spoken words.
A file that passes the upload probe but holds no decodable sound ends in
`failed` with a reason the user can read.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from nova_platform.auth.dev_token import issue
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from ..backends import ROOT, Backends
from ..conftest import JWT_SECRET
from ..net import free_port
from ..service_processes import BIN, RunningService, running_services
from ..speech import PANGRAM, corrupt_flac, spoken_wav, words_found
from ..waiting import eventually

pytestmark = pytest.mark.e2e

WANTED = (
    "command-api",
    "relay",
    "projector-readmodel",
    "projector-search",
    "query-api",
    "transcriber",
)
SEARCHABLE = ("fox", "quick", "brown", "lazy", "dog", "jumps")


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
    command_api_port = free_port()
    env = {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": own_settings.resource_suffix,
        "NOVA_JWT_SECRET": JWT_SECRET,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
        "NOVA_COMMAND_API_URL": f"http://127.0.0.1:{command_api_port}",
        "NOVA_WHISPER_MODEL_DIR": str(ROOT / ".nova" / "models" / "whisper-base"),
    }
    logs = tmp_path_factory.mktemp("transcription-logs")
    ports = {"command-api": command_api_port}
    with running_services(request, env, logs, WANTED, ports=ports) as running:
        yield running


@dataclass
class Upload:
    audio_id: str
    headers: dict[str, str]


async def upload_and_transcribe(
    command_api: str, name: str, content: bytes, content_type: str
) -> Upload:
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
    return Upload(audio_id, headers)


async def settled(
    query_api: str, upload: Upload, progress: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The audio as query-api answers it once it is `completed` or `failed`;
    `progress` collects every `progress` seen on the way."""
    async with httpx.AsyncClient(base_url=query_api, timeout=10) as http:

        async def probe() -> dict[str, Any] | None:
            answer = await http.get(
                f"/queries/audio/{upload.audio_id}", headers=upload.headers
            )
            if answer.status_code == 404:  # not projected yet
                return None
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            if body.get("progress") is not None and progress is not None:
                assert body["status"] == "processing"
                progress.append(body["progress"])
            if body["status"] in ("completed", "failed"):
                assert body.get("progress") is None
                return body
            return None

        return await eventually(probe, timeout=120, interval=0.1, what="a result")


async def test_spoken_english_ends_completed_and_is_found_by_a_word(
    services: dict[str, RunningService],
) -> None:
    query_api = services["query-api"].url
    upload = await upload_and_transcribe(
        services["command-api"].url, "fox.wav", spoken_wav(PANGRAM), "audio/wav"
    )
    progress: list[dict[str, Any]] = []
    audio = await settled(query_api, upload, progress)
    assert audio["status"] == "completed", audio.get("failure_reason")
    text = audio["transcription"]
    assert words_found(PANGRAM, text) >= 0.7, text
    for seen in progress:  # whether any is seen depends on timing: not asserted
        assert 0.0 <= seen["fraction"] <= 1.0

    heard = set(re.findall(r"[a-z']+", text.lower()))
    word = next((w for w in SEARCHABLE if w in heard), None)
    assert word is not None, text
    async with httpx.AsyncClient(base_url=query_api, timeout=10) as http:

        async def search() -> dict[str, Any] | None:
            answer = await http.get(
                "/queries/search",
                params={
                    "q": word,
                    "after_audio": upload.audio_id,
                    "min_version": audio["version"],
                },
                headers=upload.headers,
            )
            if answer.status_code == 503:  # the index has not caught up yet
                return None
            assert answer.status_code == 200, answer.text
            found: dict[str, Any] = answer.json()
            return found

        page = await eventually(search, timeout=30, interval=0.2, what="the index")
    hit = next((h for h in page["hits"] if h["audio_id"] == upload.audio_id), None)
    assert hit is not None, (word, text, page)
    assert hit["status"] == "completed"
    assert hit["version"] >= audio["version"]
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"{services['transcriber'].url}/metrics")).text
    assert 'nova_transcription_seconds_count{outcome="completed"}' in metrics


async def test_audio_without_decodable_sound_ends_failed_with_a_reason(
    services: dict[str, RunningService],
) -> None:
    upload = await upload_and_transcribe(
        services["command-api"].url, "broken.flac", corrupt_flac(), "audio/flac"
    )
    audio = await settled(services["query-api"].url, upload)
    assert audio["status"] == "failed"
    assert "no decodable sound" in audio["failure_reason"]


def nova(
    services: dict[str, RunningService], token: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """The `nova` command line, as a user runs it, against these services."""
    return subprocess.run(
        [str(BIN / "nova"), *args],
        env={
            **os.environ,
            "NOVA_COMMAND_URL": services["command-api"].url,
            "NOVA_QUERY_URL": services["query-api"].url,
            "NOVA_TOKEN": token,
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


async def test_the_nova_cli_uploads_waits_reads_and_searches(
    services: dict[str, RunningService], tmp_path: Path
) -> None:
    token = issue(uuid4(), "audio:read audio:write", JWT_SECRET)
    speech = tmp_path / "fox.wav"
    speech.write_bytes(spoken_wav(PANGRAM))

    uploaded = await asyncio.to_thread(
        nova,
        services,
        token,
        "--json",
        "upload",
        str(speech),
        "--title",
        "Fox",
        "--language",
        "en-US",
        "--transcribe",
        "--wait",
    )
    assert uploaded.returncode == 0, uploaded.stderr
    audio = json.loads(uploaded.stdout)
    assert audio["status"] == "completed"
    assert words_found(PANGRAM, audio["transcription"]) >= 0.7
    audio_id = audio["audio_id"]

    shown = await asyncio.to_thread(nova, services, token, "get", audio_id)
    listed = await asyncio.to_thread(nova, services, token, "list")
    history = await asyncio.to_thread(
        nova, services, token, "--json", "history", audio_id
    )
    assert shown.returncode == listed.returncode == history.returncode == 0
    assert "completed" in shown.stdout
    assert "Fox" in shown.stdout
    assert audio_id in listed.stdout
    assert [e["event_type"] for e in json.loads(history.stdout)["events"]] == [
        "AudioCreated",
        "AudioProcessingStarted",
        "TranscriptionCompleted",
        "AudioProcessingCompleted",
    ]

    heard = set(re.findall(r"[a-z']+", audio["transcription"].lower()))
    word = next(w for w in SEARCHABLE if w in heard)

    async def found() -> bool | None:
        searched = await asyncio.to_thread(
            nova, services, token, "--json", "search", word
        )
        assert searched.returncode == 0, searched.stderr
        hits = json.loads(searched.stdout)["hits"]
        return True if any(h["audio_id"] == audio_id for h in hits) else None

    await eventually(found, timeout=30, interval=0.5, what="the CLI's search")

    missing = await asyncio.to_thread(nova, services, token, "get", str(uuid4()))
    assert missing.returncode == 1
    assert "404" in missing.stderr
    no_token = await asyncio.to_thread(nova, services, "", "list")
    assert no_token.returncode == 2
    assert "NOVA_TOKEN" in no_token.stderr
