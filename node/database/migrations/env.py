"""Alembic environment: migrations run on the engine the node hands over, all of them in
one transaction, so that a failed upgrade leaves the database exactly as it was.

PostgreSQL's DDL is transactional. SQLite's is too, but Python's sqlite3 driver opens
a transaction only before a data change, so each ``CREATE`` or ``ALTER`` would commit
on its own and a migration failing half-way would leave half its tables behind: the
transaction is begun explicitly there.
"""

from alembic import context

engine = context.config.attributes["engine"]
sqlite = engine.dialect.name == "sqlite"
with engine.begin() as connection:
    if sqlite:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    context.configure(
        connection=connection,
        render_as_batch=sqlite,
        on_version_apply=context.config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()
