"""WeChat access tokens shared by replicas when Redis is not configured.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "wechat_tokens",
        sa.Column("appid", sa.String(32), primary_key=True),
        sa.Column("token", sa.Text, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("wechat_tokens")
