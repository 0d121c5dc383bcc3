-- title: What changed since the previous night
-- What the last successful nightly changed: models added or changed on the Hub, models
-- gone from it, configs flattened again, values imputed, records rejected. Rows carry
-- their write time, so this reads the current tables only (`semfin sql --as-of` and
-- `semfin report` compare whole versions).
WITH last AS (  -- when the last successful nightly's first stage started
    SELECT min(started_at) AS started_at
    FROM runs
    WHERE run_id = (SELECT run_id FROM runs WHERE stage = 'nightly' AND status = 'succeeded'
                    ORDER BY ended_at DESC LIMIT 1)
)
SELECT 'models added or changed' AS change, count(*) AS rows_changed
FROM hub_models, last WHERE hub_models.ingested_at >= last.started_at
UNION ALL
SELECT 'models gone from the Hub', count(*)
FROM hub_models, last WHERE hub_models.deleted_at >= last.started_at
UNION ALL
SELECT 'configs flattened', count(*)
FROM flatten_state, last WHERE flatten_state.flattened_at >= last.started_at
UNION ALL
SELECT 'values imputed', count(*)
FROM model_fields, last
WHERE model_fields.value_source = 'imputed' AND model_fields.imputed_at >= last.started_at
UNION ALL
SELECT 'records rejected', count(*)
FROM ingest_rejects, last WHERE ingest_rejects.rejected_at >= last.started_at
