"""AI Bills of Materials (semfin_spark/aibom.py) on the session's nightly warehouse and on
hand-made shapes the generated Hub lacks (a cycle, an external merge parent)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from semfin_spark.aibom import (
    AibomError,
    ModelFacts,
    ancestors_of,
    build_bom,
    model_bom,
    validate_bom,
)
from semfin_spark.schemas import HUB_MODELS, LINEAGE_CHAINS, LINEAGE_EDGES, MODEL_FIELDS
from conftest import short_jvm_env

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def lineage(nightly_run):
    _, store, _, _, _ = nightly_run
    edges = [r.asDict() for r in store.read(LINEAGE_EDGES).collect()]
    parents = defaultdict(set)
    for e in edges:
        parents[e["child"]].add(e["parent"])
    chains = [r.asDict() for r in store.read(LINEAGE_CHAINS)
              .where("variant = 'with_imputed' AND depth >= 2").collect()]
    return parents, chains


def ancestor_edges(parents: dict[str, set[str]], model: str) -> set[tuple[str, str]]:
    """Every (child, parent) edge above ``model``, by a plain walk of lineage_edges."""
    out, todo, seen = set(), [model], {model}
    while todo:
        child = todo.pop()
        for parent in parents.get(child, ()):
            out.add((child, parent))
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return out


def test_boms_of_random_chain_leaves_validate_and_hold_the_whole_chain(spark, nightly_run, lineage):
    _, store, _, _, _ = nightly_run
    parents, chains = lineage
    leaves = sorted({c["leaf"] for c in chains})
    assert len(leaves) >= 10
    for leaf in random.Random(0).sample(leaves, 10):
        bom = model_bom(spark, store, leaf)  # validated against CycloneDX 1.6 inside
        assert ancestors_of(bom) == ancestor_edges(parents, leaf)
        # Every chain that ends at this leaf is a path through the pedigree.
        pairs = ancestors_of(bom)
        for chain in (c for c in chains if c["leaf"] == leaf):
            path = chain["path"]
            assert {(path[i + 1], path[i]) for i in range(len(path) - 1)} <= pairs


def test_declared_and_imputed_licences_are_told_apart(spark, nightly_run):
    _, store, _, _, _ = nightly_run
    fields = store.read(MODEL_FIELDS).where("field = 'license'")
    imputed = fields.where("value_source = 'imputed'").orderBy("model_id").first()
    declared = fields.where("value_source = 'declared'").orderBy("model_id").first()
    for row, acknowledgement in ((imputed, "concluded"), (declared, "declared")):
        component = model_bom(spark, store, row["model_id"])["metadata"]["component"]
        license_ = component["licenses"][0]["license"]
        assert license_["acknowledgement"] == acknowledgement
        assert license_.get("id", license_.get("name")).lower() == row["value"].lower()
        props = {p["name"]: p["value"] for p in component["properties"]}
        assert props["semfin:license:source"] == row["value_source"]
        if acknowledgement == "concluded":
            assert float(props["semfin:imputed:license:confidence"]) == pytest.approx(
                row["imputed_confidence"], abs=1e-4)
            assert props["semfin:imputed:license:model"] == row["imputed_model"]
            assert props["semfin:imputed:license:mlflow_run"] == row["imputed_run_id"]
        else:
            assert not any(k.startswith("semfin:imputed:license") for k in props)


def test_main_component_is_a_model_with_purl_and_model_card(spark, nightly_run):
    _, store, _, _, _ = nightly_run
    row = (store.read(HUB_MODELS).where("sha IS NOT NULL AND id LIKE '%/%'")
           .orderBy("id").first())
    bom = model_bom(spark, store, row["id"].upper())  # ids match ignoring case, as on the Hub
    component = bom["metadata"]["component"]
    owner, name = row["id"].split("/")
    assert component["type"] == "machine-learning-model"
    assert component["name"] == row["id"]
    assert component["purl"] == f"pkg:huggingface/{owner}/{name}@{row['sha'].lower()}"
    assert bom["specVersion"] == "1.6" and bom["serialNumber"].startswith("urn:uuid:")


def test_an_unknown_model_is_a_clear_error(spark, nightly_run):
    _, store, _, _, _ = nightly_run
    with pytest.raises(AibomError, match="not in hub_models"):
        model_bom(spark, store, "nobody/nothing")


def facts(model_id, license_=None, source="declared", parents=(), **extra):
    fields = {"license": {"value": license_, "value_source": source}} if license_ else {}
    return ModelFacts(model_id, fields=fields, parents=[
        {"parent": p, "relation": r, "relation_source": "declared"} for p, r in parents], **extra)


def test_shapes_the_generated_hub_lacks_validate():
    """An adapter of a quantized merge with an external parent; a cycle; a licence that is
    not an SPDX id; no licence at all; a licence conflict."""
    everything = {
        "o/adapter": facts("o/adapter", "cc-by-nc-4.0", parents=[("o/quant", "adapter")],
                           conflicts=[{"verdict": "conflict", "parent": "o/quant",
                                       "parent_license": "llama3.1", "child_license": "cc-by-nc-4.0",
                                       "rule": "llama-derivatives", "reason": "must keep the licence"}]),
        "o/quant": facts("o/quant", "llama3.1", "imputed", parents=[("o/merge", "quantized")]),
        "o/merge": facts("o/merge", None, parents=[("o/a", "merge"), ("far/away", "merge")]),
        "o/a": facts("o/a", "apache-2.0", parents=[("o/b", "finetune")]),
        "o/b": facts("o/b", "mit", parents=[("o/a", "finetune")]),  # a cycle a -> b -> a
        "far/away": ModelFacts("far/away", external=True),
    }
    bom = build_bom("o/adapter", everything)
    validate_bom(bom)
    main = bom["metadata"]["component"]
    assert main["licenses"] == [{"license": {"id": "CC-BY-NC-4.0", "acknowledgement": "declared"}}]
    assert any(p["name"] == "semfin:license-conflict" and "rule llama-derivatives" in p["value"]
               for p in main["properties"])
    quant = main["pedigree"]["ancestors"][0]
    assert quant["licenses"] == [{"license": {"name": "llama3.1", "acknowledgement": "concluded"}}]
    merge = quant["pedigree"]["ancestors"][0]
    assert "licenses" not in merge
    assert [a["name"] for a in merge["pedigree"]["ancestors"]] == ["o/a", "far/away"]
    external = merge["pedigree"]["ancestors"][1]
    assert {"name": "semfin:external", "value": "true"} in external["properties"]
    cycle = merge["pedigree"]["ancestors"][0]["pedigree"]["ancestors"][0]["pedigree"]["ancestors"][0]
    assert cycle["name"] == "o/a"
    assert cycle["properties"] == [{"name": "semfin:lineage:cycle", "value": "true"}]


def test_an_invalid_document_is_refused():
    bom = build_bom("o/x", {"o/x": facts("o/x", "mit")})
    bom["metadata"]["component"]["licenses"] = [{"license": {"id": "unknown"}}]
    with pytest.raises(ValueError, match="does not validate against CycloneDX 1.6"):
        validate_bom(bom)


def test_semfin_aibom_writes_a_validated_file(nightly_run, lineage, tmp_path):
    settings, _, _, _, _ = nightly_run
    _, chains = lineage
    leaf = chains[0]["leaf"]
    out = tmp_path / "boms" / "bom.json"  # a folder not made yet
    env = short_jvm_env(PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run([str(VENV_BIN / "semfin"), "aibom", leaf, "--out", str(out),
                           "--master", "local[1]", "--warehouse", settings.warehouse],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bom = json.loads(out.read_text())
    validate_bom(bom)
    assert bom["metadata"]["component"]["name"] == leaf
    assert f"aibom: wrote {out} (CycloneDX 1.6, validated)" in proc.stderr
    assert [p.name for p in out.parent.iterdir()] == ["bom.json"]  # written whole: no temp left
    missing = subprocess.run([str(VENV_BIN / "semfin"), "aibom", "nobody/nothing",
                              "--master", "local[1]", "--warehouse", settings.warehouse],
                             capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode == 3 and "not in hub_models" in missing.stderr


def test_boms_go_to_a_local_or_shared_folder_only(spark, nightly_run):
    """Files are written with open() on the executors: a remote folder is refused, before
    any table is read, instead of becoming a local folder named ``s3a:``."""
    from semfin_spark.aibom import write_all_boms

    _, store, _, _, _ = nightly_run
    with pytest.raises(AibomError, match="set aibom.dir"):
        write_all_boms(spark, store, "s3a://bucket/boms", progress=lambda _: None)
    assert not Path("s3a:").exists()


def test_all_boms_are_written_on_the_executors_and_equal_the_single_model_ones(
        spark, nightly_run, lineage, tmp_path):
    """Issue 12 §4: ``--all`` writes one validated BOM per model, each equal to the one
    ``semfin aibom MODEL`` builds (the deepest chains, merges, conflicts, random others)."""
    from semfin_spark.aibom import bom_path, write_all_boms

    _, store, _, _, _ = nightly_run
    parents, chains = lineage
    out = tmp_path / "boms"
    done = write_all_boms(spark, store, str(out), progress=lambda _: None)
    live = [r.id for r in store.read(HUB_MODELS).where("deleted_at IS NULL").select("id").collect()]
    assert done == {"written": len(live), "unchanged": 0, "invalid": 0, "removed": 0,
                    "invalid_examples": []}
    assert sorted(str(p.relative_to(out))[:-len(".cdx.json")] for p in out.rglob("*.cdx.json")) \
        == sorted(live)
    deepest = [c["leaf"] for c in sorted(chains, key=lambda c: -c["depth"])[:3]]
    merges = [m for m in live if len(parents.get(m, ())) > 1][:3]
    conflicted = [r.child for r in store.read("license_conflicts")
                  .where("variant = 'with_imputed'").select("child").limit(3).collect()]
    picked = deepest + merges + conflicted + random.Random(7).sample(live, 6)
    assert len(merges) >= 1 and len(conflicted) >= 1
    for model in picked:
        single = model_bom(spark, store, model)
        written = json.loads(Path(bom_path(str(out), model)).read_text())
        for bom in (single, written):
            bom["metadata"].pop("timestamp")
        assert written == single, model
        assert ancestors_of(written) == ancestor_edges(parents, model)


def test_the_nightly_rewrites_only_the_boms_that_changed(spark, nightly_run, lineage, tmp_path):
    """Issue 12 §4: the nightly's BOMs (``aibom.nightly``) follow the warehouse. On a copy
    of the shared nightly warehouse: a licence changed on a model with descendants, a
    childless model deleted from the Hub, a BOM file removed by hand. The next incremental
    run rewrites exactly the changed model, its descendants and the missing file, removes
    the deleted model's BOM and state row, and leaves every other file untouched."""
    import shutil

    from pyspark.sql import functions as F

    from semfin_spark.aibom import bom_digest, bom_path, write_all_boms
    from semfin_spark.delta import DeltaStore
    from semfin_spark.schemas import AIBOM_STATE

    settings, store, _, _, _ = nightly_run
    parents, _ = lineage
    # The nightly's own BOMs: one per model, each recorded with the digest of its file.
    state = {r.model_id: r for r in store.read(AIBOM_STATE).collect()}
    live = {r.id for r in store.read(HUB_MODELS).where("deleted_at IS NULL").select("id").collect()}
    assert set(state) == live
    for model in random.Random(3).sample(sorted(live), 5):
        assert bom_digest(json.loads(Path(state[model].path).read_text())) == state[model].digest
        assert state[model].path == bom_path(settings.aibom.out_dir(settings.warehouse), model)

    copy = tmp_path / "wh"
    shutil.copytree(settings.warehouse, copy, ignore=shutil.ignore_patterns("aibom", "mlflow*"))
    copied = DeltaStore(spark, str(copy))
    out = str(tmp_path / "boms")
    quiet = lambda _: None  # noqa: E731
    moved = write_all_boms(spark, copied, out, incremental=True, progress=quiet)
    assert (moved["written"], moved["unchanged"], moved["removed"]) == (len(live), 0, 0)
    assert {r.path for r in copied.read(AIBOM_STATE).collect()} == {bom_path(out, m) for m in live}

    children = defaultdict(set)
    for child, ps in parents.items():
        for parent in ps:
            children[parent].add(child)
    changed = max(sorted(live & set(children)), key=lambda m: len(children[m]))
    below, todo = set(), [changed]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in below:
                below.add(child)
                todo.append(child)
    leaves = sorted(live - set(children) - below - {changed})
    deleted, by_hand = leaves[0], leaves[1]
    fields = copied.read(MODEL_FIELDS)
    copied.upsert(MODEL_FIELDS, fields.where((F.col("model_id") == changed) & (F.col("field") == "license"))
                  .withColumn("value", F.lit("agpl-3.0")).withColumn("value_source", F.lit("declared")))
    copied.upsert(HUB_MODELS, copied.read(HUB_MODELS).where(F.col("id") == deleted)
                  .withColumn("deleted_at", F.current_timestamp()))
    os.remove(bom_path(out, by_hand))
    mtimes = {m: os.stat(bom_path(out, m)).st_mtime_ns for m in live - {by_hand}}

    again = write_all_boms(spark, copied, out, incremental=True, progress=quiet)
    rewritten = {changed, by_hand} | (below & live)
    assert (again["written"], again["removed"], again["invalid"]) == (len(rewritten), 1, 0)
    assert again["unchanged"] == len(live) - 1 - len(rewritten)
    assert not os.path.exists(bom_path(out, deleted))
    assert {r.model_id for r in copied.read(AIBOM_STATE).collect()} == live - {deleted}
    touched = {m for m, t in mtimes.items() if m != deleted and os.stat(bom_path(out, m)).st_mtime_ns != t}
    assert touched == rewritten - {by_hand}
    bom = json.loads(Path(bom_path(out, changed)).read_text())
    assert bom["metadata"]["component"]["licenses"] == [
        {"license": {"id": "AGPL-3.0", "acknowledgement": "declared"}}]
    for child in sorted(below & live)[:3]:  # the new licence is in the descendants' pedigrees
        assert '"AGPL-3.0"' in Path(bom_path(out, child)).read_text()


