"""The Delta seam: every table read and write in SemFin goes through :class:`DeltaStore`.

Tables are Delta Lake tables at ``<warehouse>/<table>``, written by delta-spark:
``format("delta")`` for whole-table writes, ``MERGE`` for keyed updates, the Delta log for
versions and history, ``OPTIMIZE`` and ``VACUUM`` for upkeep, time travel for reads. The
tables keep Delta's plain protocol (reader 1, writer 2: no deletion vectors, no column
mapping), so delta-rs, DuckDB and Trino read every one of them.

Every write is one Delta commit carrying the SemFin operation and its metadata (run id,
source) in the commit's ``userMetadata``; a job killed before its commit leaves the table at
its previous version, and readers see whole versions only.

Concurrent writers: Delta's optimistic concurrency. Keyed writes are ``MERGE``\\ s that read
the whole table, so two writers of the same table conflict and the later one fails with
:class:`ConcurrentWriteError` (nothing of it committed; run it again). Two first writes of
a missing table both try to commit version 0, and Delta fails the later one the same way.
On object stores, Delta's
rule applies: S3 needs a LogStore with put-if-absent (``S3DynamoDBLogStore``) before
writers on more than one driver may write one table; see the README.

Implementation details:
    Rows never pass through the driver: executors write the data files. The driver
    reads the Delta log (versions, history, file lists), whose size grows with commits
    and files, not rows.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from semfin_spark.expressions import per_session
from semfin_spark.schemas import Table
from semfin_spark.session import hadoop_path

log = logging.getLogger(__name__)

_USER_METADATA_CONF = "spark.databricks.delta.commitInfo.userMetadata"
_CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException",
              "ConcurrentDeleteDeleteException", "ConcurrentTransactionException",
              "MetadataChangedException", "ProtocolChangedException",
              "ConcurrentWriteException", "DELTA_CONCURRENT", "DELTA_METADATA_CHANGED",
              "DELTA_PROTOCOL_CHANGED", "DELTA_PATH_EXISTS")


_NO_DATA_CHANGE = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES"})
"""Delta operations that commit a version without changing any row."""


# Set on every table when it is created, so they hold whichever cluster writes them:
# each commit writes files binned to a sensible size (optimized writes), and a commit
# that leaves many small files is followed by a compaction (auto compaction). The
# nightly's upkeep still runs OPTIMIZE. Readers outside Spark ignore these properties.
TABLE_PROPERTIES = {"delta.autoOptimize.optimizeWrite": "true",
                    "delta.autoOptimize.autoCompact": "true"}


RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"
"""The table property that sets how old an unreferenced file must be before VACUUM deletes it."""

COMPACT_BYTES_PER_FILE = 64 * 1024 * 1024
"""The nightly compacts a table holding more than one file per this many bytes."""


class DeltaError(RuntimeError):
    """A Delta table cannot be read or written as asked (missing table, missing jars, ...)."""


class ConcurrentWriteError(DeltaError):
    """Another writer committed to the table first; nothing of this write was committed.

    Retryable: running the stage again reads the other writer's version and converges.
    """


@dataclass(frozen=True)
class WriteResult:
    """What one write did: the table version it produced (None: nothing to commit)."""

    table: str
    version: int | None


def delta_jars_available(spark: SparkSession) -> bool:
    """True when the JVM of ``spark`` has Delta Lake's classes (so ``format("delta")`` works)."""
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName("org.apache.spark.sql.delta.DeltaLog", False, loader)
        return True
    except Exception:  # noqa: BLE001 - no JVM access (Spark Connect) or class missing
        return False


