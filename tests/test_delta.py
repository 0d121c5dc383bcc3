"""The Delta seam: round trips, versions, merges, time travel, upkeep, kills, concurrent
writers, and the readers outside Spark (delta-rs, DuckDB)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from deltalake import DeltaTable

from semfin_spark.delta import DeltaError, DeltaStore
from semfin_spark.schemas import MODEL_TAGS
from conftest import short_jvm_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tags_df(spark, rows):
    return spark.createDataFrame(
        [(m, t, k, v, None) for m, t, k, v in rows], MODEL_TAGS.schema)


def rows_of(store, version=None):
    return sorted(tuple(r) for r in store.read(MODEL_TAGS, version).collect())


@pytest.fixture
def store(spark, tmp_path):
    return DeltaStore(spark, str(tmp_path / "wh"))


def test_round_trip_versions_history_and_commit_metadata(spark, store):
    first = tags_df(spark, [("a/x", "mit", "license", "mit"), ("a/y", "en", "language", "en")])
    assert store.read(MODEL_TAGS).count() == 0  # a missing table reads empty, with its schema
    assert store.version(MODEL_TAGS) is None
    assert store.overwrite(MODEL_TAGS, first, operation="FLATTEN").version == 0
    assert store.append(MODEL_TAGS, tags_df(spark, [("b/z", "gguf", "format", "gguf")])).version == 1
    assert store.upsert(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "MIT")]),
                        operation="INGEST", metadata={"source": "snapshot:x"}).version == 2
    assert len(rows_of(store)) == 3
    assert rows_of(store, version=0) == sorted(tuple(r) for r in first.collect())
    history = store.history(MODEL_TAGS)
    assert [h["version"] for h in history] == [2, 1, 0]
    assert [h["operation"] for h in history] == ["MERGE", "WRITE", "WRITE"]
    # SemFin's operation and metadata ride in every commit, MERGE included.
    assert [h["semfin_operation"] for h in history] == ["INGEST", "APPEND", "FLATTEN"]
    assert history[0]["source"] == "snapshot:x"
    # A plain Delta table: delta-rs reads every version.
    dt = DeltaTable(store.path(MODEL_TAGS))
    assert dt.version() == 2
    assert dt.to_pyarrow_table().num_rows == 3
    assert DeltaTable(store.path(MODEL_TAGS), version=0).to_pyarrow_table().num_rows == 2


def test_time_travel_by_timestamp(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))
    first_commit = store.history(MODEL_TAGS)[0]["timestamp"]
    time.sleep(1.1)  # Delta's commit timestamps have millisecond resolution; one clear second
    store.upsert(MODEL_TAGS, tags_df(spark, [("b/y", "de", "language", "de")]))
    then = store.read(MODEL_TAGS, timestamp=first_commit.strftime("%Y-%m-%d %H:%M:%S.%f"))
    assert [r.model_id for r in then.collect()] == ["a/x"]
    with pytest.raises(DeltaError, match="has no version"):
        store.read(MODEL_TAGS, version=99).collect()


def test_upsert_replaces_matches_keeps_the_rest_and_is_idempotent(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit"),
                                                ("a/y", "en", "language", "en")]))
    update = tags_df(spark, [("a/x", "mit", "license", "MIT"), ("c/w", "fr", "language", "fr")])
    store.upsert(MODEL_TAGS, update)
    once = rows_of(store)
    store.upsert(MODEL_TAGS, update)
    assert rows_of(store) == once
    assert once == [("a/x", "mit", "license", "MIT", None), ("a/y", "en", "language", "en", None),
                    ("c/w", "fr", "language", "fr", None)]


def test_replace_keys_swaps_all_rows_of_a_model_in_one_commit(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [
        ("a/x", "mit", "license", "mit"), ("a/x", "en", "language", "en"),
        ("b/y", "de", "language", "de")]).coalesce(1))
    before = store.version(MODEL_TAGS)
    new_rows = tags_df(spark, [("a/x", "fr", "language", "fr")])
    result = store.replace_keys(MODEL_TAGS, new_rows, spark.createDataFrame([("a/x",)], ["model_id"]))
    assert result.version == before + 1
    assert rows_of(store) == [("a/x", "fr", "language", "fr", None), ("b/y", "de", "language", "de", None)]


def test_replace_keys_skipping_equal_rows_writes_only_what_changed(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [
        ("a/x", "mit", "license", "mit"), ("a/x", "en", "language", "en"),
        ("b/y", "de", "language", "de")]).coalesce(1))
    keys = spark.createDataFrame([("a/x",)], ["model_id"])
    same = tags_df(spark, [("a/x", "en", "language", "en"), ("a/x", "mit", "license", "mit")])
    assert store.replace_keys(MODEL_TAGS, same, keys, skip_equal=True).version is None
    assert store.version(MODEL_TAGS) == 0
    # One row changed, one gone, one kept: one commit, the same rows as without skip_equal.
    changed = tags_df(spark, [("a/x", "en", "language", "EN")])
    assert store.replace_keys(MODEL_TAGS, changed, keys, skip_equal=True).version == 1
    assert rows_of(store) == [("a/x", "en", "language", "EN", None), ("b/y", "de", "language", "de", None)]
    metrics = store.history(MODEL_TAGS, limit=1)[0]["operationMetrics"]
    assert (metrics["numTargetRowsUpdated"], metrics["numTargetRowsDeleted"]) == ("1", "1")


def test_first_keyed_write_creates_the_table(spark, store):
    result = store.upsert(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]),
                          operation="INGEST")
    assert result.version == 0
    assert [(h["operation"], h["semfin_operation"]) for h in store.history(MODEL_TAGS)] == \
        [("WRITE", "INGEST")]
    assert rows_of(store) == [("a/x", "mit", "license", "mit", None)]


def test_empty_merge_commits_nothing(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))
    result = store.upsert(MODEL_TAGS, tags_df(spark, []))
    assert result.version is None
    assert store.version(MODEL_TAGS) == 0


def test_missing_column_is_a_clear_error(spark, store):
    with pytest.raises(DeltaError, match="missing column"):
        store.overwrite(MODEL_TAGS, spark.createDataFrame([("a/x",)], ["model_id"]))


def test_writes_make_few_files_and_optimize_compacts_them(spark, store):
    many = tags_df(spark, [(f"m/{i}", "t", "other", "t") for i in range(2000)]).repartition(16)
    store.overwrite(MODEL_TAGS, many)
    # Optimized writes bin the 16 input partitions' rows into files of a useful size.
    assert len(DeltaTable(store.path(MODEL_TAGS)).file_uris()) <= 2
    for i in range(3):
        store.upsert(MODEL_TAGS, tags_df(spark, [(f"new/{i}", "t", "other", "t")]))
    assert len(DeltaTable(store.path(MODEL_TAGS)).file_uris()) >= 3
    before = store.version(MODEL_TAGS)
    metrics = store.optimize(MODEL_TAGS)
    assert metrics["numFilesAdded"] == 1
    # OPTIMIZE commits a version that changes no row: the data version stays.
    assert store.version(MODEL_TAGS) == before + 1
    assert store.data_version(MODEL_TAGS) == before
    assert len(DeltaTable(store.path(MODEL_TAGS)).file_uris()) == 1
    assert store.read(MODEL_TAGS).count() == 2003
    assert store.history(MODEL_TAGS)[0]["operation"] == "OPTIMIZE"


def test_tables_bin_their_files_whatever_the_cluster_sets(spark, store):
    """A cluster without the embedded defaults (no optimized-writes setting in its
    session) still writes few files: the property is the table's, set at its creation.
    (A session that sets it to false on purpose wins over the table, as Delta intends.)"""
    key = "spark.databricks.delta.optimizeWrite.enabled"
    previous = spark.conf.get(key, None)
    spark.conf.unset(key)
    try:
        many = tags_df(spark, [(f"m/{i}", "t", "other", "t") for i in range(2000)]).repartition(16)
        store.overwrite(MODEL_TAGS, many)
        store.upsert(MODEL_TAGS, tags_df(spark, [(f"n/{i}", "t", "other", "t")
                                                 for i in range(500)]).repartition(16))
    finally:
        spark.conf.unset(key) if previous is None else spark.conf.set(key, previous)
    properties = spark.sql(f"DESCRIBE DETAIL delta.`{store.path(MODEL_TAGS)}`").first().properties
    assert properties["delta.autoOptimize.optimizeWrite"] == "true"
    assert properties["delta.autoOptimize.autoCompact"] == "true"
    assert len(DeltaTable(store.path(MODEL_TAGS)).file_uris()) <= 3  # not 16 + 16


def test_a_big_file_is_written_in_row_groups_that_every_core_reads(spark, store):
    """Optimized writes put a table in one file; the defaults' 16 MB Parquet row groups
    (``parquet.block.size`` in conf/spark-defaults.conf) let a read split it, so both of
    the session's cores (and DuckDB's threads) read it, not one task."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    # About 30 MB of hex digests, which compress little.
    rows = (spark.range(150_000).select(
        F.format_string("m/%d", "id").alias("model_id"),
        F.sha2(F.col("id").cast("string"), 512).alias("tag"),
        F.lit("other").alias("kind"), F.sha2(F.col("id").cast("string"), 256).alias("value"),
        F.lit(None).cast("string").alias("relation")))
    store.overwrite(MODEL_TAGS, rows)
    files = [uri.removeprefix("file://") for uri in DeltaTable(store.path(MODEL_TAGS)).file_uris()]
    assert len(files) == 1
    assert pq.ParquetFile(files[0]).metadata.num_row_groups >= 2
    per_task = store.read(MODEL_TAGS).rdd.glom().map(len).collect()
    assert len(per_task) >= 2 and min(per_task) > 0 and sum(per_task) == 150_000, per_task


