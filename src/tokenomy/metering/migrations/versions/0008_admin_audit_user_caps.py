"""Administrative changes (admin_audit: append-only, a trigger refuses UPDATE, DELETE and
TRUNCATE) and end-user caps within a tenant (user_caps; user "*" is the tenant's default).
The same tables as the SQLite ledger's migration 3.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""CREATE TABLE admin_audit (
        id BIGSERIAL PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        before TEXT,
        after TEXT)""")
    op.execute("CREATE INDEX admin_audit_target ON admin_audit(target, id)")
    op.execute("""CREATE FUNCTION admin_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'admin_audit is append-only'; END $$""")
    op.execute("""CREATE TRIGGER admin_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON admin_audit
        FOR EACH STATEMENT EXECUTE FUNCTION admin_audit_append_only()""")
    op.execute("""CREATE TABLE user_caps (
        tenant TEXT NOT NULL REFERENCES tenants(name),
        user_id TEXT NOT NULL,
        budget_pusd BIGINT,
        budget_period TEXT NOT NULL DEFAULT 'total',
        rpm BIGINT,
        tpm BIGINT,
        PRIMARY KEY (tenant, user_id))""")


def downgrade() -> None:
    op.execute("DROP TABLE user_caps")
    op.execute("DROP TABLE admin_audit")
    op.execute("DROP FUNCTION admin_audit_append_only()")
