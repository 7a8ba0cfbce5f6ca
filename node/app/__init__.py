"""The application: a node home's configuration and keys, and opening the node's parts
from them (``wiring``), serving (``server``). The layers below never read a
configuration; the command line above calls into here.
"""

from __future__ import annotations

__all__: list[str] = []
