"""Lineage: components and chains against independent union-find / DFS, cycles, conflicts, report."""

from __future__ import annotations

import collections
import csv
import gzip

import pytest
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.lineage import run_lineage
from semfin_spark.schemas import (HUB_MODELS, LICENSE_CONFLICTS, LINEAGE_CHAINS, LINEAGE_COMPONENTS,
                                  LINEAGE_EDGES, MODEL_FIELDS, MODEL_PARENTS, Table)

from oracles import union_find_components

RELATION = {"finetuned": "finetune", "quantized": "quantized", "merged": "merge", "adapter": "adapter"}


def write_rows(spark, store, table: Table, rows: list[dict]) -> None:
    full = [tuple(r.get(c) for c in table.columns) for r in rows]
    store.overwrite(table, spark.createDataFrame(full, table.schema))


def quiet(_line: str) -> None:
    pass


def independent_paths(edges):
    """Every root-to-leaf path of a DAG, by explicit-stack DFS (child -> parent edges)."""
    children = collections.defaultdict(set)
    has_parent, nodes = set(), set()
    for child, par in edges:
        children[par].add(child)
        has_parent.add(child)
        nodes |= {child, par}
    out = []
    for root in sorted(nodes - has_parent):
        stack = [(root, (root,))]
        while stack:
            node, path = stack.pop()
            if not children[node]:
                out.append(path)
            for c in children[node]:
                if c not in path:
                    stack.append((c, path + (c,)))
    return out


