"""The Delta seam: every table read and write in SemFin goes through :class:`DeltaStore`.

Two backends, chosen once per session by probing the JVM:

* ``native``: the Delta Lake jars are on the classpath (a cluster started with
  ``--packages io.delta:delta-spark_2.13:<v>``): ``format("delta")`` writes, ``MERGE``
  through delta-spark's ``DeltaTable`` API.
* ``delta-rs``: no Delta jars (the embedded default here). Executors write Parquet files
  into a staging folder of the table; the driver moves them into the table folder and
  commits them, with per-file statistics read from the Parquet footers, as ONE Delta
  transaction with ``deltalake`` (delta-rs). Merges are copy-on-write at file level: only
  the files holding a matched key are rewritten, and their removal and the new files are
  one commit.

Either way the result is a real Delta table (delta-spark, delta-rs, DuckDB and Trino read
it), each stage write is one commit, a job killed before its commit leaves the table at its
previous version, and readers see the old or the new version, never half a write.

Implementation details:
    Rows never pass through the driver: Spark's executors write the Parquet files. The
    driver handles file names, Parquet footers (statistics) and the Delta log, all of
    which grow with the number of files, not of rows. A killed write can leave Parquet
    files that no commit references: readers never see them; the next write removes
    staging folders older than ``delta.stale_staging_hours``, and
    :meth:`DeltaStore.vacuum` removes unreferenced files.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from semfin_spark.schemas import Table

log = logging.getLogger(__name__)

_STAGING = "_staging"


class DeltaError(RuntimeError):
    """A Delta table cannot be read or written as asked (missing, unsupported feature, ...)."""


@dataclass(frozen=True)
class WriteResult:
    """What one write did: the table version it produced (None: nothing to commit)."""

    table: str
    version: int | None
    rows_written: int | None = None
    files_added: int = 0
    files_removed: int = 0


def delta_jars_available(spark: SparkSession) -> bool:
    """True when the JVM of ``spark`` has Delta Lake's classes (so ``format("delta")`` works)."""
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        jvm.java.lang.Class.forName("org.apache.spark.sql.delta.DeltaLog")
        return True
    except Exception:  # no JVM access (Spark Connect) or class missing
        try:
            return "delta" in (spark.conf.get("spark.sql.extensions", "") or "").lower()
        except Exception:
            return False


