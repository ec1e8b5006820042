"""Runs a service's ASGI app: JSON logs first, then uvicorn on its port."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import uvicorn

from .logging import configure_logging
from .settings import NovaSettings
from .tracing import configure_tracing, shutdown_tracing

S = TypeVar("S", bound=NovaSettings)


def serve(service: str, settings: S, port: int, create_app: Callable[[S], Any]) -> None:
    """Log as `service`, build the app from `settings`, serve it until SIGTERM.

    On SIGTERM uvicorn stops accepting connections and gives requests in
    flight `NOVA_SHUTDOWN_GRACE_S` to finish, then the app shuts down (a
    consumer gives its batch in flight the same time).
    """
    configure_logging(service, settings.log_level)
    configure_tracing(service)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )
    shutdown_tracing()
