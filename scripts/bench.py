#!/usr/bin/env python
"""SemFin benchmarks: wall time, throughput and peak memory per stage, on a generated Hub.

Usage:
    .venv/bin/python scripts/bench.py --models 300000 --stages ingest,flatten
    .venv/bin/python scripts/bench.py --models 300000 --stages ingest,flatten,train,impute,lineage
    .venv/bin/python scripts/bench.py --models 2000000 --stages ingest,flatten,train,impute,lineage --out bench.json
    .venv/bin/python scripts/bench.py --warehouse W --stages impute,lineage   # stages on a kept warehouse

Each stage runs on the same warehouse, in data-flow order, with the embedded session
(local[*]). Prints a table and writes JSON. Peak memory: the driver's Python process
(ru_maxrss) and the JVM (VmHWM of the java process), both as high-water marks since the
start of the run, read after each stage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from semfin_spark.delta import DeltaStore  # noqa: E402
from semfin_spark.session import build_session  # noqa: E402
from semfin_spark.settings import load_settings  # noqa: E402


def python_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def jvm_peak_mb(spark: Any) -> float | None:
    try:
        pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()  # noqa: SLF001
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except Exception:
        return None
    return None


def stage_ingest(spark, store, settings, args) -> dict[str, Any]:
    from semfin_spark.ingest import ingest

    result = ingest(spark, store, f"synthetic:{args.models},seed={args.seed}", settings,
                    progress=lambda line: print(f"  {line}", flush=True))
    return {"items": result.read, "unit": "models", "written": result.written}


def stage_flatten(spark, store, settings, args) -> dict[str, Any]:
    from semfin_spark.flatten import flatten

    configs = store.read("hub_models").where("config_json IS NOT NULL OR config IS NOT NULL").count()
    started = time.perf_counter()
    marks: dict[str, float] = {}

    def progress(line: str) -> None:
        print(f"  {line}", flush=True)
        for table in ("config_features", "model_tags", "model_files", "model_fields",
                      "model_parents", "flatten_state"):
            if line.startswith(f"flatten: {table}:"):
                marks[table] = round(time.perf_counter() - started, 1)

    result = flatten(spark, store, settings, progress=progress, full=True)
    figures = {k: v for k, v in vars(result).items() if isinstance(v, (int, float, str))}
    # The configs' own figure: from the start of the stage to the config_features commit
    # (hub_models read, parsed on the executors, written and committed); the declared
    # tables follow it.
    to_features = marks.get("config_features")
    return {"items": configs, "unit": "configs", "config_features_s": to_features,
            "configs_per_s_into_config_features": round(configs / to_features) if to_features else None,
            "commit_s": marks, **figures}


def stage_train(spark, store, settings, args) -> dict[str, Any]:
    from semfin_spark.train import train

    result = train(spark, store, settings, progress=lambda line: print(f"  {line}", flush=True),
                   force=True)
    per_field = {name: {"family": f.family, "n_train": f.n_train, "classes": f.n_classes,
                        "fit_s": f.seconds, "log_s": f.log_seconds}
                 for name, f in result.fields.items()}
    return {"items": sum(f.n_train for f in result.fields.values()), "unit": "labels",
            "fields": per_field, "skipped": result.skipped}


def stage_impute(spark, store, settings, args) -> dict[str, Any]:
    from semfin_spark.impute import impute

    result = impute(spark, store, settings, progress=lambda line: print(f"  {line}", flush=True),
                    full=True)
    per_field = {name: {"scored": f.scored, "imputed": f.imputed} for name, f in result.fields.items()}
    return {"items": sum(f.scored for f in result.fields.values()), "unit": "rows",
            "fields": per_field}


def stage_lineage(spark, store, settings, args) -> dict[str, Any]:
    from semfin_spark.lineage import run_lineage

    report = run_lineage(spark, store, settings, progress=lambda line: print(f"  {line}", flush=True))
    keep = ("edges", "components", "largest_component", "isolated_models", "self_loops", "paths",
            "chains", "license_chains", "incompatible_share", "cycles")
    return {"items": report["edges"], "unit": "edges", **{k: report[k] for k in keep if k in report}}


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": stage_ingest,
    "flatten": stage_flatten,
    "train": stage_train,
    "impute": stage_impute,
    "lineage": stage_lineage,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default="ingest,flatten")
    parser.add_argument("--warehouse", help="keep the warehouse here (default: a temp folder, removed)")
    parser.add_argument("--out", default="bench-results/bench.json")
    parser.add_argument("--driver-memory", default="6g")
    args = parser.parse_args()

    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    warehouse = args.warehouse or tempfile.mkdtemp(prefix="semfin-bench-")
    settings = load_settings(overrides={"warehouse": warehouse})
    spark = build_session(settings, app_name="semfin bench",
                          extra_conf={"spark.driver.memory": args.driver_memory})
    store = DeltaStore.from_settings(spark, settings)
    rows = []
    try:
        for name in names:
            print(f"[bench] {name} ({args.models} models)", flush=True)
            started = time.perf_counter()
            figures = STAGES[name](spark, store, settings, args)
            wall = time.perf_counter() - started
            rows.append({"stage": name, "models": args.models, "wall_s": round(wall, 1),
                         "per_s": round(figures["items"] / wall, 1) if figures.get("items") else None,
                         "driver_python_peak_mb": round(python_peak_mb()),
                         "jvm_peak_mb": round(jvm_peak_mb(spark) or 0), **figures})
    finally:
        spark.stop()
        if not args.warehouse:
            shutil.rmtree(warehouse, ignore_errors=True)

    print(f"\n{'stage':10s} {'models':>9s} {'wall s':>8s} {'items/s':>10s} {'unit':>8s} "
          f"{'py MB':>7s} {'JVM MB':>7s}")
    for r in rows:
        print(f"{r['stage']:10s} {r['models']:>9d} {r['wall_s']:>8.1f} {r['per_s'] or 0:>10.0f} "
              f"{r.get('unit', ''):>8s} {r['driver_python_peak_mb']:>7d} {r['jvm_peak_mb']:>7d}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "results": rows}, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
