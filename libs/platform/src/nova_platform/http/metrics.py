"""Request metrics of the HTTP APIs, served on `GET /metrics` (Prometheus).

Requests are counted by method, route template (`/commands/audio/{audio_id}`,
never the concrete path, so the label set stays small) and status; their
duration is a histogram by method and route.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

UNMATCHED = "unmatched"


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "nova_http_requests",
            "HTTP requests answered, by route and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "nova_http_request_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "nova_http_requests_in_flight",
            "HTTP requests being answered",
            registry=registry,
        )

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path == "/metrics":
            return await call_next(request)
        started = time.perf_counter()
        status = 500  # what an exception that escapes becomes
        self.in_flight.inc()
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            self.in_flight.dec()
            route = getattr(request.scope.get("route"), "path", UNMATCHED)
            self.requests.labels(request.method, route, str(status)).inc()
            self.duration.labels(request.method, route).observe(
                time.perf_counter() - started
            )


def install_metrics(app: FastAPI, registry: CollectorRegistry | None = None) -> None:
    """Count every request of `app` and serve `registry` on `/metrics`."""
    registry = registry or CollectorRegistry()
    metrics = HttpMetrics(registry)
    app.middleware("http")(metrics.middleware)

    @app.get("/metrics", include_in_schema=False)
    def serve_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
