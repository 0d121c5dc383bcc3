"""The whole refresh on a small generated Hub: every stage, every table, twice (idempotent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semfin_spark.nightly import format_summary, run_nightly
from semfin_spark.schemas import HUB_MODELS, LINEAGE_CHAINS, MODEL_FIELDS
from semfin_spark.settings import FIELDS, SettingsError

from oracles import union_find_components


def test_every_stage_ran_and_wrote_its_tables(nightly_run):
    settings, store, result, _, lines = nightly_run
    assert list(result.stages) == ["ingest", "flatten", "train", "impute", "lineage", "aibom",
                                   "upkeep"]
    # The upkeep left every table the night wrote compact: a small table is one file (none
    # when it is empty), not one per shuffle partition. Tables written compact were left
    # alone; the others were compacted by an OPTIMIZE that changed no row. Nothing is old
    # enough to vacuum on a first night.
    from deltalake import DeltaTable

    upkeep = dict(result.stages["upkeep"])
    assert upkeep.pop("vacuumed") == []
    assert upkeep.pop("checkpoints_removed") == 0
    assert {"hub_models", "model_fields", "lineage_chains"} <= set(upkeep)
    for name, done in upkeep.items():
        if name != "runs":  # runs gains rows after the upkeep
            assert len(DeltaTable(store.path(name)).file_uris()) == min(1, store.read(name).count()), name
        optimized = store.history(name)[0]["operation"] == "OPTIMIZE"
        assert optimized == (done != "fine") or name == "runs", (name, done)
    assert result.stages["ingest"]["written"] == 1500
    assert set(result.stages["train"]["registered"]) == {f"semfin-{f}" for f in FIELDS}
    assert result.stages["impute"]["table_version"] == store.data_version("model_fields")
    assert all(result.stages["impute"][f]["scored"] > 0 for f in FIELDS)
    for table in ("hub_models", "config_features", "model_tags", "model_files", "model_fields",
                  "model_parents", "lineage_edges", "lineage_components", "lineage_chains"):
        assert result.tables[table]["rows"] > 0, table
    assert any("nightly: 5/6 lineage" in l for l in lines)
    assert any("nightly: 6/6 aibom" in l for l in lines)
    assert result.stages["aibom"]["written"] == 1500 and result.stages["aibom"]["invalid"] == 0
    report = json.loads(open(result.stages["lineage"]["report"]).read())
    assert report["paths"] > 0 and report["components"] > 0
    assert "SemFin nightly summary" in format_summary(result)


def test_declared_fields_one_row_per_model_and_field(nightly_run):
    _, store, _, _, _ = nightly_run
    fields = store.read(MODEL_FIELDS)
    assert store.read(HUB_MODELS).count() * 5 == fields.count()
    assert fields.select("model_id", "field").distinct().count() == fields.count()


def test_chains_gain_from_imputation(nightly_run):
    _, store, result, _, _ = nightly_run
    # the generator leaves some relations without evidence and many licences missing:
    # imputation completes chains of both kinds
    chains = result.stages["lineage"]["chains"]
    licences = result.stages["lineage"]["license_chains"]
    assert chains["with_imputed"] > chains["declared"] > 0
    assert licences["with_imputed"] > licences["declared"] > 0
    imputed_edges = store.read("lineage_edges").where("relation_source = 'imputed'").count()
    assert imputed_edges > 0
    assert store.read(LINEAGE_CHAINS).where("variant = 'with_imputed'").count() == \
        store.read(LINEAGE_CHAINS).where("variant = 'declared'").count()


def test_second_run_converges_without_duplicates(spark, nightly_run):
    settings, store, _, versions, _ = nightly_run
    again = run_nightly(spark, store, settings, "synthetic:1500,seed=3", progress=lambda _: None)
    assert again.stages["ingest"]["written"] == 0
    assert again.stages["train"]["unchanged"] and again.stages["impute"]["table_version"] is None
    assert again.tables["model_fields"]["version"] == versions["model_fields"]
    assert again.tables["hub_models"]["version"] == versions["hub_models"]
    assert again.tables["config_features"]["version"] == versions["config_features"]
    # Nothing changed, so no BOM is rewritten and aibom_state gains no version.
    assert again.stages["aibom"]["written"] == 0 and again.stages["aibom"]["unchanged"] == 1500
    assert again.tables["aibom_state"]["version"] == versions["aibom_state"]
    for name in ("hub_models", "model_fields", "config_features", "lineage_chains"):
        assert again.tables[name]["rows"] == store.read(name).distinct().count()
    # Lineage's inputs are those of the first night's report: its tables stand.
    assert again.stages["lineage"]["unchanged"]
    for name in ("lineage_edges", "lineage_components", "lineage_chains", "license_conflicts"):
        assert again.tables[name]["version"] == versions[name]
    # The report compares with the state the second night started from: nothing changed.
    changes = json.loads(Path(again.report["json"]).read_text())["changes"]
    assert [changes[k]["count"] for k in ("new_models", "new_conflicts", "resolved_conflicts",
                                          "new_chains")] == [0, 0, 0, 0]
    assert changes["newly_imputed"] == []


def test_report_matches_what_the_generator_planted(nightly_run):
    """Edges, self-loops, isolated models and components, recomputed in plain Python from
    the generated records' own declarations (tags and card), as the generator wrote them."""
    import collections

    from semfin_spark import synthetic

    _, _, result, _, _ = nightly_run
    report = json.loads(open(result.stages["lineage"]["report"]).read())
    records = [r for b in range(-(-1500 // 64)) for r in synthetic.generate_block(3, b, 64, 1500)]
    declared: dict[tuple[str, str], str] = {}  # a parent named twice (any case) counts once
    for r in records:
        card = r["cardData"] or {}
        base = card.get("base_model")
        named = [t.split(":")[-1] for t in r["tags"] if t.startswith("base_model:")]
        named += [base] if isinstance(base, str) else list(base or [])
        for parent in named:
            declared.setdefault((r["id"], parent.lower()), parent)
    edges = {(child, parent) for (child, _), parent in declared.items() if parent != child}
    assert report["self_loops"] == len(declared) - len(edges) > 0
    assert report["edges"] == len(edges)
    linked = {n for e in edges for n in e}
    assert report["isolated_models"] == sum(r["id"] not in linked for r in records)
    sizes = collections.Counter(union_find_components(linked, edges).values())
    assert report["components"] == len(sizes)
    assert report["largest_component"] == max(sizes.values())


def test_a_stage_releases_its_checkpoints_and_the_upkeep_clears_killed_runs(spark):
    import os
    import time
    from pathlib import Path
    from urllib.parse import urlparse

    from semfin_spark.session import checkpoint_dir, clear_stale_checkpoints, release_checkpoints

    mine = Path(urlparse(checkpoint_dir(spark)).path)
    spark.range(10).checkpoint(eager=True)            # a reliable checkpoint: files in mine
    assert any(p.is_file() for p in mine.rglob("*"))
    old = time.time() - 48 * 3600
    killed, running, empty = (mine.parent / n for n in ("killed-run", "running-job", "empty-old"))
    for folder in (killed / "rdd-3", running / "rdd-7", empty):
        folder.mkdir(parents=True)
    for folder in (killed, running):
        (next(folder.iterdir()) / "part-00000").write_bytes(b"x")
    for path in (*killed.rglob("*"), killed, empty):
        os.utime(path, (old, old))
    os.utime(mine, (old, old))                        # this application's folder is never stale
    assert clear_stale_checkpoints(spark, 24) == 2
    assert not killed.exists() and not empty.exists() and running.exists() and mine.exists()
    release_checkpoints(spark)
    assert not mine.exists()
    assert spark.range(5).checkpoint(eager=True).count() == 5   # the folder comes back when needed
    assert clear_stale_checkpoints(spark, 0) == 1 and not running.exists()


def test_a_warehouse_behind_another_hadoop_file_system_keeps_its_reports_there(
        spark, nightly_run, tmp_path):
    """On an object store (``s3a://``, ``abfss://``) the warehouse is no local folder: the
    nightly's lineage report, its page and the evaluation are written and read back through
    Hadoop's file system, as the tables are. The night used to fail there after writing
    every table, at ``open('s3a://.../reports/lineage.json')``, and again on every retry.
    viewfs, Hadoop's mount-table file system, over a copy of the shared nightly's warehouse,
    stands in for the object store (the same failure, the same fix, checked by hand on an
    S3 server)."""
    import dataclasses
    import shutil
    import uuid
    from argparse import Namespace

    from semfin_spark.cli import missing_input
    from semfin_spark.delta import DeltaStore
    from semfin_spark.lineage import run_lineage
    from semfin_spark.session import read_text, write_text

    from conftest import NIGHTLY_SOURCE

    settings, _, first, _, _ = nightly_run
    local = tmp_path / "wh"
    shutil.copytree(settings.warehouse, local)
    (local / "reports" / "lineage.json").unlink()  # so lineage rebuilds and writes it anew
    mount = f"semfin{uuid.uuid4().hex[:8]}"
    spark.sparkContext._jsc.hadoopConfiguration().set(  # noqa: SLF001
        f"fs.viewfs.mounttable.{mount}.link./wh", local.as_uri())
    remote = f"viewfs://{mount}/wh"
    copy = settings.replace(
        warehouse=remote,
        mlflow=dataclasses.replace(settings.mlflow, tracking_uri=f"sqlite:///{local}/mlflow.db"),
        aibom=dataclasses.replace(settings.aibom, nightly=False))
    store = DeltaStore.from_settings(spark, copy)

    # BOMs are plain files the executors write: on the store, aibom.dir must say where,
    # and the night says so before it starts, not after every other stage.
    runs_version = store.version("runs")
    with pytest.raises(SettingsError, match="set aibom.dir to a folder every executor reaches"):
        run_nightly(spark, store, copy.replace(aibom=settings.aibom), NIGHTLY_SOURCE,
                    progress=lambda _: None)
    assert store.version("runs") == runs_version

    night = run_nightly(spark, store, copy, NIGHTLY_SOURCE, progress=lambda _: None)
    lineage = night.stages["lineage"]
    assert lineage["report"] == f"{remote}/reports/lineage.json" and not lineage.get("unchanged")
    written = json.loads((local / "reports" / "lineage.json").read_text(encoding="utf-8"))
    original = json.loads(Path(first.stages["lineage"]["report"]).read_text(encoding="utf-8"))
    for key in ("edges", "components", "largest_component", "chains", "license_chains"):
        assert written[key] == original[key], key
    assert night.report["html"] == f"{remote}/reports/report.html"
    assert "<html" in (local / "reports" / "report.html").read_text(encoding="utf-8")
    assert json.loads((local / "reports" / "report.json").read_text(encoding="utf-8"))["changes"]
    # The next run reads that report back through Hadoop: nothing changed, its tables stand.
    again = run_lineage(spark, store, copy, progress=lambda _: None,
                        last_report=f"{remote}/reports/lineage.json")
    assert again["unchanged"] and again["chains"] == original["chains"]
    write_text(f"{remote}/reports/note.txt", "licence chains: übersetzt ✓\n", spark)
    assert (local / "reports" / "note.txt").read_text(encoding="utf-8") == "licence chains: übersetzt ✓\n"
    assert read_text(f"{remote}/reports/note.txt", spark) == "licence chains: übersetzt ✓\n"
    assert read_text(f"{remote}/reports/none.txt", spark) is None
    # A stage pointed at a folder there without its input tables is refused, as locally
    # (checked through the store once Spark runs, since no local folder can be looked at).
    typo = DeltaStore(spark, f"{remote}/typo")
    assert "has no model_parents table: run `semfin flatten` first" in \
        missing_input(Namespace(stage="lineage"), typo.warehouse, typo.exists)