class DeltaStore:
    """Read and write the warehouse's Delta tables.

    Args:
        spark: the session (injected; never built here), with the Delta Lake jars.
        warehouse: root folder or URI of the tables; ``<warehouse>/<table>`` is a table.

    Raises:
        DeltaError: the session has no Delta Lake jars.

    Examples:
        >>> from semfin_spark.schemas import MODEL_TAGS
        >>> store = DeltaStore(spark, "/tmp/semfin-doctest")           # doctest: +SKIP
        >>> rows = spark.createDataFrame([("a/x", "mit", "license", "mit", None)],
        ...                              MODEL_TAGS.schema)                 # doctest: +SKIP
        >>> store.overwrite(MODEL_TAGS, rows).version                    # doctest: +SKIP
        0
        >>> store.read(MODEL_TAGS, version=0).count()                    # doctest: +SKIP
        1
    """

    def __init__(self, spark: SparkSession, warehouse: str) -> None:
        if not delta_jars_available(spark):
            raise DeltaError(
                "the Delta Lake jars are not in this Spark session: run scripts/setup_env.sh "
                "(it fetches them) for the embedded default, or give spark-submit "
                "--packages io.delta:delta-spark_2.13:4.4.0 (scripts/submit.sh does)")
        self.spark = spark
        self.warehouse = warehouse.rstrip("/")

    @classmethod
    def from_settings(cls, spark: SparkSession, settings: Any) -> "DeltaStore":
        """A store for ``settings.warehouse``."""
        return cls(spark, settings.warehouse)

    # ---------------------------------------------------------------- reading

    def path(self, table: str | Table) -> str:
        """Location of a table: ``<warehouse>/<name>``."""
        return f"{self.warehouse}/{_name(table)}"

    def exists(self, table: str | Table) -> bool:
        """True when the table has a Delta log with at least one commit."""
        return self.version(table) is not None

    def version(self, table: str | Table) -> int | None:
        """Current version of the table, or None when it does not exist.

        Implementation details:
            Read from the names of the commit files in ``_delta_log`` (the Delta protocol
            names commit ``n`` ``<n, 20 digits>.json``), listed through Hadoop's file
            system on the driver: one listing, no Spark job, no log replay.
        """
        fs, log_dir = hadoop_path(self.spark, f"{self.path(table)}/_delta_log")
        if not fs.exists(log_dir):
            return None
        versions = [int(name[:-5]) for name in (s.getPath().getName() for s in fs.listStatus(log_dir))
                    if len(name) == 25 and name.endswith(".json") and name[:20].isdigit()]
        return max(versions) if versions else None

    def data_version(self, table: str | Table) -> int | None:
        """The newest version whose commit changed the table's rows, or None (no table).

        ``OPTIMIZE`` and ``VACUUM`` commit versions too, but rewrite or delete files without
        changing a row: a stage that reuses work while its inputs are unchanged (train)
        compares these, not :meth:`version`.
        """
        last = self.last_data_commit(table)
        return last["version"] if last else None

    def last_data_commit(self, table: str | Table) -> dict[str, Any] | None:
        """The newest commit that changed the table's rows, as :meth:`history` gives it
        (with SemFin's metadata), or None (no table)."""
        return next((e for e in self.history(table) if e["operation"] not in _NO_DATA_CHANGE), None)

    def history(self, table: str | Table, limit: int | None = None) -> list[dict[str, Any]]:
        """Commits of the table, newest first, from the Delta log.

        Each is a dict with ``version``, ``timestamp``, ``operation`` (Delta's: ``WRITE``,
        ``MERGE``, ``OPTIMIZE``, ...), ``operationMetrics``, and SemFin's own
        ``semfin_operation`` and metadata (read back from ``userMetadata``).
        """
        if not self.exists(table):
            return []
        from delta.tables import DeltaTable

        frame = DeltaTable.forPath(self.spark, self.path(table)).history(limit)
        out = []
        for row in frame.select("version", "timestamp", "operation", "operationMetrics",
                                "userMetadata").collect():
            entry = row.asDict()
            entry.update(_parse_metadata(entry.pop("userMetadata")))
            out.append(entry)
        return out

    def read(self, table: str | Table, version: int | None = None,
             timestamp: str | None = None) -> DataFrame:
        """The table, or one of its past versions (time travel), as a DataFrame.

        Args:
            table: a :class:`~semfin_spark.schemas.Table` or a table name.
            version: a past version (``versionAsOf``).
            timestamp: a past point in time (``timestampAsOf``, e.g. ``2026-12-01 02:00``).

        Returns:
            The rows. A missing table given as a ``Table`` reads as empty with its schema.

        Raises:
            DeltaError: the table does not exist (given by name only), or the version or
                timestamp is not in its history.
        """
        if not self.exists(table):
            if isinstance(table, Table):
                return self.spark.createDataFrame([], table.schema)
            raise DeltaError(f"no Delta table at {self.path(table)}")
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            reader = reader.option("timestampAsOf", timestamp)
        try:
            frame = reader.load(self.path(table))
        except Exception as exc:  # noqa: BLE001 - Delta's AnalysisException for a bad version
            if version is None and timestamp is None:
                raise
            raise DeltaError(f"{self.path(table)} has no version "
                             f"{version if version is not None else timestamp}: {exc}") from exc
        if isinstance(table, Table):
            # A table written before a column was declared reads with it as null.
            for f in table.schema.fields:
                if f.name not in frame.columns:
                    frame = frame.withColumn(f.name, F.lit(None).cast(f.dataType))
        return frame

    # ---------------------------------------------------------------- writing

    def overwrite(self, table: Table, df: DataFrame, *, operation: str = "OVERWRITE",
                  metadata: dict[str, str] | None = None, files: int | None = None) -> WriteResult:
        """Replace the table's rows by ``df``'s, in one commit (creates the table if needed).

        Args:
            files: when set, write at most this many files straight from ``df``'s
                partitions (``coalesce``, no shuffle) instead of the optimized write, which
                shuffles every row once more to bin them. For a large frame whose size the
                caller knows, with files of at least 64 MB: smaller ones would be
                rewritten at once by auto compaction.
        """
        return self._write(table, df, "overwrite", operation, metadata, files)

    def append(self, table: Table, df: DataFrame, *, operation: str = "APPEND",
               metadata: dict[str, str] | None = None) -> WriteResult:
        """Add ``df``'s rows to the table, in one commit (creates the table if needed).

        A blind append: two writers appending at once both land. Use :meth:`upsert` for
        rows with a key.
        """
        return self._write(table, df, "append", operation, metadata)

    def upsert(self, table: Table, df: DataFrame, *, operation: str = "MERGE",
               metadata: dict[str, str] | None = None) -> WriteResult:
        """Merge ``df`` into the table on ``table.key``: matched rows replaced, new rows added.

        ``df`` must hold at most one row per key. An empty ``df`` commits nothing.
        """
        return self.replace_keys(table, df, df.select(*table.key), operation=operation,
                                 metadata=metadata)

    def replace_keys(self, table: Table, df: DataFrame, keys: DataFrame, *,
                     operation: str = "MERGE", metadata: dict[str, str] | None = None,
                     read_version: int | None = None, skip_equal: bool = False) -> WriteResult:
        """Delete every row whose ``keys.columns`` values match a row of ``keys``, add ``df``.

        One ``MERGE`` commit. This is how a stage replaces all rows of the models it
        reprocessed (``keys`` = their ids) while leaving every other row untouched.

        Args:
            table: the table; created by this write when missing.
            df: the new rows, at most one per ``table.key``.
            keys: a DataFrame whose columns are a subset of the table's; duplicates allowed.
            operation: SemFin's name for the write, kept in the commit's metadata.
            metadata: extra commit info (e.g. the run id), kept in the history.
            read_version: the version ``df`` was computed from, if it was computed from
                the table itself (``-1``: the table did not exist); a table that has
                moved on since is a conflict.
            skip_equal: leave alone the rows of ``df`` equal, column by column, to the
                stored row of their key, and commit nothing when no row is added, changed
                or deleted. For a stage that recomputes rows which mostly come out the
                same (flatten of a model whose new commit changed one file): an unchanged
                table keeps its version, and a downstream stage that compares versions
                sees it unchanged. Costs one job that compares the keys' stored rows.

        Returns:
            The :class:`WriteResult`; ``version`` is None when there was nothing to do.

        Raises:
            ConcurrentWriteError: another writer committed to the table meanwhile.
        """
        before = self.version(table)
        if read_version is not None and (-1 if before is None else before) != read_version:
            raise ConcurrentWriteError(
                f"{self.path(table)} moved from version {read_version} to {before} while this "
                f"{operation} prepared its rows; nothing was committed. Run it again: it will "
                "read the other writer's version.")
        if before is None:
            # A first write creates the table: if another writer created it meanwhile,
            # Delta refuses ("errorifexists"), so no row is written twice.
            return self._write(table, df, "errorifexists", operation, metadata)
        self._add_declared_columns(table)
        df = conform(df, table)
        key_cols = list(keys.columns)
        keys = keys.dropDuplicates(key_cols)
        full_key = list(table.key)
        stored = self.read(table).join(keys, key_cols, "left_semi")
        # Rows of the replaced keys that df does not bring back are deleted by the MERGE:
        # they join it as delete markers.
        doomed = stored.select(*full_key).join(df.select(*full_key), full_key, "left_anti")
        if skip_equal:
            df = _without_equal_rows(df, stored, table.columns)
        nulls = [F.lit(None).cast(f.dataType).alias(f.name)
                 for f in table.schema.fields if f.name not in full_key]
        source = (df.withColumn("_semfin_delete", F.lit(False))
                  .unionByName(doomed.select(*full_key, *nulls)
                               .withColumn("_semfin_delete", F.lit(True))))
        if skip_equal:
            source = source.persist(StorageLevel.MEMORY_AND_DISK)
            try:
                if not source.count():  # materialised whole: the caller's observations see every row
                    log.info("%s: every row equal to the stored one; nothing committed", table.name)
                    return WriteResult(table.name, None)
                return self._merge(table, source, full_key, operation, metadata, before)
            finally:
                source.unpersist()
        return self._merge(table, source, full_key, operation, metadata, before)

    def _merge(self, table: Table, source: DataFrame, full_key: list[str], operation: str,
               metadata: dict[str, str] | None, before: int) -> WriteResult:
        """MERGE ``source`` (the table's columns and ``_semfin_delete``) on ``full_key``."""
        from delta.tables import DeltaTable

        cond = " AND ".join(f"t.`{c}` <=> s.`{c}`" for c in full_key)
        assignments = {f"`{c}`": f"s.`{c}`" for c in table.columns}
        merge = (DeltaTable.forPath(self.spark, self.path(table)).alias("t")
                 .merge(source.alias("s"), cond)
                 .whenMatchedDelete(condition="s._semfin_delete")
                 .whenMatchedUpdate(set=assignments)
                 .whenNotMatchedInsert(condition="NOT s._semfin_delete", values=assignments))
        with self._committing(table, operation, metadata):
            merge.execute()
        return self._result(table, before)

    def file_summary(self, table: str | Table) -> tuple[int, int] | None:
        """``(number of data files, their bytes)`` of the current version, read from the
        checksum file Delta writes beside each commit (``_delta_log/<version>.crc``): no
        Spark job, no log replay. None when the table or its checksum is missing."""
        version = self.version(table)
        if version is None:
            return None
        text = self._small_file(f"{self.path(table)}/_delta_log/{version:020d}.crc")
        if text is None:
            return None
        try:
            crc = json.loads(text)
            return int(crc["numFiles"]), int(crc["tableSizeBytes"])
        except (ValueError, KeyError, TypeError):
            return None

    def needs_compaction(self, table: str | Table) -> bool:
        """Whether the table holds more files than its size needs: more than one per
        :data:`COMPACT_BYTES_PER_FILE` (at least one). Unknown (no checksum): yes."""
        summary = self.file_summary(table)
        if summary is None:
            return self.exists(table)
        files, size = summary
        return files > max(1, math.ceil(size / COMPACT_BYTES_PER_FILE))

    def oldest_data_file_age_hours(self, table: str | Table) -> float | None:
        """Age in hours of the table folder's oldest data file (outside ``_delta_log``),
        listed on the driver through Hadoop's file system; None when it has none."""
        fs, root = hadoop_path(self.spark, self.path(table))
        if not fs.exists(root):
            return None
        oldest = None
        files = fs.listFiles(root, True)
        while files.hasNext():
            status = files.next()
            if "/_delta_log/" in status.getPath().toUri().getPath():
                continue
            stamp = status.getModificationTime()
            oldest = stamp if oldest is None else min(oldest, stamp)
        return None if oldest is None else (time.time() * 1000 - oldest) / 3_600_000

    def _small_file(self, path: str) -> str | None:
        fs, hpath = hadoop_path(self.spark, path)
        if not fs.exists(hpath):
            return None
        stream = fs.open(hpath)
        try:
            return self.spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(  # type: ignore[attr-defined]
                stream, "UTF-8")
        finally:
            stream.close()

    def optimize(self, table: str | Table) -> dict[str, Any]:
        """Compact the table's small files (``OPTIMIZE``); returns Delta's metrics.

        A no-op (no commit) when there is nothing to compact.
        """
        if not self.exists(table):
            return {}
        from delta.tables import DeltaTable

        with self._committing(table, "OPTIMIZE", None):
            rows = DeltaTable.forPath(self.spark, self.path(table)).optimize().executeCompaction().collect()
        metrics = rows[0]["metrics"].asDict(recursive=True) if rows else {}
        return {k: metrics.get(k) for k in ("numFilesAdded", "numFilesRemoved")}

    def vacuum(self, table: str | Table, retention_hours: float = 168) -> None:
        """Delete data files no version newer than ``retention_hours`` references.

        Files of killed or failed writes and files replaced by later versions go; time
        travel to versions older than the retention stops working.

        Implementation details:
            Delta 4 ignores a retention given to ``VACUUM`` other than 0 hours and uses the
            table's ``delta.deletedFileRetentionDuration`` (7 days by default), so the
            retention is written to that property first, in a metadata-only commit made
            only when the property differs.
        """
        if not self.exists(table):
            return
        from delta.tables import DeltaTable

        wanted = f"interval {max(0, round(retention_hours * 60))} minutes"
        location = self.path(table).replace("`", "``")
        properties = self.spark.sql(f"DESCRIBE DETAIL delta.`{location}`").first().properties
        if properties.get(RETENTION_PROPERTY) != wanted:
            with self._committing(table, "SET RETENTION", None):
                self.spark.sql(f"ALTER TABLE delta.`{location}` SET TBLPROPERTIES "
                               f"('{RETENTION_PROPERTY}' = '{wanted}')")
        check = "spark.databricks.delta.retentionDurationCheck.enabled"
        previous = self.spark.conf.get(check, "true")
        if retention_hours < 168:  # Delta refuses short retentions unless told it is meant
            self.spark.conf.set(check, "false")
        try:
            DeltaTable.forPath(self.spark, self.path(table)).vacuum(retention_hours)
        finally:
            self.spark.conf.set(check, previous)

    # ---------------------------------------------------------------- internals

    def _add_declared_columns(self, table: Table) -> None:
        """Add the columns declared since the table was created (``ALTER TABLE ... ADD
        COLUMNS``, a metadata-only commit), so a warehouse of an older release keeps
        working. Columns are only ever added: a removed or retyped column needs a
        deliberate migration."""
        stored = set(self.spark.read.format("delta").load(self.path(table)).columns)
        missing = [f for f in table.schema.fields if f.name not in stored]
        if not missing:
            return
        columns = ", ".join(
            f"`{f.name}` {f.dataType.simpleString()} COMMENT "
            f"'{_sql_text(f.metadata.get('comment', ''))}'" for f in missing)
        location = self.path(table).replace("`", "``")
        log.info("%s: adding declared column(s) %s", table.name, [f.name for f in missing])
        with self._committing(table, "ADD COLUMNS", None, set_metadata=False):
            self.spark.sql(f"ALTER TABLE delta.`{location}` ADD COLUMNS ({columns})")

    def _write(self, table: Table, df: DataFrame, mode: str, operation: str,
               metadata: dict[str, str] | None, files: int | None = None) -> WriteResult:
        df = conform(df, table)
        if files is not None:
            df = df.coalesce(max(1, files))
        before = self.version(table)
        if before is not None and mode == "append":
            self._add_declared_columns(table)
        writer = (df.write.format("delta").mode(mode)
                  .option("userMetadata", _metadata_text(operation, metadata)))
        if before is None or mode == "overwrite":
            for key, value in TABLE_PROPERTIES.items():  # kept by the table from its creation
                writer = writer.option(key, value)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        if files is not None:
            writer = writer.option("optimizeWrite", "false")
        with self._committing(table, operation, None, set_metadata=False):
            writer.save(self.path(table))
        return self._result(table, before)


    def _result(self, table: Table, before: int | None) -> WriteResult:
        version = self.version(table)
        if version == before:
            return WriteResult(table.name, None)
        log.info("%s: committed version %s", table.name, version)
        return WriteResult(table.name, version)

    @contextmanager
    def _committing(self, table: str | Table, operation: str, metadata: dict[str, str] | None,
                    *, set_metadata: bool = True) -> Iterator[None]:
        """Tag the commit with SemFin's metadata; turn Delta's conflicts into
        :class:`ConcurrentWriteError`."""
        previous = self.spark.conf.get(_USER_METADATA_CONF, None)
        if set_metadata:
            self.spark.conf.set(_USER_METADATA_CONF, _metadata_text(operation, metadata))
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - re-raised, as a specific error when a conflict
            text = f"{type(exc).__name__}: {exc}"
            if any(marker in text for marker in _CONFLICTS):
                raise ConcurrentWriteError(
                    f"another writer committed to {self.path(table)} while this {operation} "
                    "ran; nothing of it was committed. Run it again: it will read the other "
                    f"writer's version. ({text.splitlines()[0][:300]})") from exc
            raise
        finally:
            if set_metadata:
                if previous is None:
                    self.spark.conf.unset(_USER_METADATA_CONF)
                else:
                    self.spark.conf.set(_USER_METADATA_CONF, previous)


