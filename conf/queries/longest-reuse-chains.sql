-- title: The longest reuse chains
-- Root-to-leaf lineage paths with the most steps, with their reuse methods and licences
-- (imputed values included; a null pattern means a step is still unknown).
SELECT depth, root, leaf, pattern, license_pattern, truncated
FROM lineage_chains
WHERE variant = 'with_imputed'
ORDER BY depth DESC, root, leaf, pattern
LIMIT 25
