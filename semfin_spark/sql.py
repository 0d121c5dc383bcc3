"""SQL over the warehouse: every SemFin Delta table as a view named after the table.

Two engines behind one small interface (:class:`SparkEngine` here, and
:class:`semfin_spark.sql_duckdb.DuckDBEngine`): each registers the tables (at their current
versions, or at the versions ``--as-of`` names), the derived views :data:`DERIVED_VIEWS`,
and answers :meth:`query` with a :class:`Result`. ``semfin sql`` picks DuckDB on the
embedded default (it answers in a second, with no JVM to start) and Spark SQL under
spark-submit or with ``--engine spark``. Both are read-only: a statement that would write,
drop, attach, install, copy to a file or read files outside the warehouse is refused with
:class:`ReadOnlyError` before anything runs.

The engine-agnostic parts live here: splitting a script into statements, the named queries
of ``conf/queries/`` (written in the SQL both engines share), ``--as-of`` and the output
formats. Outside ``semfin``, DuckDB (``delta_scan``), delta-rs and Trino read the same
tables directly (see the README).
"""

from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from semfin_spark.delta import DeltaStore


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
    from semfin_spark.schemas import TABLES

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
    from semfin_spark.schemas import TABLES

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
    register_derived_views(spark, registered)
    return _execute(spark, store, query, registered)


def _execute(spark: SparkSession, store: DeltaStore, query: str,
             registered: Sequence[str]) -> DataFrame:
    from semfin_spark.schemas import TABLES

    try:
        return spark.sql(query)
    except Exception as exc:  # noqa: BLE001 - re-raised; a missing SemFin table gets a clear message
        missing = [name for name in TABLES if name not in registered
                   and f"`{name}`" in str(exc) and "TABLE_OR_VIEW_NOT_FOUND" in str(exc)]
        if missing:
            raise missing_table(missing[0], store.warehouse) from None
        raise


def missing_table(name: str, warehouse: str) -> "MissingTableError":
    """The error for a query naming a SemFin table the warehouse does not (yet) hold."""
    return MissingTableError(f"table {name} is not in the warehouse {warehouse}: the stage "
                             "that writes it has not run there (see `semfin tables`)")


class MissingTableError(LookupError):
    """A SemFin table the query needs is not (or no longer) in the warehouse."""


class UnknownQueryError(ValueError):
    """``--query NAME`` names no query of ``conf/queries/``."""


# ------------------------------------------------------------------ results and formats

