"""One fuzzing pass against the real services on the real backends.

command-api, the relay, both projectors and query-api run as processes on the
local stack (their own tables, topic and index, as every e2e test). The
schemathesis CLI runs every phase (examples, coverage, fuzzing, stateful) with
every check against both OpenAPI documents, with a valid token and without
one; the gRPC fuzz tests of `test_grpc_inputs` run again against the real
query-api, over audio uploaded and transcribed through the real command-api.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import grpc
import httpx
import pytest

from nova_platform.settings import NovaSettings
from nova_query_api.grpc_gen import query_pb2_grpc

from ..audio_samples import sine_wav
from ..backends import ROOT, Backends
from ..service_processes import BIN, RunningService, running_services
from ..waiting import eventually
from .harness import EXAMPLES, SECRET, SEED, token
from .test_grpc_inputs import (
    test_a_seeded_audio_reads_back,
    test_get_audio_and_history_with_any_id,
    test_list_audio_with_any_page_size_and_cursor,
    test_raw_bytes_to_every_method,
    test_search_with_any_text_and_arguments,
)

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

__all__ = [  # collected here again, against the running query-api
    "test_a_seeded_audio_reads_back",
    "test_get_audio_and_history_with_any_id",
    "test_list_audio_with_any_page_size_and_cursor",
    "test_raw_bytes_to_every_method",
    "test_search_with_any_text_and_arguments",
]

# A network round trip per case and a second CLI per document: a third of
# the in-process budget keeps the pass to a few minutes.
LIVE_EXAMPLES = max(5, EXAMPLES // 3)
RUNNING = (
    "command-api",
    "relay",
    "projector-readmodel",
    "projector-search",
    "query-api",
)


@pytest.fixture(scope="module")
def services(
    request: pytest.FixtureRequest,
    settings: NovaSettings,
    backends: Backends,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, RunningService]]:
    env = {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": settings.resource_suffix,
        # The fuzz tests' tokens and cursors are signed with the harness' key.
        "NOVA_JWT_SECRET": SECRET,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
    }
    logs = tmp_path_factory.mktemp("fuzz-service-logs")
    with running_services(request, env, logs, RUNNING) as running:
        yield running


def schemathesis_cli(
    url: str, workdir: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """The CLI run from `workdir` (where it keeps its cache), with the harness'
    hooks importable from the repository."""
    command = [
        str(BIN / "schemathesis"),
        "run",
        url,
        "--checks",
        "all",
        "--max-examples",
        str(LIVE_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "10",
        *extra,
    ]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=workdir,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SCHEMATHESIS_HOOKS": "tests.fuzz.cli_hooks",
        },
    )


@pytest.mark.parametrize(
    ("service", "document"),
    [("command-api", "/commands/openapi.json"), ("query-api", "/queries/openapi.json")],
)
@pytest.mark.parametrize("authenticated", [True, False], ids=["token", "no-token"])
def test_schemathesis_finds_nothing_in_the_running_service(
    services: dict[str, RunningService],
    service: str,
    document: str,
    authenticated: bool,
    tmp_path: Path,
) -> None:
    auth = ["--header", f"Authorization: Bearer {token()}"] if authenticated else []

    run = schemathesis_cli(services[service].url + document, tmp_path, *auth)

    assert run.returncode == 0, readable(run.stdout) + run.stderr[-2000:]
    assert "passed" in run.stdout


def readable(output: str) -> str:
    """The CLI's report with each line cut short (bodies can be binary)."""
    return "\n".join(line[:300] for line in output.splitlines()[-400:])


class LiveQueryApi:
    """What the gRPC fuzz tests need of a query-api: its port, and audios of
    the fuzz user it can read."""

    def __init__(self, port: int, audio_ids: list[UUID]) -> None:
        self.port = port
        self.audio_ids = audio_ids


@pytest.fixture(scope="module")
async def served(services: dict[str, RunningService]) -> LiveQueryApi:
    headers = {"Authorization": f"Bearer {token()}"}
    commands, queries = services["command-api"].url, services["query-api"].url
    wav = sine_wav(0.5)
    audio_ids = []
    async with httpx.AsyncClient(timeout=30, headers=headers) as http:
        for n in range(3):
            created = await http.post(
                f"{commands}/commands/audio",
                files={"file": (f"live-{n}.wav", wav, "audio/wav")},
            )
            assert created.status_code == 201, created.text
            audio_ids.append(UUID(created.json()["audio_id"]))
        first = f"{commands}/commands/audio/{audio_ids[0]}"
        started = await http.post(f"{first}/transcribe")
        assert started.status_code == 202, started.text
        done = await http.post(
            f"{first}/transcription-result",
            json={
                "outcome": "completed",
                "attempt": 1,
                "text": "hello <b>world</b>",
                "confidence": 0.9,
                "language": "en-US",
                "segments": [{"start": 0.0, "end": 0.4, "text": "hello"}],
            },
        )
        assert done.status_code == 200, done.text

        async def all_listed() -> bool | None:
            listed = await http.get(f"{queries}/queries/audio")
            items = listed.json().get("items", []) if listed.is_success else []
            return True if len(items) >= 3 else None

        await eventually(all_listed, timeout=60, what="the uploads in the read model")
    grpc_port = services["query-api"].grpc_port
    assert grpc_port is not None
    return LiveQueryApi(grpc_port, audio_ids)


@pytest.fixture(scope="module")
def channel(served: LiveQueryApi) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{served.port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> query_pb2_grpc.QueryServiceStub:
    return query_pb2_grpc.QueryServiceStub(channel)
