"""Log records that say which reply they are about, as text or as JSON lines.

The relay binds `platform`, `workspace`, `channel`, `thread`, `reply_id` and, once known,
`trace_id` to the current asyncio context (`log_context`); every record logged inside it
carries them, whichever module logs it — the agent client, the store, an adapter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime

from bridge.redact import install_redaction

_fields: ContextVar[Mapping[str, object]] = ContextVar("agent_bridge_log_fields", default={})
"""Context-local (each asyncio task sees its own copy), so it is not shared mutable state."""


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add `fields` to every record logged in this context (and the tasks it starts)."""
    token = _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _fields.reset(token)


def bind_log_fields(**fields: object) -> None:
    """Add fields for the rest of the current task (e.g. a trace id learned mid-stream)."""
    _fields.set({**_fields.get(), **{k: v for k, v in fields.items() if v is not None}})


class ContextFilter(logging.Filter):
    """Copies the context's fields onto each record as `record.context`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = dict(_fields.get())
        return True


class TextFormatter(logging.Formatter):
    """`time level logger: message [key=value …]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = getattr(record, "context", None)
        if context:
            line += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "context", {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text", *, secrets: Sequence[str] = ()) -> logging.Handler:
    """Log to stderr as text or JSON lines, with reply context and every secret redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    install_redaction(secrets)
    return handler
