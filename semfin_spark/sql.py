"""SQL over the warehouse: every SemFin Delta table as a view named after the table.

``semfin sql "SELECT license, count(*) FROM model_fields WHERE field = 'license' GROUP BY 1"``
runs a query on the current versions; :func:`register_tables` does the same for a notebook
or another Spark job. Outside Spark, DuckDB (``delta_scan``), delta-rs and Trino read the
same tables directly (see the README).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession

from semfin_spark.delta import DeltaStore
from semfin_spark.schemas import TABLES


def register_tables(spark: SparkSession, store: DeltaStore) -> list[str]:
    """Register each existing table as a temporary view; return the registered names.

    Examples:
        >>> register_tables(spark, store)          # doctest: +SKIP
        ['hub_models', 'ingest_rejects', 'config_features', ...]
    """
    names = []
    for name, table in TABLES.items():
        if store.exists(table):
            store.read(table).createOrReplaceTempView(name)
            names.append(name)
    return names


def run_query(spark: SparkSession, store: DeltaStore, query: str) -> DataFrame:
    """The result of ``query`` (Spark SQL) with every table registered as a view.

    Raises:
        pyspark.errors.AnalysisException: the query names an unknown table or column.
    """
    register_tables(spark, store)
    return spark.sql(query)
