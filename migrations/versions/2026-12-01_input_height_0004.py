"""service.input_height: DeepDetect's width x height may differ (NULL: square, input_size both ways)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # input_size stays the width; existing services are all square, so NULL keeps what they were
    op.add_column("service", sa.Column("input_height", sa.Integer, nullable=True))


def downgrade() -> None:
    op.drop_column("service", "input_height")
