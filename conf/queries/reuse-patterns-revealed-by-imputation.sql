-- title: Reuse patterns only imputation revealed
-- Complete reuse-method patterns (every step known) that appear once imputed reuse
-- methods fill the gaps, and on no chain of declared values alone.
SELECT pattern, count(*) AS chains, max(depth) AS depth
FROM lineage_chains
WHERE variant = 'with_imputed' AND pattern IS NOT NULL
  AND pattern NOT IN (SELECT pattern FROM lineage_chains
                      WHERE variant = 'declared' AND pattern IS NOT NULL)
GROUP BY pattern
ORDER BY chains DESC, pattern
