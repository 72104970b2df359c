"""Alembic environment: migrations always run on the connection ``Store.upgrade`` hands in."""

from alembic import context

from bridge.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
