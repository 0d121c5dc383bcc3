-- title: Chains that carry a licence conflict
-- Complete licence chains (imputed licences included) on which some child's licence
-- breaks its parent's terms (`license_conflict`), deepest first: the root-to-leaf paths
-- an AI bill of materials must flag, with their licence and reuse patterns.
SELECT depth, root, leaf, license_pattern, pattern
FROM lineage_chains
WHERE variant = 'with_imputed' AND license_pattern IS NOT NULL AND license_conflict
ORDER BY depth DESC, root, leaf, path
LIMIT 25
