"""The SemFin paper's lineage figures, measured by the project's own nightly on three Hubs.

The SemFin abstract reports, after imputation: reuse-method chains +75.9 %, licence chains
+53.6 %, 86 new reuse patterns, and the share of licence chains with an incompatible
licence going from 34.8 % to 36.8 %. This script runs ``semfin nightly`` (ingest,
flatten, train, impute, lineage: the stages a user runs) on

* ``trees``: ``hub2025_trees`` (real models, tags and licences, 2024-2025);
* ``real_graph``: the real 30,383-edge lineage graph of ``lineage_edges_2025`` as a Hub
  snapshot whose models carry their ``base_model:`` tags and nothing else. Every edge of
  that file names its relation, so a seeded ``--hide`` share of the child models lose
  their ``base_model:<relation>:<parent>`` tags (keeping ``base_model:<parent>``), as on
  the Hub before it tagged relations. The relations imputed for them are checked against
  the hidden truth. It has no licences: its licence figures are empty;
* ``synthetic``: a generated Hub (``synthetic:N,seed=0``),

and prints the lineage report's figures (``semfin lineage --report``'s keys) beside the
abstract's, as a Markdown table.

Usage (from the repository, after ``scripts/setup_env.sh``)::

    .venv/bin/python scripts/paper_figures.py --out /tmp/paper [--hide 0.33] [--synthetic 20000]

Each warehouse is kept under ``--out``; an existing one is reused (the nightly is
incremental), so a second run only re-reads the figures.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RELATIONS = {"finetuned": "finetune", "quantized": "quantized", "merged": "merge", "adapter": "adapter"}

ABSTRACT = {"reuse chains, expansion": "+75.9 %", "licence chains, expansion": "+53.6 %",
            "new reuse patterns": "86", "incompatible licence share, declared": "34.8 %",
            "incompatible licence share, with imputed": "36.8 %"}


def hidden(model_id: str, share: float) -> bool:
    """A seeded, order-free choice of the models whose relation tags are dropped."""
    digest = hashlib.sha256(f"paper-figures:{model_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def real_graph_snapshot(out: Path, share: float) -> tuple[Path, dict[str, set[str]], dict[tuple[str, str], str]]:
    """``lineage_edges_2025`` as a Hub snapshot; returns it, the hidden relations (child ->
    the relations its tags no longer say) and every edge's true relation ((child, parent)
    -> relation)."""
    parents: dict[str, list[tuple[str, str]]] = {}
    nodes: set[str] = set()
    with gzip.open(SHARED / "lineage_edges_2025.csv.gz", "rt", newline="") as fh:
        for row in csv.DictReader(fh):
            parents.setdefault(row["target"], []).append((row["source"], RELATIONS[row["edge"]]))
            nodes |= {row["source"], row["target"]}
    truth: dict[str, set[str]] = {}
    path = out / "real_graph.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as snapshot:
        for node in sorted(nodes):
            drop = node in parents and hidden(node, share)
            if drop:
                truth[node] = {relation for _, relation in parents[node]}
            tags = [tag for parent, relation in parents.get(node, [])
                    for tag in ([f"base_model:{parent}"] if drop
                                else [f"base_model:{parent}", f"base_model:{relation}:{parent}"])]
            snapshot.write(json.dumps({"id": node, "author": node.split("/")[0] if "/" in node else None,
                                       "tags": tags}) + "\n")
    edges = {(child, parent): relation for child, pairs in parents.items() for parent, relation in pairs}
    return path, truth, edges


def pattern_check(warehouse: Path, edges: dict[tuple[str, str], str]) -> dict[str, int]:
    """Are the new reuse patterns real? Each complete chain with imputed relations is
    re-read with the file's true relations: a new pattern is ``confirmed`` when it is the
    true pattern of at least one path of the graph (delta-rs)."""
    from deltalake import DeltaTable

    chains = DeltaTable(str(warehouse / "lineage_chains")).to_pandas(columns=["variant", "path", "pattern"])
    declared = set(chains[chains.variant == "declared"].pattern.dropna())
    imputed = chains[chains.variant == "with_imputed"]
    true_patterns = {" > ".join(edges.get((path[i + 1], path[i]), "?") for i in range(len(path) - 1))
                     for path in imputed.path}
    new = set(imputed.pattern.dropna()) - declared
    return {"true_patterns": len(true_patterns), "new": len(new),
            "new_confirmed": len(new & true_patterns), "new_true_missed": len(true_patterns - declared - new)}


def nightly(warehouse: Path, source: str) -> dict:
    """``semfin nightly`` in its own process, as a user runs it; the lineage report."""
    command = [sys.executable, "-m", "semfin_spark.cli", "nightly", "--warehouse", str(warehouse),
               "--source", source]
    print(f"[paper] {' '.join(command[2:])}", flush=True)
    subprocess.run(command, check=True, stdout=sys.stderr)
    return json.loads((warehouse / "reports" / "lineage.json").read_text(encoding="utf-8"))


def imputed_relation_accuracy(warehouse: Path, truth: dict[str, set[str]]) -> dict[str, float]:
    """How many hidden relations were imputed, and how many of those are right (delta-rs)."""
    from deltalake import DeltaTable

    rows = DeltaTable(str(warehouse / "model_fields")).to_pandas(
        columns=["model_id", "field", "imputed_value"])
    imputed = {r.model_id: r.imputed_value for r in rows.itertuples()
               if r.field == "reuse_method" and r.imputed_value is not None and r.model_id in truth}
    right = sum(value in truth[model] for model, value in imputed.items())
    return {"hidden": len(truth), "imputed": len(imputed),
            "imputed_share": round(len(imputed) / len(truth), 3) if truth else 0.0,
            "precision": round(right / len(imputed), 3) if imputed else 0.0}


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def rows(report: dict) -> dict[str, str]:
    chains, licences = report["chains"], report["license_chains"]
    share = report["incompatible_share"]
    return {
        "edges (self-loops dropped)": f"{report['edges']:,}",
        "root-to-leaf paths": f"{report['paths']:,}",
        "reuse chains, declared → with imputed": f"{chains['declared']:,} → {chains['with_imputed']:,}",
        "reuse chains, expansion": f"+{chains['expansion_pct']:.1f} %",
        "licence chains, declared → with imputed": f"{licences['declared']:,} → {licences['with_imputed']:,}",
        "licence chains, expansion": f"+{licences['expansion_pct']:.1f} %" if licences["declared"] else "-",
        "reuse patterns, declared → with imputed": (f"{report['reuse_patterns']['declared']} → "
                                                    f"{report['reuse_patterns']['with_imputed']}"),
        "new reuse patterns": str(report["reuse_patterns"]["new"]),
        "incompatible licence share, declared": pct(share["declared"]) if licences["declared"] else "-",
        "incompatible licence share, with imputed": pct(share["with_imputed"]) if licences["declared"] else "-",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the three warehouses")
    parser.add_argument("--hide", type=float, default=1 / 3,
                        help="share of the real graph's child models whose relation tags are dropped")
    parser.add_argument("--synthetic", type=int, default=20_000, help="models of the generated Hub")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    reports = {"trees": nightly(args.out / "trees", f"snapshot:{SHARED / 'hub2025_trees.jsonl.gz'}")}
    snapshot, truth, edges = real_graph_snapshot(args.out, args.hide)
    reports["real_graph"] = nightly(args.out / "real_graph", f"snapshot:{snapshot}")
    check = {**imputed_relation_accuracy(args.out / "real_graph", truth),
             **pattern_check(args.out / "real_graph", edges)}
    reports["synthetic"] = nightly(args.out / "synthetic", f"synthetic:{args.synthetic},seed=0")

    table = {case: rows(report) for case, report in reports.items()}
    print("| figure | SemFin abstract | hub2025_trees | real graph, relations hidden on "
          f"{100 * args.hide:.0f} % | synthetic {args.synthetic:,} |")
    print("|---|---:|---:|---:|---:|")
    for key in table["trees"]:
        print(f"| {key} | {ABSTRACT.get(key, '')} | "
              + " | ".join(table[case][key] for case in ("trees", "real_graph", "synthetic")) + " |")
    print(f"\nreal graph, hidden relations: {json.dumps(check)}")
    (args.out / "paper_figures.json").write_text(
        json.dumps({"reports": reports, "hidden_relations": check, "hide": args.hide}, indent=2),
        encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
