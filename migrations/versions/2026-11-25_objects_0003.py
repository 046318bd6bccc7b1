"""objects: roi.created_at, roi indexes, join_hits with boxes and category filters, rank_images, object views

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from simsearch.store.sqlfiles import read_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JOIN_HITS_V2 = "simsearch_join_hits(integer, integer[], bigint[], real[], jsonb)"
_JOIN_HITS_V3 = "simsearch_join_hits(integer, integer[], bigint[], real[], jsonb, text[], boolean)"
_RANK_IMAGES = "simsearch_rank_images(integer, integer[], bigint[], real[], text, text[], jsonb, integer)"
SQL_FILES = [
    "functions/join_hits.sql",
    "functions/rank_images.sql",
    "views/objects.sql",
    "views/image_category_counts.sql",
]


def upgrade() -> None:
    # "objects indexed per day" needs the time a box was stored
    op.add_column(
        "roi", sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)
    )
    # re-indexing replaces an image's boxes per detector; analysts group by category
    op.create_index("ix_roi_service_id_image_id", "roi", ["service_id", "image_id"])
    op.create_index("ix_roi_category_id", "roi", ["category_id"])
    op.create_index("ix_embedding_roi_id", "embedding", ["roi_id"])
    op.execute(f"DROP FUNCTION IF EXISTS {_JOIN_HITS_V2}")
    for name in SQL_FILES:
        op.execute(read_sql(name))


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS image_category_counts")
    op.execute("DROP VIEW IF EXISTS objects")
    op.execute(f"DROP FUNCTION IF EXISTS {_RANK_IMAGES}")
    op.execute(f"DROP FUNCTION IF EXISTS {_JOIN_HITS_V3}")
    op.execute(
        """CREATE FUNCTION simsearch_join_hits(
            p_service_id integer, p_query integer[], p_embedding_id bigint[], p_dist real[],
            p_filter jsonb DEFAULT NULL)
        RETURNS TABLE (query_no integer, embedding_id bigint, dist real, image_id bigint, roi_id bigint, uri text,
                       width integer, height integer, sha256 text, metadata jsonb)
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT h.q, e.id, h.d, i.id, e.roi_id, i.uri, i.width, i.height, i.sha256, i.metadata
            FROM unnest(p_query, p_embedding_id, p_dist) AS h(q, eid, d)
            JOIN embedding e ON e.id = h.eid AND e.service_id = p_service_id
            JOIN image i ON i.id = e.image_id
            WHERE p_filter IS NULL OR i.metadata @> p_filter
            ORDER BY h.q, h.d, e.id
        $$"""
    )
    op.drop_index("ix_embedding_roi_id", table_name="embedding")
    op.drop_index("ix_roi_category_id", table_name="roi")
    op.drop_index("ix_roi_service_id_image_id", table_name="roi")
    op.drop_column("roi", "created_at")
