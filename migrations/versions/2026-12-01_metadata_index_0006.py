"""image.metadata: a GIN index (jsonb_path_ops), for metadata filters (`@>`, containment)

A search whose filter few rows pass reads just those rows through it and ranks them exactly in Postgres
(simsearch.search.EXACT_FILTERED_MAX), and an analyst's `WHERE metadata @> '{...}'` uses it too. An image
with empty metadata adds nothing to it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_image_metadata ON image USING gin (metadata jsonb_path_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_image_metadata")
