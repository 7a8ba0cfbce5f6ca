"""The node's credit store: subjects, records and their history, import batches.

``open_store`` is the one way in: it opens the database named by the node's
configuration and refuses a schema that is not at the code's revision.
"""

from __future__ import annotations

from sqlalchemy import Engine

from creditexchange.node.store.database import create_store_engine, require_current_schema


def open_store(url: str) -> Engine:
    engine = create_store_engine(url)
    require_current_schema(engine)
    return engine
