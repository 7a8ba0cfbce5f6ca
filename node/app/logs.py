"""Structured JSON logs, one object per line on stderr.

Log records carry member ids, purposes, statuses, digests and subject HMACs
(first 8 bytes, hex): enough to find the audit entry, never a subject id or an
identity number in clear. Pass data with ``extra={"data": {...}}``.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import Any

import orjson

__all__ = [
    "LOGGERS",
    "JsonFormatter",
    "configure",
]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            line.update(data)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class _Stderr:
    """Whatever ``sys.stderr`` is when a record is written, not when logging was set up:
    a command run inside another program (a test, a notebook) leaves no handler behind
    on a stream that program has since closed."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


LOGGERS = ("node", "certs", "policy", "gateway")


def configure(level: str = "INFO", stream: Any = None) -> None:
    """Send the node's loggers' records (``node``, ``certs``, ``policy``, ``gateway``) to
    stderr as JSON."""
    handler = logging.StreamHandler(stream or _Stderr())
    handler.setFormatter(JsonFormatter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
