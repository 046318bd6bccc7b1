"""API: services can be detached (DeepDetect's clear=mem) and re-attached; join_hits takes a metadata filter

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_OLD_SIGNATURE = "simsearch_join_hits(integer, integer[], bigint[], real[])"
# frozen: revision 0003 changed sql/functions/join_hits.sql (see 0001)
JOIN_HITS_V2 = """CREATE FUNCTION simsearch_join_hits(
    p_service_id integer, p_query integer[], p_embedding_id bigint[], p_dist real[], p_filter jsonb DEFAULT NULL)
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


def upgrade() -> None:
    # set: the service was removed from the API with clear=mem; its vectors and index files stay.
    op.add_column("service", sa.Column("detached_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(f"DROP FUNCTION IF EXISTS {_OLD_SIGNATURE}")
    op.execute(JOIN_HITS_V2)
    # keyset pagination of a service's images walks embedding by (service_id, image_id)
    op.create_index("ix_embedding_service_id_image_id", "embedding", ["service_id", "image_id"])


def downgrade() -> None:
    op.drop_index("ix_embedding_service_id_image_id", table_name="embedding")
    op.execute("DROP FUNCTION IF EXISTS simsearch_join_hits(integer, integer[], bigint[], real[], jsonb)")
    op.execute(
        """CREATE FUNCTION simsearch_join_hits(
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
    )
    op.drop_column("service", "detached_at")
