"""SMS channel and satisfaction survey: callback dedupe, SMS records, surveys (timers), opt-outs, revisits.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "inbox_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("payload", sa.JSON),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("source", "key"),
    )
    op.create_table(
        "sms_records",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("outbox_id", sa.Integer, sa.ForeignKey("outbox.id")),
        sa.Column("part", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(16), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("provider_id", sa.String(128)),
        sa.Column("delivery", sa.String(16), nullable=False),
        sa.Column("delivery_error", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("reported_at", TS),
        sa.UniqueConstraint("outbox_id", "part"),
    )
    op.create_index("ix_sms_records_provider_id", "sms_records", ["provider_id"])
    op.create_table(
        "surveys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("work_order_id", sa.Integer, sa.ForeignKey("work_orders.id"), nullable=False),
        sa.Column("round", sa.Integer, nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("answer", sa.Text, nullable=False),
        sa.Column("send_at", TS, nullable=False),
        sa.Column("sent_at", TS),
        sa.Column("due_at", TS),
        sa.Column("rating", sa.String(24)),
        sa.Column("defaulted", sa.Boolean, nullable=False),
        sa.Column("rated_at", TS),
        sa.Column("corrections", sa.Integer, nullable=False),
        sa.Column("clarified", sa.Boolean, nullable=False),
        sa.Column("outcome", sa.String(16)),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("work_order_id", "round"),
    )
    for col in ("work_order_id", "phone", "status", "send_at", "due_at"):
        op.create_index(f"ix_surveys_{col}", "surveys", [col])
    op.create_table(
        "sms_optouts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("phone", sa.String(32), nullable=False, unique=True),
        sa.Column("text", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "revisits",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dedupe_key", sa.String(128), nullable=False, unique=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("work_order_id", sa.Integer, sa.ForeignKey("work_orders.id")),
        sa.Column("phone", sa.String(32)),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_revisits_work_order_id", "revisits", ["work_order_id"])
    op.create_index("ix_revisits_status", "revisits", ["status"])


def downgrade() -> None:
    for table in ("revisits", "sms_optouts", "surveys", "sms_records", "inbox_keys"):
        op.drop_table(table)
