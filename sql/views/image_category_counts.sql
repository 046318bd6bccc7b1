-- View image_category_counts: per image and category, how many objects were detected (one row per pair).
-- Example: images with at least two faces:
--   SELECT uri FROM image_category_counts WHERE category = 'face' AND object_count >= 2;
CREATE OR REPLACE VIEW image_category_counts AS
SELECT r.image_id,
       i.uri,
       coalesce(c.name, '') AS category,
       count(*) AS object_count,
       max(r.prob) AS max_prob
FROM roi r
JOIN image i ON i.id = r.image_id
LEFT JOIN category c ON c.id = r.category_id
GROUP BY r.image_id, i.uri, coalesce(c.name, '');
