"""The nightly report: its figures against the tables, and the page as a browser shows it."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess

import pytest

from semfin_spark.report import CONFIDENCE_BINS, make_report, previous_versions
from semfin_spark.sql_duckdb import DuckDBEngine


def _frame(path, version=None):
    from deltalake import DeltaTable

    return DeltaTable(path, version=version).to_pandas()


@pytest.fixture(scope="module")
def report(spark, nightly_run, tmp_path_factory):
    """The report of the shared nightly warehouse, written afresh into a folder of its own,
    after a real evaluation of one field (which the warehouse then keeps for the report)."""
    from semfin_spark.evaluate import evaluate_command, evaluation_path

    settings, store, _, _, _ = nightly_run
    evaluate_command(spark, store, settings, fields=("pipeline_tag",), progress=lambda _: None)
    assert json.loads(open(evaluation_path(settings.warehouse)).read())["fields"]["pipeline_tag"]
    out = tmp_path_factory.mktemp("report")
    engine = DuckDBEngine(settings.warehouse)
    try:
        figures = make_report(engine, settings.warehouse, str(out), progress=lambda _: None)
    finally:
        engine.close()
    return settings, figures, out


def test_the_nightly_writes_its_report_and_says_where(nightly_run):
    from semfin_spark.nightly import format_summary

    _, _, first, _, lines = nightly_run
    assert first.report["html"].endswith("reports/report.html")
    assert any(line.startswith("report: ") for line in lines)
    summary = format_summary(first)
    assert f"report: {first.report['html']}" in summary and "mlflow ui --backend-store-uri" in summary


def test_accuracy_is_the_last_evaluation(report):
    settings, figures, _ = report
    from semfin_spark.evaluate import evaluation_path

    kept = json.loads(open(evaluation_path(settings.warehouse)).read())
    methods = kept["fields"]["pipeline_tag"]["methods"]
    assert figures["accuracy"]["fields"] == {
        "pipeline_tag": {m: v["accuracy"] for m, v in methods.items()}}
    # What impute would write at the default thresholds, and how often it was right.
    field = kept["fields"]["pipeline_tag"]
    assert figures["accuracy"]["imputed"] == {
        "pipeline_tag": {**field["imputed"], "ece": field["calibration"]["ece"]}}
    assert figures["accuracy"]["imputed"]["pipeline_tag"]["n"] > 0


def test_figures_match_the_tables(report, nightly_run):
    """Coverage, confidences, patterns and components recomputed from the tables' rows in
    plain Python; the incompatible share equals the lineage stage's own figure."""
    settings, figures, _ = report
    w = settings.warehouse
    fields = _frame(f"{w}/model_fields")
    for row in figures["coverage"]:
        group = fields[fields.field == row["field"]]
        assert (row["models"], row["declared"], row["imputed"]) == (
            len(group), int((group.value_source == "declared").sum()),
            int((group.value_source == "imputed").sum()))
    scored = fields[fields.declared_value.isna() & fields.imputed_confidence.notna()]
    for field, bins in figures["confidence"].items():
        values = scored[scored.field == field].imputed_confidence
        expected = collections.Counter(min(int(v * CONFIDENCE_BINS), CONFIDENCE_BINS - 1)
                                       for v in values)
        assert bins == [expected[i] for i in range(CONFIDENCE_BINS)]
    chains = _frame(f"{w}/lineage_chains")
    top = collections.Counter(chains[chains.variant == "with_imputed"].pattern.dropna())
    assert [(r["pattern"], r["chains"]) for r in figures["reuse_patterns"]] == \
        sorted(top.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    components = _frame(f"{w}/lineage_components").groupby("component_id").size()
    assert [r["nodes"] for r in figures["largest_components"]] == \
        sorted(components, reverse=True)[:10]
    with open(f"{w}/reports/lineage.json", encoding="utf-8") as handle:
        lineage = json.load(handle)
    for variant in ("declared", "with_imputed"):
        assert figures["incompatible"][variant]["share"] == lineage["incompatible_share"][variant]


def test_changes_are_the_difference_with_the_previous_versions(report):
    """New models, new and resolved conflicts and new chains recomputed by reading each
    table at the version the last run started from (delta-rs time travel, plain Python)."""
    settings, figures, _ = report
    w = settings.warehouse
    engine = DuckDBEngine(w)
    versions = previous_versions(engine)
    engine.close()

    def before(name):
        v = versions.get(name)
        return _frame(f"{w}/{name}", v) if v is not None else None

    models, old_models = _frame(f"{w}/hub_models"), before("hub_models")
    old_ids = set(old_models.id) if old_models is not None else set()
    new = sorted(set(models[models.deleted_at.isna()].id) - old_ids)
    changes = figures["changes"]
    assert changes["new_models"]["count"] == len(new)
    assert [r["id"] for r in changes["new_models"]["sample"]] == new[:10]

    def conflicts(frame):
        if frame is None:
            return set()
        frame = frame[frame.variant == "with_imputed"]
        return set(zip(frame.child, frame.parent))

    now, then = conflicts(_frame(f"{w}/license_conflicts")), conflicts(before("license_conflicts"))
    assert changes["new_conflicts"]["count"] == len(now - then)
    assert changes["resolved_conflicts"]["count"] == len(then - now)

    def paths(frame):
        if frame is None:
            return set()
        return {tuple(p) for p in frame[frame.variant == "with_imputed"].path}

    assert changes["new_chains"]["count"] == len(
        paths(_frame(f"{w}/lineage_chains")) - paths(before("lineage_chains")))


def test_the_page_draws_every_plot_in_chromium(report, tmp_path):
    """Issue 11 §4: the page opened in headless Chromium as a person would: each plot is
    decoded by the browser, and the screenshot shows them."""
    from PIL import Image

    settings, figures, out = report
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Chromium is missing: scripts/test.sh installs it (apt install chromium)"
    page = f"file://{out}/report.html"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    expected = {"coverage", "confidence", "reuse_patterns", "license_patterns", "incompatible",
                "largest_components", "accuracy"}
    drawn = {name for name in expected if f'data-plot="{name}"' in dom}
    assert drawn == expected
    assert dom.count('data-drawn="true"') == len(expected) and 'data-drawn="false"' not in dom
    assert "Since the previous nightly" in dom
    imputed = figures["accuracy"]["imputed"]["pipeline_tag"]
    row = re.search(r'<tr data-field="pipeline_tag">(.*?)</tr>', dom).group(1)
    assert re.findall(r"<td>(.*?)</td>", row) == [
        "pipeline_tag", str(imputed["n"]), f"{imputed['coverage']:.1%}",
        f"{imputed['precision']:.1%}", f"{imputed['ece']:.3f}"]
    shot = tmp_path / "report.png"
    subprocess.run([*flags, "--window-size=1200,4000", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 4000)
    # matplotlib's first colour (#1f77b4) fills the bars: a page of broken images has none.
    blue = sum(1 for pixel in image.getdata()
               if abs(pixel[0] - 0x1F) < 12 and abs(pixel[1] - 0x77) < 12 and abs(pixel[2] - 0xB4) < 12)
    assert blue > 20_000, f"only {blue} bar-coloured pixels in the screenshot"


def test_spark_sql_gives_the_same_report(spark, report, tmp_path):
    """Under spark-submit the report is built with Spark SQL: the same figures."""
    from semfin_spark.delta import DeltaStore
    from semfin_spark.sql import SparkEngine

    settings, figures, _ = report
    on_spark = make_report(SparkEngine(spark, DeltaStore.from_settings(spark, settings)),
                           settings.warehouse, str(tmp_path), progress=lambda _: None)
    drop = {"generated_at", "engine", "html", "json"}
    assert {k: v for k, v in on_spark.items() if k not in drop} == \
        {k: v for k, v in figures.items() if k not in drop}
