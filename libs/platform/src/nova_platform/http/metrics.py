"""Request metrics of the HTTP APIs, served on `GET /metrics` (Prometheus).

Requests are counted by method, route template (`/commands/audio/{audio_id}`,
never the concrete path, so the label set stays small) and status; their
duration is a histogram by method and route.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class RequestMetricsMiddleware:
    """Counts and times every HTTP request but those of `/metrics` (a pure
    ASGI middleware, like `CorrelationIdMiddleware` and for the same reason).

    The route template is read from the scope once the router has set it.
    """

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        status = 500  # what an exception that escapes becomes

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            metrics.in_flight.dec()
            method = scope["method"]
            route = getattr(scope.get("route"), "path", UNMATCHED)
            metrics.requests.labels(method, route, str(status)).inc()
            metrics.duration.labels(method, route).observe(
                time.perf_counter() - started
            )


def install_metrics(app: FastAPI, registry: CollectorRegistry | None = None) -> None:
    """Count every request of `app` and serve `registry` on `/metrics`."""
    registry = registry or CollectorRegistry()
    metrics = HttpMetrics(registry)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def serve_metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
