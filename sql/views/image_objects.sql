-- View image_objects: one row per image with its detected objects (ROIs) and their categories.
--   objects: jsonb array of {roi_id, category, prob, bbox: [xmin, ymin, xmax, ymax], service}
--   categories: distinct category names; object_count: number of ROIs.
-- Example: SELECT uri, object_count, categories FROM image_objects WHERE 'cat' = ANY(categories);
CREATE OR REPLACE VIEW image_objects AS
SELECT i.id AS image_id,
       i.uri,
       i.width,
       i.height,
       i.sha256,
       i.metadata,
       i.created_at,
       count(r.id) AS object_count,
       coalesce(jsonb_agg(jsonb_build_object(
                    'roi_id', r.id, 'category', c.name, 'prob', r.prob,
                    'bbox', jsonb_build_array(r.bbox_xmin, r.bbox_ymin, r.bbox_xmax, r.bbox_ymax), 'service', s.name)
                ORDER BY r.id) FILTER (WHERE r.id IS NOT NULL), '[]'::jsonb) AS objects,
       coalesce(array_agg(DISTINCT c.name) FILTER (WHERE c.name IS NOT NULL), '{}'::text[]) AS categories
FROM image i
LEFT JOIN roi r ON r.image_id = i.id
LEFT JOIN category c ON c.id = r.category_id
LEFT JOIN service s ON s.id = r.service_id
GROUP BY i.id;
