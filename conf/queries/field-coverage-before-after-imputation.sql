-- title: Share of each field filled, before and after imputation
-- Per field: how many models declare a value, how many were given one by imputation, and
-- the share of models with a value before and after.
SELECT field,
       count(*) AS models,
       sum(CASE WHEN value_source = 'declared' THEN 1 ELSE 0 END) AS declared,
       sum(CASE WHEN value_source = 'imputed' THEN 1 ELSE 0 END) AS imputed,
       round(100.0 * sum(CASE WHEN value_source = 'declared' THEN 1 ELSE 0 END) / count(*), 1)
           AS filled_before_pct,
       round(100.0 * sum(CASE WHEN value IS NOT NULL THEN 1 ELSE 0 END) / count(*), 1)
           AS filled_after_pct
FROM model_fields
GROUP BY field
ORDER BY field
