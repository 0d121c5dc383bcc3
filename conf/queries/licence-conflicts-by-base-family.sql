-- title: Licence conflicts by base-model family
-- Lineage edges whose child's licence breaks its parent's terms (imputed licences
-- included), grouped by the family they belong to: the root model of every chain that
-- runs through the edge. A child of a merge counts in each family it descends from.
SELECT n.root AS base_model,
       count(DISTINCT k.child || ' -> ' || k.parent) AS conflicting_edges,
       count(DISTINCT k.child) AS models_in_conflict,
       count(DISTINCT k.rule) AS rules_fired
FROM license_conflicts k
JOIN lineage_chain_nodes n ON n.variant = k.variant AND n.node = k.child
JOIN lineage_chain_nodes p ON p.variant = n.variant AND p.chain = n.chain
                          AND p.position = n.position - 1 AND p.node = k.parent
WHERE k.variant = 'with_imputed' AND k.verdict = 'conflict'
GROUP BY n.root
ORDER BY conflicting_edges DESC, base_model
LIMIT 25
