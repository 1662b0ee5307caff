"""Alembic migrations of the SQL store; `core.db.migrate` runs them on every start."""