def _without_equal_rows(df: DataFrame, stored: DataFrame, columns: list[str]) -> DataFrame:
    """``df``'s rows that differ from every row of ``stored`` in some column (nulls equal)."""
    old = stored.select(*[F.col(f"`{c}`").alias(f"_stored_{i}") for i, c in enumerate(columns)])
    same = None
    for i, c in enumerate(columns):
        cond = F.col(f"`{c}`").eqNullSafe(F.col(f"_stored_{i}"))
        same = cond if same is None else same & cond
    return df.join(old, same, "left_anti")


def conform(df: DataFrame, table: Table) -> DataFrame:
    """``df`` with exactly the table's columns, in order, cast to the table's types.

    Raises:
        DeltaError: ``df`` lacks a column of the table (missing columns are an error,
            not silently null, so a stage cannot drop a column by accident).
    """
    missing = [c for c in table.columns if c not in df.columns]
    if missing:
        raise DeltaError(f"cannot write {table.name}: missing column(s) {missing}")
    return df.select(*_conformed(table))


@per_session
def _conformed(table: Table) -> tuple[Column, ...]:
    """The table's columns by name, cast to its types: :func:`conform`'s projection."""
    return tuple(F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in table.schema.fields)


def _sql_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _name(table: str | Table) -> str:
    return table.name if isinstance(table, Table) else table


def _metadata_text(operation: str, metadata: dict[str, str] | None) -> str:
    info = {"semfin_operation": operation, **{k: str(v) for k, v in (metadata or {}).items()}}
    return json.dumps(info, sort_keys=True)


def _parse_metadata(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"user_metadata": text}
    return value if isinstance(value, dict) else {"user_metadata": text}


def table_versions(store: DeltaStore, tables: Iterable[str | Table]) -> dict[str, int | None]:
    """Current version of each table (for lineage of a run: MLflow tags, reports)."""
    return {_name(t): store.version(t) for t in tables}
