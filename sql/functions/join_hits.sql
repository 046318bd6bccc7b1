-- Function simsearch_join_hits(service_id, query_no[], embedding_id[], dist[], filter jsonb = NULL,
--                              categories text[] = NULL, objects_only boolean = false):
-- joins kNN hits (one row per query number, embedding id and distance, as parallel arrays) to the
-- stored images and, for object vectors, to their box (ROI) and category. Hits whose embedding or
-- image is gone (deleted since the index was built) drop out, and so do images whose metadata does not
-- contain `filter` (jsonb containment, e.g. '{"label":"cat"}'), objects whose category is not in
-- `categories`, and whole-image vectors when `objects_only`. Rows come back per query, nearest first.
-- bbox is [xmin, ymin, xmax, ymax] in source-image pixels (ymin = top); NULL for whole-image vectors.
-- Example: SELECT * FROM simsearch_join_hits(1, ARRAY[0,0], ARRAY[17,42]::bigint[], ARRAY[0.1,0.3]::real[]);
CREATE OR REPLACE FUNCTION simsearch_join_hits(
    p_service_id integer, p_query integer[], p_embedding_id bigint[], p_dist real[], p_filter jsonb DEFAULT NULL,
    p_categories text[] DEFAULT NULL, p_objects_only boolean DEFAULT false)
RETURNS TABLE (query_no integer, embedding_id bigint, dist real, image_id bigint, roi_id bigint, uri text,
               width integer, height integer, sha256 text, metadata jsonb, category text,
               prob double precision, bbox double precision[])
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT h.q, e.id, h.d, i.id, e.roi_id, i.uri, i.width, i.height, i.sha256, i.metadata, c.name, r.prob,
           CASE WHEN r.id IS NOT NULL THEN ARRAY[r.bbox_xmin, r.bbox_ymin, r.bbox_xmax, r.bbox_ymax] END
    FROM unnest(p_query, p_embedding_id, p_dist) AS h(q, eid, d)
    JOIN embedding e ON e.id = h.eid AND e.service_id = p_service_id
    JOIN image i ON i.id = e.image_id
    LEFT JOIN roi r ON r.id = e.roi_id
    LEFT JOIN category c ON c.id = r.category_id
    WHERE (p_filter IS NULL OR i.metadata @> p_filter)
      AND (p_categories IS NULL OR c.name = ANY(p_categories))
      AND (NOT p_objects_only OR e.roi_id IS NOT NULL)
    ORDER BY h.q, h.d, e.id
$$;
