"""Human agents: accounts, their audit log, and who holds a conversation since when.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "agent_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("agent_id", sa.Integer, sa.ForeignKey("agents.id")),
        sa.Column("agent_name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("conversation_id", sa.Integer),
        sa.Column("address", sa.String(64)),
        sa.Column("detail", sa.JSON),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_agent_audit_action", "agent_audit", ["action"])
    op.create_index("ix_agent_audit_created_at", "agent_audit", ["created_at"])
    op.add_column("conversations", sa.Column("agent_id", sa.Integer))
    op.add_column("conversations", sa.Column("waiting_since", TS))
    # Conversations already stuck in `waiting` join the queue, oldest first.
    op.execute("UPDATE conversations SET waiting_since = updated_at WHERE state = 'waiting'")


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("waiting_since")
        batch.drop_column("agent_id")
    op.drop_table("agent_audit")
    op.drop_table("agents")