def test_an_overwrite_of_known_size_writes_its_partitions_as_they_are(spark, store):
    """``files=N``: at most N files straight from the frame's partitions (no optimized
    write, so no second shuffle of every row), every row kept."""
    from pyspark.sql import functions as F

    rows = spark.range(0, 40_000, 1, 4).select(
        F.format_string("m/%d", "id").alias("model_id"), F.lit("t").alias("tag"),
        F.lit("other").alias("kind"), F.col("id").cast("string").alias("value"),
        F.lit(None).cast("string").alias("relation"))
    store.overwrite(MODEL_TAGS, rows, files=2)
    write = next(h for h in DeltaTable(store.path(MODEL_TAGS)).history() if h["operation"] == "WRITE")
    assert int(write["operationMetrics"]["numFiles"]) == 2
    assert store.read(MODEL_TAGS).count() == 40_000
    assert store.read(MODEL_TAGS).exceptAll(rows).count() == 0


def test_vacuum_removes_files_no_version_needs(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))
    store.overwrite(MODEL_TAGS, tags_df(spark, [("b/y", "de", "language", "de")]))
    folder = store.path(MODEL_TAGS)
    orphan = os.path.join(folder, "part-00000-killed-write.snappy.parquet")
    with open(orphan, "wb") as fh:
        fh.write(b"PAR1 left by a killed job")
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    parquet = lambda: sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))  # noqa: E731
    assert len(parquet()) == 3
    store.vacuum(MODEL_TAGS, retention_hours=0)
    assert parquet() == sorted(os.path.basename(p) for p in DeltaTable(folder).file_uris())
    assert rows_of(store) == [("b/y", "de", "language", "de", None)]


