-- View objects: one row per detected object (ROI) with its image, category, box and the detector
-- service that found it; `embedded_by` names the services that store a vector of it.
-- Example: SELECT category, count(*) FROM objects GROUP BY category ORDER BY count(*) DESC;
CREATE OR REPLACE VIEW objects AS
SELECT r.id AS roi_id,
       r.image_id,
       i.uri,
       c.name AS category,
       r.prob,
       r.bbox_xmin,
       r.bbox_ymin,
       r.bbox_xmax,
       r.bbox_ymax,
       r.bbox_xmax - r.bbox_xmin AS bbox_width,
       r.bbox_ymax - r.bbox_ymin AS bbox_height,
       s.name AS detector,
       r.created_at,
       coalesce((SELECT array_agg(es.name ORDER BY es.name) FROM embedding e JOIN service es ON es.id = e.service_id
                 WHERE e.roi_id = r.id), '{}'::text[]) AS embedded_by,
       i.metadata
FROM roi r
JOIN image i ON i.id = r.image_id
JOIN service s ON s.id = r.service_id
LEFT JOIN category c ON c.id = r.category_id;
