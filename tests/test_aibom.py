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
    out = tmp_path / "bom.json"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([str(VENV_BIN / "semfin"), "aibom", leaf, "--out", str(out),
                           "--master", "local[1]", "--warehouse", settings.warehouse],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bom = json.loads(out.read_text())
    validate_bom(bom)
    assert bom["metadata"]["component"]["name"] == leaf
    missing = subprocess.run([str(VENV_BIN / "semfin"), "aibom", "nobody/nothing",
                              "--master", "local[1]", "--warehouse", settings.warehouse],
                             capture_output=True, text=True, timeout=300, env=env)
    assert missing.returncode == 3 and "not in hub_models" in missing.stderr


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
    assert done == {"written": len(live), "invalid": 0, "invalid_examples": []}
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
