-- title: Base models with the most descendants
-- Models ranked by how many distinct models descend from them (children, their
-- children, and so on, along the declared lineage), with the deepest generation reached.
SELECT a.node AS model,
       count(DISTINCT b.node) AS descendants,
       max(b.position - a.position) AS generations
FROM lineage_chain_nodes a
JOIN lineage_chain_nodes b ON b.variant = a.variant AND b.chain = a.chain
                          AND b.position > a.position
WHERE a.variant = 'declared'
GROUP BY a.node
ORDER BY descendants DESC, model
LIMIT 25
