"""SQL over the warehouse: every SemFin Delta table as a view named after the table.

``semfin sql "SELECT license, count(*) FROM model_fields WHERE field = 'license' GROUP BY 1"``
runs a query on the current versions; :func:`register_tables` does the same for a notebook
or another Spark job. Outside Spark, DuckDB (``delta_scan``), delta-rs and Trino read the
same tables directly (see the README).
"""

from __future__ import annotations

import os
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from semfin_spark.delta import DeltaStore
from semfin_spark.schemas import TABLES


class ReadOnlyError(ValueError):
    """A statement that would write, run code or read outside the warehouse."""


# Logical plan nodes (as Spark's parser builds them) that only read. Anything else,
# every command included (INSERT, CREATE ... AS, DROP, SET, CACHE, ADD JAR), is refused.
_READ_NODES = frozenset({
    "Project", "Filter", "Aggregate", "Sort", "GlobalLimit", "LocalLimit", "Offset", "Tail",
    "Join", "LateralJoin", "Union", "Except", "Intersect", "Distinct", "Deduplicate",
    "SubqueryAlias", "UnresolvedRelation", "RelationTimeTravel", "UnresolvedWith",
    "CTERelationDef", "CTERelationRef", "WithCTE", "OneRowRelation", "LocalRelation",
    "UnresolvedInlineTable", "Generate", "Pivot", "Unpivot", "Sample", "Window",
    "WithWindowDefinition", "UnresolvedTableValuedFunction", "UnresolvedTVFAliases",
    "UnresolvedSubqueryColumnAliases", "UnresolvedHaving", "UnresolvedHint",
    "RepartitionByExpression", "Repartition", "Expand",
    # Listing and describing the views.
    "ShowTables", "ShowViews", "ShowColumns", "DescribeRelation", "DescribeColumn",
    "UnresolvedTableOrView", "UnresolvedNamespace", "CurrentNamespace$", "ResolvedNamespace",
})
# Functions that call arbitrary JVM code or read files by path.
_REFUSED_FUNCTIONS = frozenset({"reflect", "java_method", "try_reflect", "read_files"})
# ``format.`path``` relations: Spark reads the path with that data source.
_FILE_SOURCES = frozenset({"parquet", "json", "csv", "orc", "text", "avro", "binaryfile",
                           "xml", "delta", "file"})


def check_read_only(spark: SparkSession, query: str, warehouse: str) -> None:
    """Refuse ``query`` unless it only reads the warehouse.

    The statement is parsed (not run) by Spark's own parser and every node of its plan,
    common table expressions and subqueries included, must be a read; no function may
    call JVM methods (``reflect``, ``java_method``) or read files (``read_files``); a
    ``format.`path``` relation must be a Delta table inside the warehouse.

    Raises:
        ReadOnlyError: with what was refused and why.
        pyspark.errors.ParseException: the text is not one SQL statement.

    Examples:
        >>> check_read_only(spark, "DROP VIEW hub_models", "/w")   # doctest: +SKIP
        Traceback (most recent call last):
        ...
        semfin_spark.sql.ReadOnlyError: semfin sql is read-only: DropView is not a query
    """
    plan = spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    root = os.path.realpath(warehouse)
    seen = 0
    pending: list[Any] = [plan]
    while pending:
        node = pending.pop()
        seen += 1
        if seen > 100_000:
            raise ReadOnlyError("semfin sql: the statement's plan is too large to check")
        name = node.getClass().getSimpleName()
        if name not in _READ_NODES:
            raise ReadOnlyError(f"semfin sql is read-only: {name} is not a query (only SELECT, "
                                "WITH, SHOW TABLES and DESCRIBE are allowed)")
        if name == "UnresolvedRelation":
            _check_relation(list(_seq(node.multipartIdentifier())), root)
        elif name == "RelationTimeTravel":
            pending.append(node.relation())
        elif name == "UnresolvedTableValuedFunction":
            function = ".".join(_seq(node.name())).lower()
            if function.rsplit(".", 1)[-1] in _REFUSED_FUNCTIONS:
                raise ReadOnlyError(f"semfin sql: {function}() reads files; query the views")
        for expression in _seq(node.expressions()):
            _check_expression(expression)
        pending.extend(_seq(node.children()))
        pending.extend(_seq(node.innerChildren()))
        pending.extend(_seq(node.subqueries()))


def _seq(seq: Any) -> list[Any]:
    return [seq.apply(i) for i in range(seq.size())]


def _check_relation(parts: list[str], root: str) -> None:
    if len(parts) == 2 and parts[0].lower() in _FILE_SOURCES:
        path = parts[1][len("file:"):] if parts[1].startswith("file:") else parts[1]
        real = os.path.realpath(path)
        if parts[0].lower() != "delta" or os.path.commonpath([root, real]) != root:
            raise ReadOnlyError(f"semfin sql reads only the warehouse's tables: "
                                f"{parts[0]}.`{parts[1]}` is refused (query the views, or "
                                f"delta.`<table path>` inside {root})")


def _check_expression(expression: Any) -> None:
    pending = [expression]
    while pending:
        node = pending.pop()
        if node.getClass().getSimpleName() == "UnresolvedFunction":
            function = str(node.nameParts().last()).lower()
            if function in _REFUSED_FUNCTIONS:
                raise ReadOnlyError(f"semfin sql: {function}() is refused (it runs JVM code "
                                    "or reads files)")
        pending.extend(_seq(node.children()))


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

    Read-only: the statement is checked (:func:`check_read_only`) before Spark sees it.

    Raises:
        ReadOnlyError: the statement would write, run code or read outside the warehouse.
        MissingTableError: the query names a SemFin table the warehouse does not hold.
        pyspark.errors.AnalysisException: the query names an unknown table or column.
    """
    check_read_only(spark, query, store.warehouse)
    registered = register_tables(spark, store, as_of)
    try:
        return spark.sql(query)
    except Exception as exc:  # noqa: BLE001 - re-raised; a missing SemFin table gets a clear message
        missing = [name for name in TABLES if name not in registered
                   and f"`{name}`" in str(exc) and "TABLE_OR_VIEW_NOT_FOUND" in str(exc)]
        if missing:
            raise MissingTableError(
                f"table {missing[0]} is not in the warehouse {store.warehouse}: the stage that "
                "writes it has not run there (see `semfin tables`)") from None
        raise


class MissingTableError(LookupError):
    """A SemFin table the query needs is not (or no longer) in the warehouse."""
