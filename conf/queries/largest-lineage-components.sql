-- title: The largest lineage components
-- Connected components of the lineage graph by size (named by their smallest node id),
-- with how many of their nodes are parents not on the Hub and how many licence
-- conflicts (imputed licences included) they hold.
WITH sizes AS (
    SELECT component_id,
           count(*) AS nodes,
           sum(CASE WHEN external THEN 1 ELSE 0 END) AS external_parents
    FROM lineage_components
    GROUP BY component_id
), conflicts AS (
    SELECT c.component_id, count(*) AS licence_conflicts
    FROM license_conflicts k
    JOIN lineage_components c ON c.model_id = k.child
    WHERE k.variant = 'with_imputed' AND k.verdict = 'conflict'
    GROUP BY c.component_id
)
SELECT s.component_id, s.nodes, s.external_parents,
       coalesce(k.licence_conflicts, 0) AS licence_conflicts
FROM sizes s
LEFT JOIN conflicts k ON k.component_id = s.component_id
ORDER BY s.nodes DESC, s.component_id
LIMIT 20
