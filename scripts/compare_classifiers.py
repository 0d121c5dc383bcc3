#!/usr/bin/env python
"""Compare the classifier families on a real snapshot: the figures behind the README's choice.

Usage:
    .venv/bin/python scripts/compare_classifiers.py --snapshot ../shared/data/hub2022_dev.jsonl.gz
    .venv/bin/python scripts/compare_classifiers.py --snapshot S --families logistic_regression,naive_bayes \\
        --fields license,model_type --split component --out bench-results/families.json

For each family, ``semfin evaluate`` runs with that family alone (the same split, seed and
fields), so the ``semfin`` figures differ by the classifier only; ``hub_avg`` and
``graph_avg`` do not depend on it and are printed once. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from semfin_spark.evaluate import evaluate, snapshot_warehouse  # noqa: E402
from semfin_spark.session import build_session  # noqa: E402
from semfin_spark.settings import FIELDS, load_settings  # noqa: E402
from semfin_spark.classifier import FAMILIES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshot", required=True, help="a Hub snapshot (file, folder or glob)")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--fields", default=",".join(FIELDS))
    parser.add_argument("--split", choices=("random", "component"), default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--out", default="bench-results/compare_classifiers.json")
    args = parser.parse_args()
    families = [f for f in args.families.split(",") if f]
    fields = tuple(f for f in args.fields.split(",") if f)

    settings = load_settings()
    spark = build_session(settings, app_name="semfin compare classifiers")
    quiet = lambda line: print(f"  {line}", file=sys.stderr, flush=True)  # noqa: E731
    results: dict[str, dict] = {}
    try:
        with snapshot_warehouse(spark, settings, args.snapshot, progress=quiet) as (store, temp):
            for family in families:
                one = temp.replace(train=dataclasses.replace(temp.train, classifiers=(family,)))
                started = time.time()
                report = evaluate(spark, store, one, fields=fields,
                                  split=args.split, test_fraction=args.test_fraction,
                                  seed=args.seed, progress=quiet)
                results[family] = {"seconds": round(time.time() - started, 1), **report}
    finally:
        spark.stop()

    print(f"\n{args.snapshot}, {args.split} split, seed {args.seed}: test accuracy (macro F1)")
    print(f"{'field':14s} " + " ".join(f"{f:>22s}" for f in families) + f" {'hub_avg':>16s} {'graph_avg':>16s}")
    for name in fields:
        cells, baseline = [], None
        for family in families:
            entry = results[family]["fields"][name]
            if "methods" not in entry:
                cells.append(f"{'skipped':>22s}")
                continue
            m = entry["methods"]["semfin"]
            cells.append(f"{m['accuracy']:>13.4f} ({m['macro_f1']:.3f})")
            baseline = entry["methods"]
        base = (f" {baseline['hub_avg']['accuracy']:>16.4f} {baseline['graph_avg']['accuracy']:>16.4f}"
                if baseline else "")
        print(f"{name:14s} " + " ".join(cells) + base)
    print("seconds per family: " + ", ".join(f"{f} {results[f]['seconds']}" for f in families))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"snapshot": args.snapshot, "split": args.split, "seed": args.seed,
                               "families": results}, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
