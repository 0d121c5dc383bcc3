-- title: Models whose licence was imputed with confidence above 0.9
-- Models that declare no licence and were given one by the licence classifier with a
-- probability above 0.9, with the registered model (and version) that imputed it.
SELECT model_id,
       imputed_value AS license,
       round(imputed_confidence, 4) AS confidence,
       imputed_model,
       imputed_model_version
FROM model_fields
WHERE field = 'license' AND value_source = 'imputed' AND imputed_confidence > 0.9
ORDER BY imputed_confidence DESC, model_id