def test_upkeep_compacts_and_vacuums_only_what_needs_it(spark, store):
    from semfin_spark.nightly import maintain_tables

    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))
    assert store.file_summary(MODEL_TAGS)[0] == 1 and not store.needs_compaction(MODEL_TAGS)
    version = store.version(MODEL_TAGS)
    # One small file and nothing older than the retention: no command, no version.
    assert maintain_tables(store, [MODEL_TAGS.name], retention_hours=1, progress=print) == {
        MODEL_TAGS.name: "fine", "vacuumed": []}
    assert store.version(MODEL_TAGS) == version
    for i in range(2):
        store.append(MODEL_TAGS, tags_df(spark, [(f"b/{i}", "de", "language", "de")]))
    assert store.file_summary(MODEL_TAGS)[0] == 3 and store.needs_compaction(MODEL_TAGS)
    folder = store.path(MODEL_TAGS)
    orphan = os.path.join(folder, "part-00000-killed-write.snappy.parquet")
    with open(orphan, "wb") as fh:
        fh.write(b"PAR1 left by a killed job")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    assert store.oldest_data_file_age_hours(MODEL_TAGS) > 1.9
    done = maintain_tables(store, [MODEL_TAGS.name], retention_hours=1, progress=print)
    assert done == {MODEL_TAGS.name: "3->1 files", "vacuumed": [MODEL_TAGS.name]}
    assert not os.path.exists(orphan) and store.file_summary(MODEL_TAGS)[0] == 1
    assert len(rows_of(store)) == 3


def test_reader_during_writes_sees_whole_versions_only(spark, store):
    small = tags_df(spark, [(f"m/{i}", "t", "other", "t") for i in range(10)])
    large = tags_df(spark, [(f"m/{i}", "t", "other", "t") for i in range(500)]).repartition(4)
    store.overwrite(MODEL_TAGS, small)
    seen: list[int] = []
    stop = threading.Event()

    def read_loop():
        while not stop.is_set():
            seen.append(DeltaTable(store.path(MODEL_TAGS)).to_pyarrow_table().num_rows)

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for _ in range(2):
            store.overwrite(MODEL_TAGS, large)
            store.overwrite(MODEL_TAGS, small)
    finally:
        stop.set()
        reader.join()
    assert seen and set(seen) <= {10, 500}


_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    sys.path.insert(0, {repo!r})
    from semfin_spark.settings import load_settings
    from semfin_spark.session import build_session
    from semfin_spark.delta import ConcurrentWriteError, DeltaStore
    from semfin_spark.schemas import MODEL_TAGS
    s = load_settings(environ={{}}, overrides={{"warehouse": {wh!r}, "spark.master": "local[1]"}})
    spark = build_session(s, extra_conf={{"spark.ui.enabled": "false",
                                          "spark.sql.shuffle.partitions": "1"}})
    store = DeltaStore.from_settings(spark, s)
    rows = lambda ids, v: spark.createDataFrame([(m, "t", "other", v, None) for m in ids],
                                                MODEL_TAGS.schema)
