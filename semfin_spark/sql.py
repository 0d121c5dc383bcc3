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


def parse_as_of(text: str | None) -> dict[str, str]:
    """``--as-of``: one version or timestamp for every table, or ``table=point`` pairs.

    Examples:
        >>> parse_as_of("3")
        {'*': '3'}
        >>> parse_as_of("hub_models=2,model_fields=2026-12-01 02:00")
        {'hub_models': '2', 'model_fields': '2026-12-01 02:00'}
    """
    if not text:
        return {}
    if "=" not in text:
        return {"*": text.strip()}
    out = {}
    for item in text.split(","):
        table, sep, point = item.partition("=")
        if not sep or table.strip() not in TABLES or not point.strip():
            raise ValueError(f"--as-of {text!r}: expected VERSION, TIMESTAMP or TABLE=POINT,... "
                             f"with tables among {', '.join(TABLES)}")
        out[table.strip()] = point.strip()
    return out


def register_tables(spark: SparkSession, store: DeltaStore,
                    as_of: dict[str, str] | None = None) -> list[str]:
    """Register each existing table as a temporary view; return the registered names.

    Args:
        spark: the session.
        store: the warehouse.
        as_of: time travel, as :func:`parse_as_of` returns it: a point (a version number,
            else a timestamp) per table name, or for every table under ``"*"``.

    Raises:
        semfin_spark.delta.DeltaError: a table has no such version.

    Examples:
        >>> register_tables(spark, store)          # doctest: +SKIP
        ['hub_models', 'ingest_rejects', 'config_features', ...]
    """
    as_of = as_of or {}
    names = []
    for name, table in TABLES.items():
        if store.exists(table):
            point = as_of.get(name, as_of.get("*"))
            if point is None:
                frame = store.read(table)
            elif point.isdigit():
                frame = store.read(table, version=int(point))
            else:
                frame = store.read(table, timestamp=point)
            frame.createOrReplaceTempView(name)
            names.append(name)
    return names


def run_query(spark: SparkSession, store: DeltaStore, query: str,
              as_of: dict[str, str] | None = None) -> DataFrame:
    """The result of ``query`` (Spark SQL) with every table registered as a view.

    Raises:
        pyspark.errors.AnalysisException: the query names an unknown table or column.
    """
    register_tables(spark, store, as_of)
    return spark.sql(query)