@pytest.fixture(scope="module")
def real_graph(shared_data):
    with gzip.open(shared_data / "lineage_edges_2025.csv.gz", "rt") as fh:
        return [(r["target"], r["source"], RELATION[r["edge"]]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def real_warehouse(spark, tmp_path_factory, real_graph):
    """The real graph as model_parents, with licences planted on a deterministic share of models."""
    from semfin_spark.settings import load_settings

    settings = load_settings(environ={}, overrides={"warehouse": str(tmp_path_factory.mktemp("lineage"))})
    store = DeltaStore.from_settings(spark, settings)
    nodes = sorted({n for c, p, _ in real_graph for n in (c, p)})
    children = {c for c, _, _ in real_graph}
    # Parents that are never children and whose name hashes to 0 mod 10 are "not on the Hub".
    external = {n for n in nodes if n not in children and sum(map(ord, n)) % 10 == 0}
    models = [n for n in nodes if n not in external]
    write_rows(spark, store, HUB_MODELS, [{"id": n} for n in models])
    write_rows(spark, store, MODEL_PARENTS, [
        {"model_id": c, "parent_id": p, "relation": (r if i % 3 else None), "source": "tag"}
        for i, (c, p, r) in enumerate(real_graph)])
    fields = []
    for i, n in enumerate(models):
        declared = ("apache-2.0", "llama3.1", "mit", "cc-by-nc-4.0", None, None)[i % 6]
        imputed = None if declared else ("apache-2.0", "mit", None)[i % 3]
        fields.append({"model_id": n, "field": "license", "declared_value": declared,
                       "imputed_value": imputed, "value": declared or imputed})
        fields.append({"model_id": n, "field": "reuse_method", "declared_value": None,
                       "imputed_value": "finetune" if i % 2 else None})
    write_rows(spark, store, MODEL_FIELDS, fields)
    report = run_lineage(spark, store, settings, progress=quiet)
    return store, report, nodes, external


def test_components_equal_union_find(real_warehouse, real_graph):
    store, report, nodes, external = real_warehouse
    edges = [(c, p) for c, p, _ in real_graph if c != p]
    expected = union_find_components(nodes, edges)
    got = {r["model_id"]: r["component_id"] for r in store.read(LINEAGE_COMPONENTS).collect()}
    assert got == expected
    sizes = collections.Counter(expected.values())
    assert report["components"] == sum(1 for s in sizes.values() if s > 1)
    assert report["largest_component"] == max(sizes.values())
    assert report["self_loops"] == sum(1 for c, p, _ in real_graph if c == p) == 42
    externals = {r["model_id"] for r in store.read(LINEAGE_COMPONENTS).where("external").collect()}
    assert externals == external


def test_chains_equal_dfs(real_warehouse, real_graph):
    store, report, _, _ = real_warehouse
    expected = sorted(independent_paths([(c, p) for c, p, _ in real_graph if c != p]))
    chains = store.read(LINEAGE_CHAINS).where("variant = 'declared'")
    got = sorted(tuple(r["path"]) for r in chains.select("path").collect())
    assert got == expected
    assert report["paths"] == len(expected) == 42461


def test_relations_and_patterns(real_warehouse, real_graph):
    store, report, _, _ = real_warehouse
    declared = {(c, p): r for i, (c, p, r) in enumerate(real_graph) if i % 3 and c != p}
    edges = {(r["child"], r["parent"]): r for r in store.read(LINEAGE_EDGES).collect()}
    for key, relation in list(declared.items())[:2000]:
        assert edges[key]["relation"] == relation and edges[key]["relation_source"] == "declared"
    # Imputation can only complete more chains, never fewer.
    assert report["chains"]["with_imputed"] >= report["chains"]["declared"] > 0
    assert report["license_chains"]["with_imputed"] >= report["license_chains"]["declared"]
    row = store.read(LINEAGE_CHAINS).where("variant = 'declared' AND pattern IS NOT NULL").first()
    assert row["pattern"] == " > ".join(row["relations"])
    assert len(row["relations"]) == row["depth"] == len(row["path"]) - 1
    # A pattern is null exactly when one of its values is unknown (an incomplete chain).
    chains = store.read(LINEAGE_CHAINS)
    for values, pattern in (("relations", "pattern"), ("licenses", "license_pattern")):
        unknown = F.exists(values, lambda v: v.isNull())
        assert chains.where(unknown).count() > 0
        assert chains.where(unknown != F.col(pattern).isNull()).count() == 0


def test_conflicts_follow_the_rules(real_warehouse):
    store, report, _, _ = real_warehouse
    conflicts = store.read(LICENSE_CONFLICTS).collect()
    assert conflicts, "the planted cc-by-nc / llama3.1 parents with permissive children must conflict"
    for r in conflicts:
        assert r["verdict"] == "conflict" and r["rule"] and r["reason"]
        assert r["parent_license"] in ("cc-by-nc-4.0", "llama3.1")
    for variant in ("declared", "with_imputed"):
        assert 0 < report["incompatible_share"][variant] < 1


def test_a_chain_is_a_conflict_when_one_of_its_edges_is(real_warehouse):
    """``license_conflict`` against the conflicts table, edge by edge in plain Python, and
    the report's incompatible share counted from it."""
    store, report, _, _ = real_warehouse
    conflicting = {(r["variant"], r["child"], r["parent"]) for r in store.read(LICENSE_CONFLICTS).collect()}
    chains = store.read(LINEAGE_CHAINS).select("variant", "path", "license_pattern", "license_conflict").collect()
    complete = collections.Counter()
    incompatible = collections.Counter()
    for row in chains:
        path = row["path"]
        expected = any((row["variant"], child, parent) in conflicting for parent, child in zip(path, path[1:]))
        assert row["license_conflict"] is expected
        if row["license_pattern"] is not None:
            complete[row["variant"]] += 1
            incompatible[row["variant"]] += expected
    for variant in ("declared", "with_imputed"):
        assert incompatible[variant] > 0
        assert report["incompatible_share"][variant] == round(incompatible[variant] / complete[variant], 4)


def test_a_root_cut_at_max_fanout_keeps_its_licence(spark, settings):
    """A root with more children than ``lineage.max_fanout`` is a chain without edges; its
    licence still comes from the licences, as every other root's comes from its edges."""
    import dataclasses

    limited = dataclasses.replace(settings, lineage=dataclasses.replace(settings.lineage, max_fanout=1))
    store = DeltaStore.from_settings(spark, limited)
    write_rows(spark, store, HUB_MODELS, [{"id": n} for n in ("a", "b", "c", "x", "y")])
    write_rows(spark, store, MODEL_PARENTS, [{"model_id": c, "parent_id": p, "relation": "finetune"}
                                             for c, p in (("b", "a"), ("c", "a"), ("y", "x"))])
    write_rows(spark, store, MODEL_FIELDS, [
        {"model_id": m, "field": "license", "declared_value": v}
        for m, v in (("a", "llama3.1"), ("b", "mit"), ("x", "cc-by-nc-4.0"), ("y", "mit"))])
    report = run_lineage(spark, store, limited, progress=quiet)
    rows = {r["root"]: r for r in store.read(LINEAGE_CHAINS).where("variant = 'declared'").collect()}
    assert rows["a"]["depth"] == 0 and rows["a"]["truncated"] and rows["a"]["path"] == ["a"]
    assert rows["a"]["licenses"] == ["llama3.1"] and not rows["a"]["license_conflict"]
    assert rows["x"]["licenses"] == ["cc-by-nc-4.0", "mit"] and rows["x"]["license_conflict"]
    assert report["incompatible_share"]["declared"] == 0.5


def test_cycles_and_self_loops_terminate(spark, settings):
    store = DeltaStore.from_settings(spark, settings)
    write_rows(spark, store, HUB_MODELS, [{"id": n} for n in ("a", "b", "c", "d", "e", "s")])
    edges = [("b", "a"), ("c", "b"), ("a", "c"), ("d", "c"), ("e", "d"), ("s", "s")]
    write_rows(spark, store, MODEL_PARENTS, [{"model_id": c, "parent_id": p, "relation": "finetune"}
                                             for c, p in edges])
    write_rows(spark, store, MODEL_FIELDS, [])
    report = run_lineage(spark, store, settings, progress=quiet)
    assert report["self_loops"] == 1
    assert report["cycles"]["count"] == 1 and report["cycles"]["nodes_on_cycles"] == 3
    assert report["components"] == 1 and report["isolated_models"] == 1


def test_unchanged_inputs_keep_the_tables_and_the_report(spark, settings, tmp_path):
    """A night whose edges, licences and settings are those of the last report rebuilds
    nothing; a changed licence, or tables a killed run left half-written, rebuild all."""
    import json

    from semfin_spark.lineage import write_report

    store = DeltaStore.from_settings(spark, settings)
    write_rows(spark, store, HUB_MODELS, [{"id": n} for n in ("a", "b", "c")])
    write_rows(spark, store, MODEL_PARENTS, [{"model_id": "b", "parent_id": "a", "relation": "finetune"},
                                             {"model_id": "c", "parent_id": "b"}])
    fields = [{"model_id": "a", "field": "license", "declared_value": "cc-by-nc-4.0"},
              {"model_id": "b", "field": "license", "declared_value": "mit"}]
    write_rows(spark, store, MODEL_FIELDS, fields)
    path = str(tmp_path / "lineage.json")
    first = run_lineage(spark, store, settings, progress=quiet, last_report=path)
    assert "unchanged" not in first and first["license_conflicts"]["declared"] == 1
    write_report(first, path)
    versions = {t: store.version(t) for t in (LINEAGE_EDGES, LINEAGE_CHAINS, LICENSE_CONFLICTS)}
    again = run_lineage(spark, store, settings, progress=quiet, last_report=path)
    assert again["unchanged"] and again["license_conflicts"] == first["license_conflicts"]
    assert {t: store.version(t) for t in versions} == versions
    # Compaction commits no data: the tables still stand.
    store.optimize(LINEAGE_CHAINS)
    assert run_lineage(spark, store, settings, progress=quiet, last_report=path)["unchanged"]

    # A run killed after its first table: that table's fingerprint is not the report's.
    store.overwrite(LINEAGE_EDGES, store.read(LINEAGE_EDGES).localCheckpoint(), operation="LINEAGE",
                    metadata={"inputs": "of a killed run"})
    rebuilt = run_lineage(spark, store, settings, progress=quiet, last_report=path)
    assert "unchanged" not in rebuilt and rebuilt["inputs"] == first["inputs"]
    write_report(rebuilt, path)

    # c's licence becomes known: the same edges, other inputs.
    write_rows(spark, store, MODEL_FIELDS, fields + [
        {"model_id": "c", "field": "license", "declared_value": "apache-2.0"}])
    changed = run_lineage(spark, store, settings, progress=quiet, last_report=path)
    assert "unchanged" not in changed and changed["inputs"] != first["inputs"]
    assert changed["license_chains"]["declared"] == first["license_chains"]["declared"] + 1
    assert json.loads(open(path).read())["inputs"] == first["inputs"]