""")


def _child(repo, wh, body):
    return _CHILD.format(repo=repo, wh=wh) + textwrap.dedent(body)


def test_process_killed_mid_write_leaves_previous_version(tmp_path):
    """A real SIGKILL of the driver while executors write the data files of a MERGE."""
    script = _child(REPO, str(tmp_path / "wh"), """
        store.overwrite(MODEL_TAGS, rows(["keep/me"], "t"))
        from pyspark.sql import functions as F
        driver = os.getpid()
        def kill_on_last(m):
            if m == "z/999":
                time.sleep(1)  # let other rows' files be written first
                os.kill(driver, signal.SIGKILL)
            return m
        doomed = rows([f"z/{i:03d}" for i in range(1000)], "t").withColumn(
            "model_id", F.udf(kill_on_last)("model_id"))
        store.upsert(MODEL_TAGS, doomed.repartition(4))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=short_jvm_env())
    assert proc.returncode == -9, proc.stderr[-2000:]
    table = DeltaTable(str(tmp_path / "wh" / "model_tags"))
    assert table.version() == 0
    assert table.to_pyarrow_table().column("model_id").to_pylist() == ["keep/me"]


def test_two_writers_at_once_lose_nothing_and_duplicate_nothing(tmp_path):
    """Two processes merge overlapping keys into one table at the same moment: each
    lands or fails with ConcurrentWriteError; the key is never broken."""
    wh = str(tmp_path / "wh")
    go = tmp_path / "go"
    procs = []
    for writer in ("a", "b"):
        script = _child(REPO, wh, f"""
            ids = [f"m/{{i:04d}}" for i in range(0, 3000)]
            frame = rows(ids, {writer!r}).repartition(2).cache()
            frame.count()
            open(os.path.join({str(tmp_path)!r}, "ready-{writer}"), "w").close()
            while not os.path.exists({str(go)!r}):
                time.sleep(0.05)
            try:
                store.upsert(MODEL_TAGS, frame)
                print("RESULT landed")
            except ConcurrentWriteError as exc:
                print("RESULT conflict", str(exc)[:80])
        """)
        procs.append(subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True,
                                      env=short_jvm_env()))
    deadline = time.monotonic() + 280
    while not all((tmp_path / f"ready-{w}").exists() for w in ("a", "b")):  # both sessions up
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            [p.communicate()[1][-2000:] for p in procs if p.poll() is not None]
        time.sleep(0.05)
    go.write_text("go")
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        outcomes.append([l for l in out.splitlines() if l.startswith("RESULT")][-1])
    assert any(o == "RESULT landed" for o in outcomes), outcomes
    table = DeltaTable(os.path.join(wh, "model_tags")).to_pyarrow_table()
    ids = table.column("model_id").to_pylist()
    assert len(ids) == len(set(ids)) == 3000
    assert set(table.column("value").to_pylist()) <= {"a", "b"}
    assert all(o in ("RESULT landed",) or o.startswith("RESULT conflict") for o in outcomes)


def test_duckdb_reads_the_table_with_its_delta_extension(spark, store):
    duckdb = pytest.importorskip("duckdb")
    ext = pytest.importorskip("duckdb_ext", reason="duckdb-ext-delta wheel not installed (x86_64 Linux only)")
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit"), ("a/y", "en", "language", "en")]))
    store.upsert(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "MIT")]))
    con = duckdb.connect(config={"extension_directory": os.path.join(list(ext.__path__)[0], "extensions"),
                                 "autoinstall_known_extensions": "false"})
    con.sql("LOAD delta")
    got = con.sql(f"SELECT model_id, value FROM delta_scan('{store.path(MODEL_TAGS)}') ORDER BY 1").fetchall()
    assert got == [("a/x", "MIT"), ("a/y", "en")]


def test_a_session_without_the_jars_is_refused_with_the_fix():
    class NoJvm:
        sparkContext = None

    with pytest.raises(DeltaError, match="setup_env.sh"):
        DeltaStore(NoJvm(), "/tmp/never")  # type: ignore[arg-type]


def test_a_warehouse_path_with_a_space_and_brackets(spark, tmp_path):
    store = DeltaStore(spark, str(tmp_path / "with space [2022]"))
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))
    store.upsert(MODEL_TAGS, tags_df(spark, [("b/y", "de", "language", "de")]))
    assert store.version(MODEL_TAGS) == 1
    assert [r.model_id for r in store.read(MODEL_TAGS).orderBy("model_id").collect()] == ["a/x", "b/y"]
    assert store.read(MODEL_TAGS, version=0).count() == 1
    assert DeltaTable(store.path(MODEL_TAGS)).to_pyarrow_table().num_rows == 2
