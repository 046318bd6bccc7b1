"""initial schema: service, image, category, roi, embedding, index_build; sql/ views and functions

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import JSONB

from simsearch.store.sqlfiles import read_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# The SQL as this revision made it. A later revision that changes a function carries the new text (it
# reads sql/), so the text here stays frozen and a database migrated step by step matches a fresh one.
JOIN_HITS_V1 = """CREATE FUNCTION simsearch_join_hits(
    p_service_id integer, p_query integer[], p_embedding_id bigint[], p_dist real[])
RETURNS TABLE (query_no integer, embedding_id bigint, dist real, image_id bigint, roi_id bigint, uri text,
               width integer, height integer, sha256 text, metadata jsonb)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT h.q, e.id, h.d, i.id, e.roi_id, i.uri, i.width, i.height, i.sha256, i.metadata
    FROM unnest(p_query, p_embedding_id, p_dist) AS h(q, eid, d)
    JOIN embedding e ON e.id = h.eid AND e.service_id = p_service_id
    JOIN image i ON i.id = e.image_id
    ORDER BY h.q, h.d, e.id
$$"""


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "service",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, server_default="extractor", nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("weights", sa.Text, nullable=False),
        sa.Column("layer", sa.Text, nullable=False),
        sa.Column("input_size", sa.Integer, nullable=False),
        sa.Column("metric", sa.Text, nullable=False),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("index_settings", JSONB, server_default="{}", nullable=False),
        sa.Column("description", sa.Text, server_default="", nullable=False),
        sa.Column("params", JSONB, server_default="{}", nullable=False),
        _created_at(),
        sa.CheckConstraint("kind IN ('extractor', 'detector')", name="kind"),
        sa.CheckConstraint("metric IN ('l2', 'cosine')", name="metric"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "image",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("uri", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("metadata", JSONB, server_default="{}", nullable=False),
        _created_at(),
        sa.UniqueConstraint("uri"),
    )
    op.create_index("ix_image_sha256", "image", ["sha256"])
    op.create_table(
        "category",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "roi",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("image_id", sa.BigInteger, sa.ForeignKey("image.id", ondelete="CASCADE"), nullable=False),
        sa.Column("service_id", sa.Integer, sa.ForeignKey("service.id", ondelete="CASCADE"), nullable=False),
        sa.Column("category_id", sa.Integer, sa.ForeignKey("category.id", ondelete="SET NULL")),
        sa.Column("prob", sa.Float, nullable=False),
        sa.Column("bbox_xmin", sa.Float, nullable=False),
        sa.Column("bbox_ymin", sa.Float, nullable=False),
        sa.Column("bbox_xmax", sa.Float, nullable=False),
        sa.Column("bbox_ymax", sa.Float, nullable=False),
    )
    op.create_index("ix_roi_image_id", "roi", ["image_id"])
    op.create_table(
        "embedding",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("service_id", sa.Integer, sa.ForeignKey("service.id", ondelete="CASCADE"), nullable=False),
        sa.Column("image_id", sa.BigInteger, sa.ForeignKey("image.id", ondelete="CASCADE"), nullable=False),
        sa.Column("roi_id", sa.BigInteger, sa.ForeignKey("roi.id", ondelete="CASCADE")),
        sa.Column("vector", Vector(), nullable=False),
        _created_at(),
        sa.UniqueConstraint("service_id", "image_id", "roi_id", postgresql_nulls_not_distinct=True),
    )
    op.create_index("ix_embedding_service_id_id", "embedding", ["service_id", "id"])
    op.create_index("ix_embedding_image_id", "embedding", ["image_id"])
    op.create_table(
        "index_build",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("service_id", sa.Integer, sa.ForeignKey("service.id", ondelete="CASCADE"), nullable=False),
        sa.Column("backend", sa.Text, nullable=False),
        sa.Column("index_type", sa.Text, nullable=False),
        sa.Column("params", JSONB, server_default="{}", nullable=False),
        sa.Column("vector_count", sa.BigInteger, server_default="0", nullable=False),
        sa.Column("watermark", sa.BigInteger, server_default="0", nullable=False),
        sa.Column("path", sa.Text),
        sa.Column("status", sa.Text, server_default="building", nullable=False),
        sa.Column("timings", JSONB, server_default="{}", nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('building', 'ready', 'failed', 'retired')", name="status"),
    )
    op.create_index("ix_index_build_service_id_status", "index_build", ["service_id", "status"])
    op.execute(read_sql("views/image_objects.sql"))
    op.execute(JOIN_HITS_V1)


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS simsearch_join_hits(integer, integer[], bigint[], real[])")
    op.execute("DROP VIEW IF EXISTS image_objects")
    for table in ["index_build", "embedding", "roi", "category", "image", "service"]:
        op.drop_table(table)
    # The vector extension stays: other schemas in this database may use it.