class DeltaStore:
    """Read and write the warehouse's Delta tables; the backend is chosen at run time.

    Args:
        spark: the session (injected; never built here).
        warehouse: root folder of the tables; ``<warehouse>/<table>`` is a table.
        backend: ``auto`` (probe the JVM), ``native`` or ``delta-rs``.
        stale_staging_hours: partial writes of killed jobs older than this are removed.

    Examples:
        >>> from semfin_spark.schemas import HUB_MODELS
        >>> store = DeltaStore(spark, "/tmp/semfin-doctest")     # doctest: +SKIP
        >>> store.overwrite(HUB_MODELS, df).version              # doctest: +SKIP
        0
        >>> store.read(HUB_MODELS).count()                       # doctest: +SKIP
    """

    def __init__(self, spark: SparkSession, warehouse: str, *, backend: str = "auto",
                 stale_staging_hours: float = 24.0) -> None:
        if backend not in ("auto", "native", "delta-rs"):
            raise ValueError(f"delta backend must be auto, native or delta-rs, not {backend!r}")
        if backend == "auto":
            backend = "native" if delta_jars_available(spark) else "delta-rs"
        elif backend == "native" and not delta_jars_available(spark):
            raise DeltaError("delta backend 'native' asked for, but the Delta Lake jars are not "
                             "in the JVM: start Spark with --packages io.delta:delta-spark_2.13:<version>")
        self.spark = spark
        self.warehouse = warehouse.rstrip("/")
        self.backend = backend
        self.stale_staging_hours = stale_staging_hours

    @classmethod
    def from_settings(cls, spark: SparkSession, settings: Any) -> "DeltaStore":
        """A store for ``settings.warehouse`` with ``settings.delta`` options."""
        return cls(spark, settings.warehouse, backend=settings.delta.backend,
                   stale_staging_hours=settings.delta.stale_staging_hours)

    # ---------------------------------------------------------------- reading

    def path(self, table: str | Table) -> str:
        """Location of a table: ``<warehouse>/<name>``."""
        return f"{self.warehouse}/{_name(table)}"

    def exists(self, table: str | Table) -> bool:
        """True when the table has a Delta log with at least one commit."""
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self._uri(table))

    def version(self, table: str | Table) -> int | None:
        """Current version of the table, or None when it does not exist."""
        if not self.exists(table):
            return None
        from deltalake import DeltaTable

        return DeltaTable(self._uri(table)).version()

    def history(self, table: str | Table, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits of the table, newest first (``version``, ``timestamp``, ``operation``, ...)."""
        if not self.exists(table):
            return []
        from deltalake import DeltaTable

        return DeltaTable(self._uri(table)).history(limit)

    def read(self, table: str | Table, version: int | None = None) -> DataFrame:
        """The table (or one of its versions) as a DataFrame.

        Args:
            table: a :class:`~semfin_spark.schemas.Table` or a table name.
            version: a past version (time travel); the current one when omitted.

        Returns:
            The rows. A missing table given as a ``Table`` reads as empty with its schema.

        Raises:
            DeltaError: the table does not exist (given by name only), the version does not
                exist, or the table uses a feature the delta-rs path cannot honour
                (deletion vectors, column mapping).
        """
        if not self.exists(table):
            if isinstance(table, Table):
                return self.spark.createDataFrame([], table.schema)
            raise DeltaError(f"no Delta table at {self.path(table)}")
        if self.backend == "native":
            reader = self.spark.read.format("delta")
            if version is not None:
                reader = reader.option("versionAsOf", version)
            return reader.load(self.path(table))
        return self._read_files(table, version)

    def _read_files(self, table: str | Table, version: int | None) -> DataFrame:
        from deltalake import DeltaTable
        from pyspark.sql.pandas.types import from_arrow_schema
        import pyarrow as pa

        try:
            dt_ = DeltaTable(self._uri(table), version=version)
        except Exception as exc:  # delta-rs raises its own error types per cause
            raise DeltaError(f"cannot read {self.path(table)} at version {version}: {exc}") from exc
        protocol = dt_.protocol()
        features = set(protocol.reader_features or [])
        unsupported = features & {"deletionVectors", "columnMapping", "v2Checkpoint"}
        if unsupported and self._has_active_feature(dt_, unsupported):
            raise DeltaError(
                f"{self.path(table)} uses {sorted(unsupported)}, which only the native backend "
                "reads: start Spark with the Delta Lake jars")
        schema = from_arrow_schema(pa.schema(dt_.schema().to_arrow()))
        files = dt_.file_uris()
        if not files:
            return self.spark.createDataFrame([], schema)
        return self.spark.read.schema(schema).parquet(*files)

    @staticmethod
    def _has_active_feature(dt_: Any, features: set[str]) -> bool:
        if "deletionVectors" in features:
            actions = dt_.get_add_actions(flatten=True)
            if "deletionVector.storageType" in actions.schema.names:
                return True
        return bool(features - {"deletionVectors"})

    # ---------------------------------------------------------------- writing

    def overwrite(self, table: Table, df: DataFrame, *, operation: str = "OVERWRITE",
                  metadata: dict[str, str] | None = None) -> WriteResult:
        """Replace the table's rows by ``df``'s, in one commit (creates the table if needed)."""
        df = conform(df, table)
        if self.backend == "native":
            self._native_writer(df, "overwrite", metadata).save(self.path(table))
            return WriteResult(table.name, self.version(table))
        staged = self._stage(table, df)
        return self._commit(table, staged, mode="overwrite", operation=operation, metadata=metadata)

    def append(self, table: Table, df: DataFrame, *, operation: str = "APPEND",
               metadata: dict[str, str] | None = None) -> WriteResult:
        """Add ``df``'s rows to the table, in one commit (creates the table if needed)."""
        df = conform(df, table)
        if self.backend == "native":
            self._native_writer(df, "append", metadata).save(self.path(table))
            return WriteResult(table.name, self.version(table))
        staged = self._stage(table, df)
        return self._commit(table, staged, mode="append", operation=operation, metadata=metadata)

    def upsert(self, table: Table, df: DataFrame, *, operation: str = "MERGE",
               metadata: dict[str, str] | None = None) -> WriteResult:
        """Merge ``df`` into the table on ``table.key``: matched rows replaced, new rows added.

        ``df`` must hold at most one row per key. An empty ``df`` commits nothing.
        """
        return self.replace_keys(table, df, df.select(*table.key), operation=operation,
                                 metadata=metadata)

    def replace_keys(self, table: Table, df: DataFrame, keys: DataFrame, *,
                     operation: str = "MERGE", metadata: dict[str, str] | None = None,
                     ) -> WriteResult:
        """Delete every row whose ``keys.columns`` values match a row of ``keys``, add ``df``.

        One commit. This is how a stage replaces all rows of the models it reprocessed
        (``keys`` = their ids) while leaving every other row and file untouched.

        Args:
            table: the table; created when missing.
            df: the new rows.
            keys: a DataFrame whose columns are a subset of the table's; duplicates allowed.
            operation: the operation name recorded in the Delta history.
            metadata: extra commit info (e.g. the run id), kept in the history.

        Returns:
            The :class:`WriteResult`; ``version`` is None when there was nothing to do.
        """
        df = conform(df, table)
        key_cols = list(keys.columns)
        keys = keys.dropDuplicates(key_cols)
        if not self.exists(table):
            return self.append(table, df, operation=operation, metadata=metadata)
        if self.backend == "native":
            return self._native_replace_keys(table, df, keys, key_cols)
        return self._cow_replace_keys(table, df, keys, key_cols, operation, metadata)

    def vacuum(self, table: str | Table, retention_hours: int = 168) -> list[str]:
        """Remove files no version newer than ``retention_hours`` references."""
        from deltalake import DeltaTable

        if not self.exists(table):
            return []
        return DeltaTable(self._uri(table)).vacuum(
            retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)

    # ---------------------------------------------------------------- native backend

    def _native_writer(self, df: DataFrame, mode: str, metadata: dict[str, str] | None):
        writer = df.write.format("delta").mode(mode)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        if metadata:
            writer = writer.option("userMetadata", json.dumps(metadata, sort_keys=True))
        return writer

    def _native_replace_keys(self, table: Table, df: DataFrame, keys: DataFrame,
                             key_cols: list[str]) -> WriteResult:
        from delta.tables import DeltaTable as SparkDeltaTable  # delta-spark, cluster only

        full_key = list(table.key)
        current = self.read(table)
        doomed = (current.join(keys, key_cols, "left_semi").select(*full_key)
                  .join(df.select(*full_key), full_key, "left_anti"))
        nulls = [F.lit(None).cast(f.dataType).alias(f.name)
                 for f in table.schema.fields if f.name not in full_key]
        source = (df.withColumn("_semfin_delete", F.lit(False))
                  .unionByName(doomed.select(*full_key, *nulls)
                               .withColumn("_semfin_delete", F.lit(True))))
        cond = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in full_key)
        assignments = {f"`{c}`": f"s.`{c}`" for c in table.columns}
        (SparkDeltaTable.forPath(self.spark, self.path(table)).alias("t")
         .merge(source.alias("s"), cond)
         .whenMatchedDelete(condition="s._semfin_delete")
         .whenMatchedUpdate(set=assignments)
         .whenNotMatchedInsert(condition="NOT s._semfin_delete", values=assignments)
         .execute())
        return WriteResult(table.name, self.version(table))

    # ---------------------------------------------------------------- delta-rs backend

    def _uri(self, table: str | Table) -> str:
        path = self.path(table)
        return path if "://" in path else os.path.abspath(path)

    def _stage(self, table: Table, df: DataFrame, run: str | None = None) -> "_Staged":
        """Executors write ``df`` as Parquet into ``<table>/_staging/<run>``."""
        root = self._uri(table)
        self._remove_stale_staging(root)
        run = run or f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        staging = f"{root}/{_STAGING}/{run}"
        df.write.mode("overwrite").parquet(staging)
        return _Staged(root=root, staging=staging, run=run, schema=df.schema)

    def _commit(self, table: Table, staged: "_Staged", *, mode: str, operation: str,
                metadata: dict[str, str] | None, removes: Sequence[Any] = ()) -> WriteResult:
        from deltalake import DeltaTable
        from deltalake.transaction import (CommitProperties, create_table_with_add_actions)
        from pyspark.sql.pandas.types import to_arrow_schema

        adds, rows = self._move_into_table(staged)
        if mode == "append" and not adds and not removes and DeltaTable.is_deltatable(staged.root):
            shutil.rmtree(staged.staging, ignore_errors=True)
            return WriteResult(table.name, None, 0)
        arrow_schema = to_arrow_schema(table.schema, timezone="UTC")
        info = {"semfin_operation": operation, "semfin_backend": "delta-rs", **(metadata or {})}
        props = CommitProperties(custom_metadata={k: str(v) for k, v in info.items()})
        try:
            if not DeltaTable.is_deltatable(staged.root):
                create_table_with_add_actions(
                    staged.root, _delta_schema(arrow_schema), adds, mode="error",
                    name=table.name, description=table.doc, commit_properties=props)
            else:
                target = DeltaTable(staged.root)
                if mode == "overwrite" and _schema_changed(target, arrow_schema):
                    create_table_with_add_actions(
                        staged.root, _delta_schema(arrow_schema), adds, mode="overwrite",
                        name=table.name, description=table.doc, commit_properties=props)
                else:
                    target.create_write_transaction(
                        list(adds) + list(removes), mode=mode, schema=arrow_schema,
                        commit_properties=props)
        finally:
            shutil.rmtree(staged.staging, ignore_errors=True)
        version = DeltaTable(staged.root).version()
        log.info("%s: committed version %s (%s, %d files, %d rows)", table.name, version,
                 operation, len(adds), rows)
        return WriteResult(table.name, version, rows, len(adds), len(removes))

    def _move_into_table(self, staged: "_Staged") -> tuple[list[Any], int]:
        import pyarrow.parquet as pq
        from deltalake.transaction import AddAction

        adds: list[Any] = []
        total = 0
        for name in sorted(os.listdir(staged.staging)):
            src = f"{staged.staging}/{name}"
            if name.startswith((".", "_")) or not name.endswith(".parquet"):
                continue
            meta = pq.read_metadata(src)
            if meta.num_rows == 0:
                continue  # Spark writes an empty file for an empty DataFrame; no need to keep it
            target_name = f"part-{staged.run}-{name.split('-', 2)[1]}-{uuid.uuid4().hex[:8]}.snappy.parquet"
            os.replace(src, f"{staged.root}/{target_name}")
            stat = os.stat(f"{staged.root}/{target_name}")
            adds.append(AddAction(
                path=target_name, size=stat.st_size, partition_values={},
                modification_time=int(stat.st_mtime * 1000), data_change=True,
                stats=json.dumps(_file_stats(meta))))
            total += meta.num_rows
        return adds, total

    def _cow_replace_keys(self, table: Table, df: DataFrame, keys: DataFrame,
                          key_cols: list[str], operation: str,
                          metadata: dict[str, str] | None) -> WriteResult:
        from deltalake import DeltaTable
        from deltalake.transaction import RemoveAction

        target = DeltaTable(self._uri(table))
        current = self.read(table).withColumn("_semfin_file", F.input_file_name())
        # Only file names reach the driver: their number grows with files, not rows.
        touched = [r[0] for r in current.join(keys, key_cols, "left_semi")
                   .select("_semfin_file").distinct().collect()]
        if touched:
            kept = (current.where(F.col("_semfin_file").isin(touched))
                    .join(keys, key_cols, "left_anti").drop("_semfin_file"))
            df = conform(kept, table).unionByName(df)
        # Staged whatever it holds (``df`` is computed exactly once, so observations on it
        # count every row); nothing staged and nothing touched commits nothing.
        staged = self._stage(table, df)
        by_uri = {_file_uri(p): p for p in _table_files(target)}
        now = int(time.time() * 1000)
        removes = []
        for uri in touched:
            rel = by_uri.get(_file_uri(uri))
            if rel is None:
                raise DeltaError(f"{uri} is not an active file of {self.path(table)}")
            removes.append(RemoveAction(path=rel, data_change=True, deletion_timestamp=now))
        return self._commit(table, staged, mode="append", operation=operation,
                            metadata=metadata, removes=removes)

    def _remove_stale_staging(self, root: str) -> None:
        staging_root = f"{root}/{_STAGING}"
        if not os.path.isdir(staging_root):
            return
        cutoff = time.time() - self.stale_staging_hours * 3600
        for name in os.listdir(staging_root):
            path = f"{staging_root}/{name}"
            if os.path.getmtime(path) < cutoff:
                shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class _Staged:
    root: str
    staging: str
    run: str
    schema: Any


