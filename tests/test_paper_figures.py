"""scripts/paper_figures.py: the real graph's snapshot hides a seeded share of relations
and keeps the lineage; the truth it returns is what the file says (no Spark here: the
nightly it then runs is the tested nightly)."""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import paper_figures  # noqa: E402


def test_real_graph_snapshot_hides_relations_but_keeps_every_edge(tmp_path, shared_data):
    with gzip.open(shared_data / "lineage_edges_2025.csv.gz", "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    path, truth, edges = paper_figures.real_graph_snapshot(tmp_path, 1 / 3)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        models = {m["id"]: m for m in map(json.loads, fh)}
    assert len(models) == len({n for r in rows for n in (r["source"], r["target"])})
    children = {r["target"] for r in rows}
    assert 0.30 < len(truth) / len(children) < 0.37          # a third, seeded by the id
    assert edges == {(r["target"], r["source"]): paper_figures.RELATIONS[r["edge"]] for r in rows}
    relations: dict[str, set[str]] = {}
    for (child, _), relation in edges.items():
        relations.setdefault(child, set()).add(relation)
    for child in children:
        tags = models[child]["tags"]
        if child in truth:   # base_model:<parent> kept, base_model:<relation>:<parent> gone
            assert tags and all(t.count(":") == 1 for t in tags), child
            assert truth[child] == relations[child]
        else:
            assert any(t.count(":") == 2 for t in tags), child
    # the same ids are hidden on every run
    (tmp_path / "again").mkdir()
    assert paper_figures.real_graph_snapshot(tmp_path / "again", 1 / 3)[1] == truth
