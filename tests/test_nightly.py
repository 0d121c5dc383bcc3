"""The whole refresh on a small generated Hub: every stage, every table, twice (idempotent)."""

from __future__ import annotations

import json

import pytest

from semfin_spark.delta import DeltaStore
from semfin_spark.nightly import format_summary, run_nightly
from semfin_spark.schemas import HUB_MODELS, LINEAGE_CHAINS, MODEL_FIELDS


@pytest.fixture(scope="module")
def nightly_run(spark, tmp_path_factory):
    from semfin_spark.settings import load_settings

    root = tmp_path_factory.mktemp("nightly")
    settings = load_settings(environ={}, overrides={"warehouse": str(root / "wh")})
    store = DeltaStore.from_settings(spark, settings)
    lines: list[str] = []
    first = run_nightly(spark, store, settings, "synthetic:1500,seed=3", progress=lines.append)
    versions = {name: info["version"] for name, info in first.tables.items()}
    return settings, store, first, versions, lines


def test_every_stage_ran_and_wrote_its_tables(nightly_run):
    settings, store, result, _, lines = nightly_run
    assert list(result.stages) == ["ingest", "flatten", "lineage"]
    assert result.stages["ingest"]["written"] == 1500
    for table in ("hub_models", "config_features", "model_tags", "model_files", "model_fields",
                  "model_parents", "lineage_edges", "lineage_components", "lineage_chains"):
        assert result.tables[table]["rows"] > 0, table
    assert any("nightly: 3/3 lineage" in l for l in lines)
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
    chains = result.stages["lineage"]["chains"]
    assert chains["with_imputed"] >= chains["declared"]
    assert store.read(LINEAGE_CHAINS).where("variant = 'with_imputed'").count() == \
        store.read(LINEAGE_CHAINS).where("variant = 'declared'").count()


def test_second_run_converges_without_duplicates(spark, nightly_run):
    settings, store, _, versions, _ = nightly_run
    again = run_nightly(spark, store, settings, "synthetic:1500,seed=3", progress=lambda _: None)
    assert again.stages["ingest"]["written"] == 0
    assert again.tables["hub_models"]["version"] == versions["hub_models"]
    assert again.tables["config_features"]["version"] == versions["config_features"]
    for name in ("hub_models", "model_fields", "config_features", "lineage_chains"):
        assert again.tables[name]["rows"] == store.read(name).distinct().count()
