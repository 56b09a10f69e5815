"""One-time codes that prove a citizen owns a work order before a follow-up acts on it (#14).

Revision ID: 0007_trust14_followup_codes
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_trust14_followup_codes"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "followup_codes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("conversation_id", sa.Integer, sa.ForeignKey("conversations.id"), nullable=False),
        sa.Column("contact_key", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(128), nullable=False),
        sa.Column("action", sa.JSON, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("verified_at", TS),
    )
    op.create_index("ix_followup_codes_conversation_id", "followup_codes", ["conversation_id"])
    op.create_index("ix_followup_codes_contact_key", "followup_codes", ["contact_key"])


def downgrade() -> None:
    op.drop_table("followup_codes")
