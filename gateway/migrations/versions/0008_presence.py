"""Agents' presence: when each agent's console last spoke to the gateway (online = recently).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agents", sa.Column("last_seen_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("agents") as batch:
        batch.drop_column("last_seen_at")
