"""JSON logs, one object per line, with the correlation id on every line.

HTTP and gRPC set `correlation_id` per request; the consumers set it per
record (from its `correlation_id` header) together with `event_id` and
`audio_id`, so every line logged while a record is handled names it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

from .tracing import trace_id

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)
event_id: ContextVar[str | None] = ContextVar("event_id", default=None)
audio_id: ContextVar[str | None] = ContextVar("audio_id", default=None)

_CONTEXT = (correlation_id, event_id, audio_id)


@contextmanager
def log_context(
    *,
    correlation: str | None = None,
    event: str | None = None,
    audio: str | None = None,
) -> Iterator[None]:
    """Within the block, every log line carries these ids (None: not logged)."""
    tokens = [
        var.set(value)
        for var, value in zip(_CONTEXT, (correlation, event, audio), strict=True)
    ]
    try:
        yield
    finally:
        for var, token in zip(_CONTEXT, tokens, strict=True):
            var.reset(token)


_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON; `extra={...}` fields become top-level keys."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for var in _CONTEXT:
            value = var.get()
            if value is not None:
                entry[var.name] = value
        trace = trace_id()
        if trace is not None:
            entry["trace_id"] = trace
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every logger, uvicorn's included, to JSON lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "faststream"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("aiokafka").setLevel(max(root.level, logging.WARNING))
    logging.getLogger("botocore").setLevel(max(root.level, logging.WARNING))
