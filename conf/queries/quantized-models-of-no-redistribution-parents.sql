-- title: Quantized models whose parent's licence forbids redistributing derivatives
-- Quantizations (declared or imputed reuse method) of a parent under a no-derivatives
-- licence (CC BY-ND and the like): sharing adapted weights is not allowed at all.
SELECT e.child AS quantized_model,
       e.parent,
       p.value AS parent_license,
       l.family AS parent_family,
       c.value AS child_license,
       e.relation_source
FROM lineage_edges e
JOIN model_fields p ON p.model_id = e.parent AND p.field = 'license'
JOIN licenses l ON l.license = p.value
LEFT JOIN model_fields c ON c.model_id = e.child AND c.field = 'license'
WHERE e.relation = 'quantized' AND l.family = 'no-derivatives'
ORDER BY e.parent, e.child
