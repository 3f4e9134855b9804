"""Alembic migrations of the PostgreSQL ledger, applied programmatically at open
(`tokenomy.metering.postgres_ledger.migrate`). Revisions live in versions/."""
