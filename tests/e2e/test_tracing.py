"""One command followed by its trace through real processes.

A small OTLP/HTTP collector on loopback receives what the services export.
A command sent with a `traceparent` must show up in command-api's spans, and
its event in the consumer spans of both projectors and the integration
service, on the other side of the relay and Kafka.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from nova_platform.auth.dev_token import issue
from nova_platform.resources import ensure_all
from nova_platform.settings import NovaSettings

from ..audio_samples import sine_wav
from ..backends import Backends
from ..conftest import JWT_SECRET
from ..service_processes import RunningService, running_services
from ..waiting import eventually

pytestmark = pytest.mark.e2e

WANTED = (
    "command-api",
    "relay",
    "projector-readmodel",
    "projector-search",
    "integration",
)
CONSUMERS = ("projector-readmodel", "projector-search", "integration")


class Collector:
    """Keeps (service name, span name, trace id, linked trace ids) of every span."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str, set[str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    links = {link.trace_id.hex() for link in span.links}
                    self.spans.append((service, span.name, span.trace_id.hex(), links))
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def services_in(self, trace_id: str) -> set[str]:
        return {
            service
            for service, _, span_trace, links in self.spans
            if span_trace == trace_id or trace_id in links
        }


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    found = Collector()
    await found.start()
    yield found
    await found.stop()


@pytest.fixture
async def own_settings(settings: NovaSettings) -> NovaSettings:
    mine = settings.model_copy(
        update={"resource_suffix": settings.resource_suffix + "o"}
    )
    await ensure_all(mine)
    return mine


@pytest.fixture
def pipeline(
    request: pytest.FixtureRequest,
    own_settings: NovaSettings,
    backends: Backends,
    collector: Collector,
    tmp_path: Path,
) -> Iterator[dict[str, RunningService]]:
    env = {
        **backends.env(),
        "NOVA_RESOURCE_SUFFIX": own_settings.resource_suffix,
        "NOVA_JWT_SECRET": JWT_SECRET,
        "NOVA_RELAY_POLL_INTERVAL_S": "0.05",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with running_services(request, env, tmp_path, WANTED) as running:
        yield running


async def test_a_commands_trace_reaches_every_consumer(
    pipeline: dict[str, RunningService], collector: Collector
) -> None:
    trace_id = uuid4().hex
    token = issue(uuid4(), "audio:read audio:write", JWT_SECRET)
    async with httpx.AsyncClient(timeout=10) as http:
        created = await http.post(
            f"{pipeline['command-api'].url}/commands/audio",
            files={"file": ("a.wav", sine_wav(0.2), "audio/wav")},
            headers={
                "Authorization": f"Bearer {token}",
                "traceparent": f"00-{trace_id}-{uuid4().hex[:16]}-01",
            },
        )
    assert created.status_code == 201, created.text

    expected = {"nova-command-api", *(f"nova-{c}" for c in CONSUMERS)}

    async def reached() -> set[str] | None:
        seen = collector.services_in(trace_id)
        return seen if expected <= seen else None

    await eventually(reached, timeout=60, what=f"spans of {sorted(expected)}")
    names = {name for service, name, t, _ in collector.spans if t == trace_id}
    assert "POST /commands/audio" in names