# ------------------------------------------------------------------ a real snapshot


@pytest.fixture(scope="module")
def trees(spark, tmp_path_factory, trees_warehouse):
    """hub2025_trees (1,983 real records) as the judged case: the session's shared ingest and
    flatten, copied; licences trained (naive Bayes) and imputed; lineage rebuilt. Real
    licences (SPDX or not, missing), real imputations, real merges and external parents."""
    import shutil

    from semfin_spark.delta import DeltaStore
    from semfin_spark.impute import impute
    from semfin_spark.lineage import run_lineage
    from semfin_spark.settings import load_settings
    from semfin_spark.train import train

    shared = trees_warehouse
    root = tmp_path_factory.mktemp("aibom-trees")
    shutil.copytree(shared.warehouse, root / "wh")
    settings = load_settings(environ={}, overrides={
        "warehouse": str(root / "wh"), "mlflow.tracking_uri": f"sqlite:///{root}/mlflow.db",
        "train.classifiers": ["naive_bayes"], "train.fields": ["license"]})
    store = DeltaStore.from_settings(spark, settings)
    quiet = lambda _: None  # noqa: E731
    train(spark, store, settings, progress=quiet)
    impute(spark, store, settings, fields=("license",), progress=quiet)
    run_lineage(spark, store, settings, progress=quiet)
    edges = [r.asDict() for r in store.read(LINEAGE_EDGES).collect()]
    parents = defaultdict(set)
    for e in edges:
        parents[e["child"]].add(e["parent"])
    chains = [r.asDict() for r in store.read(LINEAGE_CHAINS).where("variant = 'with_imputed'").collect()]
    licences = {r.model_id: r.asDict() for r in store.read(MODEL_FIELDS).where("field = 'license'").collect()}
    external = {r.model_id for r in store.read("lineage_components").where("external").collect()}
    return store, parents, chains, licences, external


