"""Alembic environment: runs on the connection that `radbridge.engine.migrate` passes in."""

from alembic import context

from radbridge.engine.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `radbridge db upgrade`, not bare alembic")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