def conform(df: DataFrame, table: Table) -> DataFrame:
    """``df`` with exactly the table's columns, in order, cast to the table's types.

    Raises:
        DeltaError: ``df`` lacks a column of the table (missing columns are an error,
            not silently null, so a stage cannot drop a column by accident).
    """
    missing = [c for c in table.columns if c not in df.columns]
    if missing:
        raise DeltaError(f"cannot write {table.name}: missing column(s) {missing}")
    return df.select(*[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name)
                       for f in table.schema.fields])


def _name(table: str | Table) -> str:
    return table.name if isinstance(table, Table) else table


def _table_files(target: Any) -> list[str]:
    actions = target.get_add_actions(flatten=True)
    return actions.column("path").to_pylist()


def _file_uri(path: str) -> str:
    """A comparable form of a data file's location (``file:/x``, ``file:///x`` and ``/x`` agree)."""
    from urllib.parse import unquote

    path = unquote(path)
    for prefix in ("file://", "file:"):
        if path.startswith(prefix):
            path = path[len(prefix):]
            break
    return os.path.basename(path)


def _delta_schema(arrow_schema: Any) -> Any:
    from deltalake import Schema

    return Schema.from_arrow(arrow_schema)


def _schema_changed(target: Any, arrow_schema: Any) -> bool:
    import pyarrow as pa

    current = pa.schema(target.schema().to_arrow())
    return [(f.name, str(f.type)) for f in current] != [(f.name, str(f.type)) for f in arrow_schema]


