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


def configure(level: str = "INFO", stream: Any = None) -> None:
    """Send the node's loggers' records (``node``, ``certs``, ``policy``, ``gateway``) to
    stderr as JSON."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("node", "certs", "policy", "gateway"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
