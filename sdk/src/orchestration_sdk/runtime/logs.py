"""Structured logging for every service: readable lines by default, JSON on
request (ORCH_LOG_FORMAT=json); level from ORCH_LOG_LEVEL."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from opentelemetry import trace


class _Readable(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        extra = "".join(f" {k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname:<7} {self.service}: {record.getMessage()}{extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _Json(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": record.created,
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data)


# Context fields a log call may pass with extra={...}.
FIELDS = ("trace_id", "task_id", "instance", "solution", "operation")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: getattr(record, k) for k in FIELDS if getattr(record, k, None)}


class TraceLogFilter(logging.Filter):
    """Adds the current trace id to every record that has none."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "trace_id", None):
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
        return True


def configure(service: str, level: str | None = None, fmt: str | None = None) -> None:
    """Send the root logger to stderr in the chosen format."""
    level = (level or os.environ.get("ORCH_LOG_LEVEL") or "INFO").upper()
    fmt = fmt or os.environ.get("ORCH_LOG_FORMAT") or "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json(service) if fmt == "json" else _Readable(service))
    handler.addFilter(TraceLogFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("nats").setLevel(max(logging.WARNING, root.level))
