"""Writing a file so that a crash leaves the old one or the new one, never half.

The node's keys, certificates and memorandum history are replaced this way: the
bytes go to a temporary file beside the target, created with its final mode before
any byte is written (whatever the umask), flushed to disk, renamed over the target,
and the folder flushed so that the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "replace_file"]


def fsync_dir(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename, a new file) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, mode: int) -> None:
    """``path`` replaced by ``data`` in one rename, with ``mode`` from the moment the
    temporary file exists; durable when this returns."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
