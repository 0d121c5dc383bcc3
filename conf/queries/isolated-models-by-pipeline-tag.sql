-- title: Isolated models by pipeline tag
-- Models with no lineage at all (no parent, no child), by pipeline tag (declared or
-- imputed): only their own fingerprint can say what they are.
SELECT coalesce(f.value, '(unknown)') AS pipeline_tag,
       count(*) AS isolated_models,
       sum(CASE WHEN f.value_source = 'imputed' THEN 1 ELSE 0 END) AS tag_imputed
FROM lineage_components c
JOIN hub_models h ON h.id = c.model_id
LEFT JOIN model_fields f ON f.model_id = c.model_id AND f.field = 'pipeline_tag'
WHERE c.component_size = 1 AND NOT c.external AND h.deleted_at IS NULL
GROUP BY coalesce(f.value, '(unknown)')
ORDER BY isolated_models DESC, pipeline_tag