@dataclass(frozen=True)
class Result:
    """A query's answer: column names, the rows (at most the limit asked for), and whether
    the query had more rows than that."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False


class Engine(Protocol):
    """What ``semfin sql`` needs of an engine: the views it registered, and answers."""

    name: str

    def views(self) -> list[str]: ...

    def query(self, statement: str, limit: int) -> Result: ...

    def add_previous_views(self, versions: dict[str, int | None]) -> None: ...


def _plain(value: Any) -> Any:
    """A cell as JSON would hold it: timestamps in ISO 8601, decimals as numbers, Spark
    rows and structs as objects, arrays as lists."""
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if hasattr(value, "asDict"):
        return {k: _plain(v) for k, v in value.asDict().items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    plain = _plain(value)
    if plain is None:
        return "NULL"
    if isinstance(plain, float):
        return repr(round(plain, 6))
    if isinstance(plain, (list, dict)):
        return json.dumps(plain, ensure_ascii=False)
    return str(plain)


def format_result(result: Result, fmt: str) -> str:
    """The rows as text: ``table`` (aligned columns), ``csv`` (with a header) or ``json``
    (one object per line).

    Examples:
        >>> r = Result(["field", "n"], [("license", 3), ("model_type", None)])
        >>> print(format_result(r, "table"))
        field      | n
        -----------+-----
        license    | 3
        model_type | NULL
        (2 rows)
        >>> print(format_result(r, "json"))
        {"field": "license", "n": 3}
        {"field": "model_type", "n": null}
    """
    if fmt == "json":
        return "\n".join(json.dumps(dict(zip(result.columns, map(_plain, row))),
                                    ensure_ascii=False) for row in result.rows)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows([("" if v is None else _cell(v)) for v in row] for row in result.rows)
        return buffer.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}: table, csv or json")
    cells = [[_cell(v) for v in row] for row in result.rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(result.columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(result.columns, widths)).rstrip(),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    more = ", more not shown (raise --limit)" if result.truncated else ""
    lines.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''}{more})")
    return "\n".join(lines)


# ------------------------------------------------------------------ statements

def split_statements(script: str) -> list[str]:
    """The statements of a script, split at semicolons outside quotes and comments.

    Examples:
        >>> split_statements("SELECT ';' AS s; -- a; comment\\nSELECT 2;\\n")
        ["SELECT ';' AS s", '-- a; comment\\nSELECT 2']
        >>> split_statements("  ;  ")
        []
    """
    statements, current, i, quote = [], [], 0, ""
    while i < len(script):
        ch = script[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
            current.append(ch)
        elif script.startswith("--", i):
            end = script.find("\n", i)
            end = len(script) if end < 0 else end
            current.append(script[i:end])
            i = end
            continue
        elif script.startswith("/*", i):
            end = script.find("*/", i + 2)
            end = len(script) if end < 0 else end + 2
            current.append(script[i:end])
            i = end
            continue
        elif ch == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    without = re.sub(r"--[^\n]*|/\*.*?(\*/|$)", "", statement, flags=re.S)
    return bool(without.strip())


# ------------------------------------------------------------------ named queries

@dataclass(frozen=True)
class NamedQuery:
    """A query of ``conf/queries/<name>.sql``: its ``-- title:`` line, the comment lines
    after it (what it answers and how), and the statement."""

    name: str
    title: str
    description: str
    text: str


def named_queries(conf_dir: str | os.PathLike[str]) -> dict[str, NamedQuery]:
    """Every named query of ``<conf_dir>/queries/``, by name (the file name without
    ``.sql``), in name order."""
    folder = Path(conf_dir) / "queries"
    out = {}
    for path in sorted(folder.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        header = []
        for line in text.splitlines():
            if not line.startswith("--"):
                break
            header.append(line[2:].strip())
        title = header[0].removeprefix("title:").strip() if header else path.stem
        out[path.stem] = NamedQuery(path.stem, title, " ".join(header[1:]).strip(), text.strip())
    return out


def named_query(conf_dir: str | os.PathLike[str], name: str) -> NamedQuery:
    """The named query ``name``.

    Raises:
        UnknownQueryError: no such query; the message lists the ones there are.
    """
    queries = named_queries(conf_dir)
    if name not in queries:
        raise UnknownQueryError(f"no named query {name!r}; there are: {', '.join(queries)} "
                                "(semfin sql --list)")
    return queries[name]


# ------------------------------------------------------------------ derived views

DERIVED_VIEWS = {
    "licenses": "every licence id SemFin knows, with its family (conf/licenses.yaml's terms)",
    "lineage_chain_nodes": "lineage_chains with one row per model on each chain: variant, "
                           "chain (the path joined with ' > '), root, leaf, pattern, "
                           "license_pattern, position (0 at the root), node",
}
"""Views both engines add beside the tables, so the named queries need no engine-specific
SQL (array explosion is spelled differently in Spark and DuckDB)."""


def license_rows() -> list[tuple[str, str]]:
    """(licence id, family) for every licence of :data:`semfin_spark.licenses.LICENSES`."""
    from semfin_spark.licenses import LICENSES

    return sorted((license_id, family) for license_id, (family, _) in LICENSES.items())


def register_derived_views(spark: SparkSession, registered: Sequence[str]) -> list[str]:
    """Add :data:`DERIVED_VIEWS` to the session (``lineage_chain_nodes`` when
    ``lineage_chains`` is registered); return their names."""
    spark.createDataFrame(license_rows(), "license string, family string") \
        .createOrReplaceTempView("licenses")
    names = ["licenses"]
    if "lineage_chains" in registered:
        spark.sql("""
            SELECT variant, array_join(path, ' > ') AS chain, root, leaf, pattern,
                   license_pattern, position, node
            FROM lineage_chains LATERAL VIEW posexplode(path) p AS position, node
        """).createOrReplaceTempView("lineage_chain_nodes")
        names.append("lineage_chain_nodes")
    return names


def duckdb_available() -> bool:
    """Whether the DuckDB engine can run here (duckdb, deltalake and pyarrow installed)."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("duckdb", "deltalake", "pyarrow"))


def _table_names() -> list[str]:
    from semfin_spark.schemas import TABLES

    return list(TABLES)


