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
