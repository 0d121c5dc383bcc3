"""DuckDB over the warehouse: ``semfin sql`` on one machine, with no JVM to start.

Each Delta table is opened with delta-rs (at its current version, or at the version or
timestamp ``--as-of`` names) and registered in an in-memory DuckDB as an Arrow dataset under
the table's name, so DuckDB scans the table's Parquet files itself, with projection and
filter push-down. The derived views of :data:`semfin_spark.sql.DERIVED_VIEWS` are added
beside them.

Read-only, in two layers. Every statement is parsed by DuckDB's own parser first, and
anything but a ``SELECT`` (``SHOW`` and ``DESCRIBE`` are selects to DuckDB) is refused:
``CREATE``, ``INSERT``, ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``, ``SET``, ``PRAGMA``
calls, ``EXPORT``, ``EXPLAIN ANALYZE``. Then, once the tables are registered, the
connection's file-system access is switched off and the configuration locked, so no
``read_csv``, ``glob`` or ``read_parquet`` inside a ``SELECT`` can reach a file, and no
statement can switch it back on.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from typing import Any

from semfin_spark.sql import (
    ReadOnlyError,
    Result,
    license_rows,
    missing_table,
)

_SELECT = "SELECT"


class DuckDBEngine:
    """An in-memory DuckDB with the warehouse's tables as views.

    Args:
        warehouse: the warehouse folder (local; a remote warehouse needs ``--engine spark``).
        as_of: time travel, as :func:`semfin_spark.sql.parse_as_of` returns it.
        threads: DuckDB's threads (default: its own, one per core).

    Raises:
        semfin_spark.delta.DeltaError: a table has no such version, or none at that time.

    Examples:
        >>> engine = DuckDBEngine("semfin-warehouse")                 # doctest: +SKIP
        >>> engine.query("SELECT count(*) AS n FROM hub_models", 10)  # doctest: +SKIP
        Result(columns=['n'], rows=[(1500,)], truncated=False)
    """

    name = "duckdb"

    def __init__(self, warehouse: str, as_of: dict[str, str] | None = None,
                 threads: int | None = None) -> None:
        import duckdb
        import pyarrow as pa

        from semfin_spark.schemas import TABLES

        self.warehouse = warehouse
        self.con = duckdb.connect(":memory:", config={"threads": threads} if threads else {})
        self.con.execute("SET TimeZone = 'UTC'")
        self._views: list[str] = []
        as_of = as_of or {}
        self._datasets: dict[str, Any] = {}  # kept alive as long as the connection
        for name in TABLES:
            path = os.path.join(warehouse, name)
            if not os.path.isdir(os.path.join(path, "_delta_log")):
                continue
            table = _open_table(path, name, as_of.get(name, as_of.get("*")))
            if table is None:
                continue
            self._datasets[name] = table.to_pyarrow_dataset()
            self.con.register(name, self._datasets[name])
            self._views.append(name)
        self._datasets["licenses"] = pa.table(
            {"license": [r[0] for r in license_rows()], "family": [r[1] for r in license_rows()]})
        self.con.register("licenses", self._datasets["licenses"])
        self._views.append("licenses")
        if "lineage_chains" in self._views:
            self.con.execute("""
                CREATE VIEW lineage_chain_nodes AS
                SELECT variant, array_to_string(path, ' > ') AS chain, root, leaf, pattern,
                       license_pattern,
                       CAST(generate_subscripts(path, 1) - 1 AS INTEGER) AS position,
                       unnest(path) AS node
                FROM lineage_chains""")
            self._views.append("lineage_chain_nodes")
        self.con.execute("SET enable_external_access = false")
        self.con.execute("SET lock_configuration = true")

    def views(self) -> list[str]:
        return list(self._views)

    def add_previous_views(self, versions: dict[str, int | None]) -> None:
        """``previous_<table>`` for each table: the table at ``versions[table]``, empty
        where it had no version then."""
        from semfin_spark.schemas import TABLES

        for name in [v for v in self._views if v in TABLES]:
            version = versions.get(name)
            view = f"previous_{name}"
            if version is None:
                self.con.execute(f"CREATE VIEW {view} AS SELECT * FROM {name} WHERE false")
            else:
                table = _open_table(os.path.join(self.warehouse, name), name, str(version))
                self._datasets[view] = table.to_pyarrow_dataset()
                self.con.register(view, self._datasets[view])
            self._views.append(view)

    def query(self, statement: str, limit: int) -> Result:
        """The first ``limit`` rows of one read-only statement.

        Raises:
            ReadOnlyError: the statement is not a query, or reads a file.
            semfin_spark.sql.MissingTableError: it names a SemFin table not in the warehouse.
            duckdb.Error: any other error of the statement (syntax, unknown column).
        """
        import duckdb

        check_read_only(self.con, statement)
        try:
            cursor = self.con.execute(statement)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(limit + 1)
        except duckdb.PermissionException as exc:
            raise ReadOnlyError(f"semfin sql reads only the warehouse's tables: "
                                f"{_first_line(exc)}") from None
        except duckdb.CatalogException as exc:
            table = _missing_semfin_table(str(exc), self._views)
            if table:
                raise missing_table(table, self.warehouse) from None
            raise
        return Result(columns, rows[:limit], len(rows) > limit)

    @property
    def query_errors(self) -> tuple[type[BaseException], ...]:
        """What a wrong statement raises (syntax, unknown column): reported, not a crash."""
        import duckdb

        return (duckdb.Error,)

    def close(self) -> None:
        self.con.close()


def check_read_only(con: Any, statement: str) -> None:
    """Refuse ``statement`` unless it is exactly one ``SELECT`` (DuckDB's parser decides).

    Raises:
        ReadOnlyError: what was refused.
        duckdb.ParserException: the text does not parse.
    """
    parsed = con.extract_statements(statement)
    if len(parsed) != 1:
        raise ReadOnlyError(f"semfin sql runs one statement at a time; this text holds "
                            f"{len(parsed)}")
    kind = parsed[0].type.name
    if kind != _SELECT:
        raise ReadOnlyError(f"semfin sql is read-only: {kind} is not a query (only SELECT, "
                            "WITH, SHOW and DESCRIBE are allowed)")


def _open_table(path: str, name: str, point: str | None) -> Any:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    from semfin_spark.delta import DeltaError

    try:
        table = DeltaTable(path)
    except TableNotFoundError:  # a folder with an empty log: no commit yet
        return None
    if point is None:
        return table
    try:
        if point.isdigit():
            table.load_as_version(int(point))
        else:
            table.load_as_version(_timestamp(point))
    except Exception as exc:  # noqa: BLE001 - delta-rs raises plain errors; re-raised with the table
        raise DeltaError(f"{name} has no version {point}: {_first_line(exc)}") from None
    return table


def _timestamp(text: str) -> _dt.datetime:
    """An ``--as-of`` timestamp; UTC unless it names its zone (as Spark's session, in UTC)."""
    try:
        moment = _dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--as-of {text!r}: expected a version number or an ISO timestamp "
                         "(2026-12-01 02:00, 2026-12-01T02:00:00+01:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


def _missing_semfin_table(message: str, registered: list[str]) -> str | None:
    from semfin_spark.schemas import TABLES

    match = re.search(r"Table with name (\w+) does not exist", message)
    if match and match.group(1) in TABLES and match.group(1) not in registered:
        return match.group(1)
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
