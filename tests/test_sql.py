"""SQL over the warehouse: tables as views, queried as an analyst would."""

from __future__ import annotations

import json

from semfin_spark.delta import DeltaStore
from semfin_spark.ingest import ingest
from semfin_spark.sql import register_tables, run_query


def test_query_hub_models_and_rejects(spark, settings, tmp_path):
    store = DeltaStore.from_settings(spark, settings)
    lines = [json.dumps({"id": f"o/m{i}", "pipeline_tag": "text-generation" if i % 2 else "fill-mask"})
             for i in range(10)] + ["{broken"]
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ingest(spark, store, f"snapshot:{path}", settings, progress=lambda _: None)
    assert {"hub_models", "ingest_rejects"} <= set(register_tables(spark, store))
    rows = run_query(spark, store, "SELECT pipeline_tag, count(*) AS n FROM hub_models "
                                   "GROUP BY 1 ORDER BY 1").collect()
    assert [(r.pipeline_tag, r.n) for r in rows] == [("fill-mask", 5), ("text-generation", 5)]
    assert run_query(spark, store, "SELECT reason FROM ingest_rejects").collect()[0].reason == "invalid_json"


def test_time_travel_reads_the_earlier_version(spark, settings, tmp_path):
    from semfin_spark.delta import DeltaError
    from semfin_spark.sql import parse_as_of

    store = DeltaStore.from_settings(spark, settings)
    for n in (3, 5):
        path = tmp_path / f"s{n}.jsonl"
        path.write_text("".join(json.dumps({"id": f"o/m{i}"}) + "\n" for i in range(n)))
        ingest(spark, store, f"snapshot:{path}", settings, progress=lambda _: None)
    first, last = sorted(h["version"] for h in store.history("hub_models"))[-2:]
    count = "SELECT count(*) AS n FROM hub_models"
    assert run_query(spark, store, count).collect()[0].n == 5
    assert run_query(spark, store, count, parse_as_of(str(first))).collect()[0].n == 3
    assert run_query(spark, store, count, parse_as_of(f"hub_models={first}")).collect()[0].n == 3
    # Delta's own SQL time travel works on the table paths too.
    assert spark.sql(f"SELECT count(*) AS n FROM delta.`{store.path('hub_models')}` "
                     f"VERSION AS OF {first}").collect()[0].n == 3
    try:
        run_query(spark, store, count, parse_as_of("hub_models=99")).collect()
        raise AssertionError("version 99 does not exist")
    except DeltaError as exc:
        assert "has no version 99" in str(exc)


def test_statements_that_write_run_code_or_read_files_are_refused(spark, settings, tmp_path):
    """Issue 16 §7: each of these once destroyed a table or escaped the warehouse."""
    import pytest

    from semfin_spark.schemas import HUB_MODELS
    from semfin_spark.sql import ReadOnlyError

    store = DeltaStore.from_settings(spark, settings)
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"id": f"o/m{i}"}) + "\n" for i in range(4)))
    ingest(spark, store, f"snapshot:{path}", settings, progress=lambda _: None)
    table = store.path("hub_models")
    refused = [
        f"INSERT OVERWRITE DIRECTORY '{table}' USING parquet SELECT * FROM hub_models",
        "CREATE TABLE stolen AS SELECT * FROM hub_models",
        "DROP VIEW hub_models",
        "SET spark.sql.ansi.enabled=false",
        "ADD JAR /tmp/evil.jar",
        "CACHE TABLE hub_models",
        "SELECT reflect('java.lang.System', 'exit', 0)",
        "SELECT id FROM hub_models WHERE id = java_method('java.lang.String', 'valueOf', 1)",
        "WITH x AS (SELECT reflect('java.lang.Thread', 'sleep', 1000L) AS r) SELECT * FROM x",
        "SELECT * FROM hub_models WHERE id IN (SELECT java_method('a', 'b'))",
        "SELECT * FROM parquet.`/etc`",
        "SELECT * FROM text.`/etc/passwd`",
        f"SELECT * FROM delta.`{tmp_path}/elsewhere`",
        "SELECT * FROM read_files('/etc/passwd')",
    ]
    for statement in refused:
        with pytest.raises(ReadOnlyError):
            run_query(spark, store, statement)
    assert store.read(HUB_MODELS).count() == 4
    assert not (tmp_path / "spark-warehouse").exists()
    # What analysts write still runs: CTEs, subqueries, windows, time travel on a path.
    allowed = run_query(spark, store, f"""
        WITH ranked AS (SELECT id, row_number() OVER (ORDER BY id) AS r FROM hub_models)
        SELECT count(*) AS n FROM ranked
        WHERE r <= 3 AND id IN (SELECT id FROM delta.`{table}` VERSION AS OF 0)""").collect()
    assert allowed[0].n == 3
    assert {r.tableName for r in run_query(spark, store, "SHOW TABLES").collect()} >= {"hub_models"}


def test_a_missing_table_is_named_not_skipped(spark, settings):
    import pytest

    from semfin_spark.sql import MissingTableError

    store = DeltaStore.from_settings(spark, settings)
    with pytest.raises(MissingTableError, match="lineage_edges is not in the warehouse"):
        run_query(spark, store, "SELECT count(*) FROM lineage_edges").collect()


def test_a_warehouse_nothing_can_be_created_in_can_still_be_queried(spark, settings, tmp_path,
                                                                    caplog):
    """Issue 16 §10: setCheckpointDir failed first on a read-only warehouse. (Tests run as
    root, which ignores file modes: the checkpoint folder is blocked by a file instead.)"""
    from semfin_spark.session import _set_checkpoint_dir

    store = DeltaStore.from_settings(spark, settings)
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps({"id": f"o/m{i}"}) + "\n" for i in range(3)))
    ingest(spark, store, f"snapshot:{path}", settings, progress=lambda _: None)
    (tmp_path / "warehouse" / "_checkpoints").write_text("not a folder")
    _set_checkpoint_dir(spark, settings.warehouse)
    assert "using local checkpoints" in caplog.text
    assert run_query(spark, store, "SELECT count(*) AS n FROM hub_models").collect()[0].n == 3
