"""SemFin on Spark: fill the Hub's missing model metadata from config.json fingerprints.

Stages, in the order data flows: ingest, flatten, features, train, evaluate, impute,
lineage, licences, report, sql, nightly. Each reads and writes Delta tables through
:mod:`semfin_spark.delta`; graphs go through :mod:`semfin_spark.graph`.
"""

import os as _os

# huggingface_hub 2.x asks huggingface.co for "agent harnesses" whenever it builds request
# headers, whatever endpoint it is given, unless telemetry is off before it is imported.
# A crawl must talk to HF_ENDPOINT only.
_os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
