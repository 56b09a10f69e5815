"""Jurisdiction rules on work orders (confidentiality, ID number, urgency reason, repeats,
supplements) and limited senders.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("work_orders") as batch:
        batch.add_column(sa.Column("confidential", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("contact_id_number", sa.String(32)))
        batch.add_column(sa.Column("urgent_reason", sa.String(64)))
        batch.add_column(sa.Column("repeat_count", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("escalated", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("supplements", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("contact_key", sa.String(64)))
        batch.create_index("ix_work_orders_contact_key", ["contact_key"])
    op.create_table(
        "sender_limits",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("sender_id", sa.String(128), nullable=False),
        sa.Column("strikes", sa.Integer, nullable=False),
        sa.Column("limited_until", TS),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("channel", "sender_id"),
    )


def downgrade() -> None:
    op.drop_table("sender_limits")
    with op.batch_alter_table("work_orders") as batch:
        batch.drop_index("ix_work_orders_contact_key")
        for name in ("contact_key", "supplements", "escalated", "repeat_count", "urgent_reason",
                     "contact_id_number", "confidential"):
            batch.drop_column(name)
