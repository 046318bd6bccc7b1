"""index_build: where a generation's files are in the artefact store (key, size, sha256, each file's)

`path` stays: the folder the building process wrote (for old rows, the only way to their files).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL key: an older generation, loaded from `path` where that folder is readable
    op.add_column("index_build", sa.Column("artefact_key", sa.Text, nullable=True))
    op.add_column("index_build", sa.Column("artefact_size", sa.BigInteger, nullable=True))
    op.add_column("index_build", sa.Column("artefact_sha256", sa.Text, nullable=True))
    op.add_column("index_build", sa.Column("artefact_files", JSONB, nullable=True))  # name -> {size, sha256}


def downgrade() -> None:
    for column in ("artefact_files", "artefact_sha256", "artefact_size", "artefact_key"):
        op.drop_column("index_build", column)
