-- Function simsearch_rank_images: "images with the most similar objects".
--
-- Takes kNN hits of query objects (parallel arrays: query object number, embedding id, distance), as
-- the API's object search makes them, or as any SQL query can (e.g. pgvector's <-> over embedding).
-- Each hit counts for the image its stored object belongs to; images are ranked by `score`:
--   mean           mean distance over the image's hits, ascending (DeepDetect's multibox_rois)
--   min            smallest distance of any hit, ascending
--   count          how many distinct query objects hit the image, descending (ties: mean ascending)
--   sum_similarity sum over the image's hits of 1 / (1 + distance), descending
-- Hits whose rows are gone drop out; `categories` keeps only stored objects of those categories;
-- `filter` keeps only images whose metadata contains it. `matches` lists every hit of the image:
-- [{query, embedding_id, roi_id, dist, bbox: [xmin, ymin, xmax, ymax], category, prob}], by query then
-- distance. A hit repeated for the same query and embedding counts once (its smallest distance).
-- Example (images with the most faces similar to the faces of image 7, in service 'faces'):
--   SELECT uri, score, query_count FROM simsearch_rank_images(
--       (SELECT id FROM service WHERE name = 'faces'), q, ids, d, 'count') ...  (see README, "SQL")
CREATE OR REPLACE FUNCTION simsearch_rank_images(
    p_service_id integer, p_query integer[], p_embedding_id bigint[], p_dist real[],
    p_score text DEFAULT 'mean', p_categories text[] DEFAULT NULL, p_filter jsonb DEFAULT NULL,
    p_limit integer DEFAULT 10)
RETURNS TABLE (image_id bigint, uri text, width integer, height integer, sha256 text, metadata jsonb,
               score double precision, hit_count integer, query_count integer, mean_dist double precision,
               min_dist double precision, matches jsonb)
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
#variable_conflict use_column
BEGIN
    IF p_score IS NULL OR p_score NOT IN ('mean', 'min', 'count', 'sum_similarity') THEN
        RAISE EXCEPTION 'unknown score %: use mean, min, count or sum_similarity', p_score
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH hits AS (
        SELECT h.q, h.eid, min(h.d)::double precision AS d
        FROM unnest(p_query, p_embedding_id, p_dist) AS h(q, eid, d)
        GROUP BY h.q, h.eid
    ), joined AS (
        SELECT e.image_id, h.q, h.eid, h.d, e.roi_id, c.name AS category, r.prob,
               CASE WHEN r.id IS NOT NULL THEN ARRAY[r.bbox_xmin, r.bbox_ymin, r.bbox_xmax, r.bbox_ymax] END AS bbox
        FROM hits h
        JOIN embedding e ON e.id = h.eid AND e.service_id = p_service_id
        LEFT JOIN roi r ON r.id = e.roi_id
        LEFT JOIN category c ON c.id = r.category_id
        WHERE p_categories IS NULL OR c.name = ANY(p_categories)
    ), per_image AS (
        SELECT j.image_id,
               count(*)::integer AS hit_count,
               count(DISTINCT j.q)::integer AS query_count,
               avg(j.d) AS mean_dist,
               min(j.d) AS min_dist,
               sum(1.0 / (1.0 + j.d)) AS sum_similarity,
               jsonb_agg(jsonb_build_object('query', j.q, 'embedding_id', j.eid, 'roi_id', j.roi_id, 'dist', j.d,
                                            'bbox', j.bbox, 'category', j.category, 'prob', j.prob)
                         ORDER BY j.q, j.d, j.eid) AS matches
        FROM joined j
        GROUP BY j.image_id
    ), scored AS (
        SELECT p.*, CASE p_score WHEN 'mean' THEN p.mean_dist
                                 WHEN 'min' THEN p.min_dist
                                 WHEN 'count' THEN p.query_count::double precision
                                 ELSE p.sum_similarity END AS score
        FROM per_image p
    )
    SELECT i.id, i.uri, i.width, i.height, i.sha256, i.metadata, s.score, s.hit_count, s.query_count,
           s.mean_dist, s.min_dist, s.matches
    FROM scored s
    JOIN image i ON i.id = s.image_id
    WHERE p_filter IS NULL OR i.metadata @> p_filter
    ORDER BY CASE WHEN p_score IN ('count', 'sum_similarity') THEN -s.score ELSE s.score END, s.mean_dist, i.id
    LIMIT p_limit;
END
$$;