class SparkEngine:
    """Spark SQL over the warehouse (:func:`run_query`), on the session given."""

    name = "spark"

    def __init__(self, spark: SparkSession, store: DeltaStore,
                 as_of: dict[str, str] | None = None) -> None:
        self.spark, self.store, self.as_of = spark, store, as_of or {}
        self._views = register_tables(spark, store, self.as_of)
        self._views += register_derived_views(spark, self._views)

    def views(self) -> list[str]:
        return list(self._views)

    def add_previous_views(self, versions: dict[str, int | None]) -> None:
        """``previous_<table>`` for each table: the table at ``versions[table]``, empty
        where it had no version then."""
        for name in [v for v in self._views if v in _table_names()]:
            version = versions.get(name)
            frame = (self.store.read(name, version=version) if version is not None
                     else self.spark.table(name).where("false"))
            frame.createOrReplaceTempView(f"previous_{name}")
            self._views.append(f"previous_{name}")

    def query(self, statement: str, limit: int) -> Result:
        check_read_only(self.spark, statement, self.store.warehouse)
        frame = _execute(self.spark, self.store, statement, self._views)
        rows = frame.limit(limit + 1).collect()
        return Result(list(frame.columns), [tuple(r) for r in rows[:limit]], len(rows) > limit)

    @property
    def query_errors(self) -> tuple[type[BaseException], ...]:
        """What a wrong statement raises (syntax, unknown column): reported, not a crash."""
        from pyspark.errors import PySparkException

        return (PySparkException,)


# ------------------------------------------------------------------ scripts and the shell

SHELL_HELP = """\
Statements end with ';' and may span lines. Every table is a view by its name.
  .tables         list the views
  .queries        list the named queries;  .query NAME  runs one
  .help           this text
  .quit           leave (or Ctrl-D)"""


def run_script(engine: Engine, script: str, *, fmt: str, limit: int,
               write: Any, conf_dir: str | os.PathLike[str] | None = None) -> int:
    """Run each statement of ``script`` on ``engine``, writing each result with ``write``;
    a failed statement is reported and the next ones still run. Returns the number of
    statements that failed."""
    failed = 0
    for statement in split_statements(script):
        failed += not run_statement(engine, statement, fmt=fmt, limit=limit, write=write,
                                    conf_dir=conf_dir)
    return failed


def run_statement(engine: Engine, statement: str, *, fmt: str, limit: int, write: Any,
                  conf_dir: str | os.PathLike[str] | None = None) -> bool:
    """Run one statement (or a shell command: ``.tables``, ``.queries``, ``.query NAME``),
    write its result; report an error and return False when it fails."""
    import sys

    command = statement.strip().rstrip(";").strip()
    try:
        if command in (".tables", ".views"):
            write("\n".join(engine.views()))
            return True
        if command == ".queries" and conf_dir is not None:
            write("\n".join(f"{q.name:48s} {q.title}" for q in named_queries(conf_dir).values()))
            return True
        if command.startswith(".query ") and conf_dir is not None:
            statement = named_query(conf_dir, command.split(None, 1)[1].strip()).text
        elif command == ".help":
            write(SHELL_HELP)
            return True
        write(format_result(engine.query(statement, limit), fmt))
        return True
    except (ReadOnlyError, MissingTableError, UnknownQueryError, *engine.query_errors) as exc:
        print(f"semfin sql: {_first_lines(exc)}", file=sys.stderr)
        return False


def _first_lines(exc: BaseException, n: int = 6) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return "\n".join(lines[:n]) or type(exc).__name__


def interactive_shell(engine: Engine, *, fmt: str, limit: int,
                      history: str | os.PathLike[str] | None,
                      conf_dir: str | os.PathLike[str] | None = None) -> int:
    """Read statements at a prompt until ``.quit`` or end of input: multi-line statements
    end with ``;``, lines are kept in ``history`` (readline, where Python has it) across
    sessions. Returns the number of statements that failed."""
    try:
        import readline
    except ImportError:  # a Python built without readline: no history, still a shell
        readline = None
    if readline is not None and history is not None:
        try:
            readline.read_history_file(history)
        except OSError:
            pass
        readline.set_history_length(2000)
    print(f"semfin sql on {engine.name}: {len(engine.views())} views. .help for help, "
          ".quit to leave.")
    failed, buffer = 0, []
    try:
        while True:
            try:
                line = input("semfin> " if not buffer else "   ...> ")
            except EOFError:
                print()
                break
            except KeyboardInterrupt:
                print()
                buffer = []
                continue
            if not buffer and line.strip() in (".quit", ".exit", "quit", "exit", r"\q"):
                break
            if not buffer and line.strip().startswith("."):
                failed += not run_statement(engine, line, fmt=fmt, limit=limit, write=print,
                                            conf_dir=conf_dir)
                continue
            buffer.append(line)
            text = "\n".join(buffer)
            if text.rstrip().endswith(";"):
                failed += run_script(engine, text, fmt=fmt, limit=limit, write=print,
                                     conf_dir=conf_dir)
                buffer = []
    finally:
        if readline is not None and history is not None:
            try:
                readline.write_history_file(history)
            except OSError:
                pass
    return failed
