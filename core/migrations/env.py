"""Alembic environment: runs on the connection `core.db.migrate` passes, or on the configured
database when invoked by hand (`alembic -x` is not needed: settings come from REGULUS_*)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

# The modules that define tables, imported so that Base.metadata knows them all.
import core.audit
import core.auth
import core.catalog
import core.saved
import core.sentence_vectors  # noqa: F401
from core.db import Base, database_url
from core.settings import get_settings

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying tables
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from sqlalchemy import create_engine

    engine = create_engine(database_url(get_settings()))
    with engine.begin() as own_connection:
        _run(own_connection)
    engine.dispose()