def test_boms_of_real_models_of_every_shape_validate_hold_the_chain_and_tell_licences_apart(
        spark, trees):
    """Issue 12 §6 on a real snapshot: models picked at random among those with lineage,
    plus one of each shape hub2025_trees holds (a merge, an external parent, a declared
    SPDX licence, a declared licence outside SPDX, an imputed licence, no licence). Each BOM
    validates (inside model_bom), its pedigree is exactly the model's ancestor edges, every
    chain ending at it is a path through it, and each licence says declared or concluded,
    the concluded ones with the confidence, model and run that imputed them.
    (An adapter of a quantized merge and a cycle of several models are not in the shared
    real data: the generated shapes test above covers them.)"""
    from cyclonedx.spdx import fixup_id

    store, parents, chains, licences, external = trees
    children = sorted(parents)
    value = lambda m: (licences.get(m) or {}).get("value")  # noqa: E731
    source = lambda m: (licences.get(m) or {}).get("value_source")  # noqa: E731
    shapes = {
        "merge": [m for m in children if len(parents[m]) > 1],
        "external parent": [m for m in children if parents[m] & external],
        "declared SPDX licence": [m for m in children if source(m) == "declared" and fixup_id(value(m))],
        "declared licence outside SPDX": [m for m in children if source(m) == "declared"
                                          and value(m) and not fixup_id(value(m))],
        "imputed licence": [m for m in children if source(m) == "imputed"],
        "no licence": [m for m in children if not value(m)],
    }
    assert all(shapes.values()), {k: len(v) for k, v in shapes.items()}
    rng = random.Random(12)
    picked = {rng.choice(models) for models in shapes.values()} | set(rng.sample(children, 6))
    for model in sorted(picked):
        bom = model_bom(spark, store, model)
        assert ancestors_of(bom) == ancestor_edges(parents, model), model
        pairs = ancestors_of(bom)
        for chain in (c for c in chains if c["leaf"] == model):
            path = chain["path"]
            assert {(path[i + 1], path[i]) for i in range(len(path) - 1)} <= pairs, model
        component = bom["metadata"]["component"]
        props = {p["name"]: p["value"] for p in component.get("properties", [])}
        row = licences.get(model) or {}
        if not row.get("value"):
            assert "licenses" not in component, model
            continue
        (license_,) = [item["license"] for item in component["licenses"]]
        spdx = fixup_id(row["value"])
        assert license_ == ({"id": spdx} if spdx else {"name": row["value"]}) | {
            "acknowledgement": "declared" if row["value_source"] == "declared" else "concluded"}
        if row["value_source"] == "imputed":
            assert float(props["semfin:imputed:license:confidence"]) == pytest.approx(
                row["imputed_confidence"], abs=1e-4)
            assert props["semfin:imputed:license:model"] == row["imputed_model"]
            assert props["semfin:imputed:license:mlflow_run"] == row["imputed_run_id"]
    # The external parents are in the pedigree, marked.
    model = rng.choice(shapes["external parent"])
    ancestors = model_bom(spark, store, model)["metadata"]["component"]["pedigree"]["ancestors"]
    marked = {a["name"] for a in ancestors
              if {"name": "semfin:external", "value": "true"} in a.get("properties", [])}
    assert marked == parents[model] & external
