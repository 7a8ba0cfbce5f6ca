"""The node's exception tree, in one place.

Every error says what was expected, what was found and, where it helps, what to
do. The command line prints the message and exits non-zero; nothing catches
these to carry on as if all were well.

    NodeError
    ├── ConfigError        a setting is missing or wrong (names the setting)
    ├── CatalogError       the catalog file is invalid, or a theme is unknown
    ├── StoreError         the database cannot be opened or is at the wrong schema
    ├── ImportFileError    an import file cannot be read at all (encoding, format)
    ├── NotFound           a subject or record that is not in the store
    └── LedgerError        (node.ledger.log) the audit ledger cannot do what was asked
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class NodeError(Exception):
    """Base of every error the node reports to its operator."""


class ConfigError(NodeError):
    pass


class CatalogError(NodeError):
    pass


class StoreError(NodeError):
    pass


class ImportFileError(NodeError):
    """A file the importer cannot read at all: wrong encoding, no header, bad format."""


class NotFound(NodeError):
    pass


def _location(loc: tuple[int | str, ...], data: Any) -> str:
    """``themes[3](admin_penalty).fields[2](fine_amount).type``: list items named by code."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int) and not isinstance(item, bool) and parts:
            name = None
            if isinstance(node, list) and isinstance(node[item], dict):
                name = next(
                    (
                        node[item][k]
                        for k in ("code", "id", "name")
                        if isinstance(node[item].get(k), str)
                    ),
                    None,
                )
            parts[-1] += f"[{item}]" + (f"({name})" if name else "")
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    return ".".join(parts)


def describe_validation_error(exc: ValidationError, data: Any) -> str:
    """Every problem of a refused document, each with its exact place, in one line."""
    return "; ".join(
        (f"{_location(tuple(e['loc']), data)}: " if e["loc"] else "")
        + e["msg"].removeprefix("Value error, ")
        for e in exc.errors()
    )
