"""SemFin on Spark: fill the Hub's missing model metadata from config.json fingerprints.

Stages, in the order data flows: ingest, flatten, features, train, evaluate, impute,
lineage, licences, report, sql, nightly. Each reads and writes Delta tables through
:mod:`semfin_spark.delta`; graphs go through :mod:`semfin_spark.graph`.
"""

__version__ = "0.1.0"
