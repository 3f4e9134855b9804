"""Alembic environment: always driven programmatically with an open connection
(config.attributes["connection"]), whose search_path selects the schema."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