def _file_stats(meta: Any) -> dict[str, Any]:
    """Delta per-file statistics from a Parquet footer: numRecords, min, max, nullCount.

    Only top-level columns of numeric, boolean and short string types get min/max;
    timestamps and long strings keep nullCount only, since a truncated bound would make
    readers skip files they must read.
    """
    import pyarrow as pa

    schema = meta.schema.to_arrow_schema()
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    leaf_index = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    for field in schema:
        i = leaf_index.get(field.name)
        if i is None:
            continue  # nested column: no statistics
        nulls[field.name] = 0
        lo = hi = None
        usable = _stats_type(field.type)
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(i).statistics
            if st is None or not st.has_null_count:
                usable = False
                nulls.pop(field.name, None)
                break
            nulls[field.name] += st.null_count
            if not usable or not st.has_min_max:
                continue
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
        if usable and lo is not None and _stat_ok(lo) and _stat_ok(hi):
            mins[field.name], maxs[field.name] = lo, hi
    return {"numRecords": meta.num_rows, "minValues": mins, "maxValues": maxs,
            "nullCount": nulls}


def _stats_type(t: Any) -> bool:
    import pyarrow as pa

    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_string(t) or pa.types.is_large_string(t))


def _stat_ok(v: Any) -> bool:
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, str):
        return len(v) <= 32
    if isinstance(v, bytes):
        return False
    return True


def table_versions(store: DeltaStore, tables: Iterable[str | Table]) -> dict[str, int | None]:
    """Current version of each table (for lineage of a run: MLflow tags, reports)."""
    return {_name(t): store.version(t) for t in tables}
