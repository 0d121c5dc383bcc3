"""The Delta seam: round trips, versions, merges, isolation, killed writes, other readers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaError, DeltaStore, delta_jars_available
from semfin_spark.schemas import MODEL_TAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tags_df(spark, rows):
    return spark.createDataFrame(
        [(m, t, k, v, None) for m, t, k, v in rows], MODEL_TAGS.schema)


def rows_of(store, version=None):
    return sorted(tuple(r) for r in store.read(MODEL_TAGS, version).collect())


@pytest.fixture
def store(spark, tmp_path):
    return DeltaStore(spark, str(tmp_path / "wh"), backend="delta-rs")


def test_round_trip_versions_and_history(spark, store):
    first = tags_df(spark, [("a/x", "mit", "license", "mit"), ("a/y", "en", "language", "en")])
    assert store.read(MODEL_TAGS).count() == 0  # a missing table reads empty, with its schema
    assert store.overwrite(MODEL_TAGS, first).version == 0
    assert store.append(MODEL_TAGS, tags_df(spark, [("b/z", "gguf", "format", "gguf")])).version == 1
    assert len(rows_of(store)) == 3
    assert rows_of(store, version=0) == sorted(tuple(r) for r in first.collect())
    history = store.history(MODEL_TAGS)
    assert [h["version"] for h in history] == [1, 0]
    assert history[0]["semfin_operation"] == "APPEND"
    # The table is a plain Delta table for delta-rs, with per-file statistics.
    dt = DeltaTable(store.path(MODEL_TAGS))
    assert dt.version() == 1
    assert dt.to_pyarrow_table().num_rows == 3
    actions = dt.get_add_actions(flatten=True)
    assert sum(actions.column("num_records").to_pylist()) == 3
    assert "min.model_id" in actions.schema.names


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


def test_untouched_files_are_not_rewritten(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]).coalesce(1))
    store.append(MODEL_TAGS, tags_df(spark, [("b/y", "de", "language", "de")]).coalesce(1))
    files_before = set(DeltaTable(store.path(MODEL_TAGS)).file_uris())
    result = store.upsert(MODEL_TAGS, tags_df(spark, [("b/y", "de", "language", "DE")]).coalesce(1))
    files_after = set(DeltaTable(store.path(MODEL_TAGS)).file_uris())
    assert result.files_removed == 1
    assert len(files_before & files_after) == 1  # a/x's file survives untouched


def test_empty_merge_commits_nothing(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))
    result = store.upsert(MODEL_TAGS, tags_df(spark, []))
    assert result.version is None
    assert store.version(MODEL_TAGS) == 0


def test_missing_column_is_a_clear_error(spark, store):
    with pytest.raises(DeltaError, match="missing column"):
        store.overwrite(MODEL_TAGS, spark.createDataFrame([("a/x",)], ["model_id"]))


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
        for _ in range(3):
            store.overwrite(MODEL_TAGS, large)
            store.overwrite(MODEL_TAGS, small)
    finally:
        stop.set()
        reader.join()
    assert seen and set(seen) <= {10, 500}


def test_write_that_fails_before_commit_leaves_no_trace(spark, store, monkeypatch):
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed between staging and commit")

    monkeypatch.setattr(DeltaStore, "_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        store.overwrite(MODEL_TAGS, tags_df(spark, [("z/z", "x", "other", "x")]))
    monkeypatch.undo()
    assert store.version(MODEL_TAGS) == 0
    assert rows_of(store) == [("a/x", "mit", "license", "mit", None)]
    store.append(MODEL_TAGS, tags_df(spark, [("b/y", "de", "language", "de")]))
    assert len(rows_of(store)) == 2


def test_process_killed_mid_commit_leaves_previous_version(tmp_path):
    """A real SIGKILL after the files are in the table folder, before the log entry."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {REPO!r})
        from semfin_spark.settings import load_settings
        from semfin_spark.session import build_session
        from semfin_spark.delta import DeltaStore
        from semfin_spark.schemas import MODEL_TAGS
        s = load_settings(environ={{}}, overrides={{"warehouse": {str(tmp_path / 'wh')!r},
                                                    "spark.master": "local[1]"}})
        spark = build_session(s, extra_conf={{"spark.ui.enabled": "false"}})
        store = DeltaStore.from_settings(spark, s)
        row = lambda m: spark.createDataFrame([(m, "t", "other", "t", None)], MODEL_TAGS.schema)
        store.overwrite(MODEL_TAGS, row("keep/me"))
        real_move = DeltaStore._move_into_table
        def move_then_die(self, staged):
            out = real_move(self, staged)
            os.kill(os.getpid(), signal.SIGKILL)
        DeltaStore._move_into_table = move_then_die
        store.overwrite(MODEL_TAGS, row("lost/write"))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    table = DeltaTable(str(tmp_path / "wh" / "model_tags"))
    assert table.version() == 0
    assert table.to_pyarrow_table().column("model_id").to_pylist() == ["keep/me"]
    # The orphaned Parquet file is on disk but in no version; a vacuum removes it.
    orphans = [f for f in os.listdir(tmp_path / "wh" / "model_tags") if f.endswith(".parquet")]
    assert len(orphans) == 2


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


def test_native_delta_backend(spark, tmp_path):
    if not delta_jars_available(spark):
        pytest.skip("Delta Lake jars not in the JVM (Maven is unreachable here; on a cluster start "
                    "Spark with --packages io.delta:delta-spark_2.13:<version>)")
    store = DeltaStore(spark, str(tmp_path / "wh"), backend="native")
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))
    store.upsert(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "MIT"), ("b/y", "de", "language", "de")]))
    assert rows_of(store) == [("a/x", "mit", "license", "MIT", None), ("b/y", "de", "language", "de", None)]
    assert DeltaTable(store.path(MODEL_TAGS)).to_pyarrow_table().num_rows == 2


def test_native_backend_refused_without_jars(spark, tmp_path):
    if delta_jars_available(spark):
        pytest.skip("Delta Lake jars are present: the refusal cannot be observed")
    with pytest.raises(DeltaError, match="--packages io.delta"):
        DeltaStore(spark, str(tmp_path / "wh"), backend="native")


def test_delta_spark_reads_what_delta_rs_committed(spark, store):
    store.overwrite(MODEL_TAGS, tags_df(spark, [("a/x", "mit", "license", "mit")]))
    if not delta_jars_available(spark):
        pytest.skip("Delta Lake jars not in the JVM: delta-spark cannot read here (Maven unreachable)")
    assert spark.read.format("delta").load(store.path(MODEL_TAGS)).where(F.col("model_id") == "a/x").count() == 1
