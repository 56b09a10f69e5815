"""Conversations, messages, work orders and their history.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("sender_id", sa.String(128), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("channel", "sender_id"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("conversation_id", sa.Integer, sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("provider_message_id", sa.String(128)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("payload", sa.JSON),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reply_to", sa.Integer, sa.ForeignKey("messages.id")),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("conversation_id", "direction", "provider_message_id"),
    )
    op.create_index("ix_messages_conversation_id", "messages", ["conversation_id"])
    op.create_index("ix_messages_status", "messages", ["status"])
    op.create_table(
        "work_orders",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("number", sa.String(32), unique=True),
        sa.Column("intake_id", sa.String(64), nullable=False, unique=True),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("conversation_id", sa.Integer, sa.ForeignKey("conversations.id")),
        sa.Column("category", sa.String(16), nullable=False),
        sa.Column("urgent", sa.Boolean, nullable=False),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("contact_phone", sa.String(32)),
        sa.Column("contact_name", sa.String(64)),
        sa.Column("anonymous", sa.Boolean, nullable=False),
        sa.Column("transcript", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("dispatch_due_at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("limit_working_days", sa.Integer, nullable=False),
    )
    op.create_table(
        "work_order_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("work_order_id", sa.Integer, sa.ForeignKey("work_orders.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_work_order_events_work_order_id", "work_order_events", ["work_order_id"])


def downgrade() -> None:
    op.drop_table("work_order_events")
    op.drop_table("work_orders")
    op.drop_table("messages")
    op.drop_table("conversations")
