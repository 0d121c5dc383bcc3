#!/usr/bin/env python
"""SemFin benchmarks: wall time, throughput and peak memory per stage, on a generated Hub.

Usage:
    .venv/bin/python scripts/bench.py --models 300000 --stages ingest,flatten
    .venv/bin/python scripts/bench.py --models 300000 --stages ingest,flatten,train,impute,lineage
    .venv/bin/python scripts/bench.py --models 2000000 --stages ingest,flatten,train,impute,lineage --out bench.json
    .venv/bin/python scripts/bench.py --warehouse W --stages impute,lineage   # stages on a kept warehouse
    .venv/bin/python scripts/bench.py --models 20000 --stages ingest,flatten,train,impute,lineage --peer
    .venv/bin/python scripts/bench.py --stages real_lineage             # the real 30,383-edge graph
    .venv/bin/python scripts/bench.py --models 2000000 --stages tiled_lineage  # it, tiled to 2M models
    .venv/bin/python scripts/bench.py --warehouse W --stages sql,report  # analyst queries, report
    .venv/bin/python scripts/bench.py --warehouse W --stages aibom       # every model's BOM
    .venv/bin/python scripts/bench.py --warehouse W --stages aibom_nightly  # kept BOMs, twice
    .venv/bin/python scripts/bench.py --models 20000 --stages nightly_changed  # full, then 1% changed

The generated Hub is first written as a snapshot file (``--hub-dir``, kept for the next
run, not timed) and ingested from it with ``snapshot:FILE``, so the ingest measures what a
night's ingest does, not the generator. Each stage runs on the same warehouse, in
data-flow order, with the embedded session (local[*]). With ``--peer``,
``scripts/bench_peer.py`` (the same five stages as one plain Python process) then runs on
the same file in its own process, and the table shows project / peer per stage. Prints a
table and writes JSON. Peak memory: the driver's Python process
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


_T0 = time.perf_counter()


def say(line: str) -> None:
    """A stage's progress line, stamped with the seconds since the benchmark started."""
    print(f"  [{time.perf_counter() - _T0:7.1f} s] {line}", flush=True)


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

    result = ingest(spark, store, args.source, settings, progress=say)
    return {"items": result.read, "unit": "models", "written": result.written}


def stage_flatten(spark, store, settings, args) -> dict[str, Any]:
    from semfin_spark.flatten import flatten

    configs = store.read("hub_models").where("config_json IS NOT NULL OR config IS NOT NULL").count()
    started = time.perf_counter()
    marks: dict[str, float] = {}

    def progress(line: str) -> None:
        say(line)
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

    result = train(spark, store, settings, progress=say,
                   force=True)
    per_field = {name: {"family": f.family, "n_train": f.n_train, "classes": f.n_classes,
                        "fit_s": f.seconds, "log_s": f.log_seconds}
                 for name, f in result.fields.items()}
    return {"items": sum(f.n_train for f in result.fields.values()), "unit": "labels",
            "fields": per_field, "skipped": result.skipped}


def stage_impute(spark, store, settings, args) -> dict[str, Any]:
    from semfin_spark.impute import impute

    result = impute(spark, store, settings, progress=say,
                    full=True)
    per_field = {name: {"scored": f.scored, "imputed": f.imputed} for name, f in result.fields.items()}
    return {"items": sum(f.scored for f in result.fields.values()), "unit": "rows",
            "fields": per_field}


def stage_lineage(spark, store, settings, args) -> dict[str, Any]:
    from semfin_spark.lineage import run_lineage

    report = run_lineage(spark, store, settings, progress=say)
    keep = ("edges", "components", "largest_component", "isolated_models", "self_loops", "paths",
            "chains", "license_chains", "incompatible_share", "cycles")
    return {"items": report["edges"], "unit": "edges", **{k: report[k] for k in keep if k in report}}


REAL_EDGES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "lineage_edges_2025.csv.gz"
REAL_RELATIONS = {"finetuned": "finetune", "quantized": "quantized", "merged": "merge", "adapter": "adapter"}


def real_graph_warehouse(spark, store, at_least: int = 0) -> dict[str, int]:
    """The real lineage graph (``../shared/data/lineage_edges_2025.csv.gz``) as a warehouse:
    its models in ``hub_models``, its edges in ``model_parents`` (a third without their
    relation, so imputed relations have chains to complete), and licences declared on four
    models in six, imputed on some of the rest.

    ``at_least`` more models than the real graph has tiles it: as many disjoint copies as it
    takes, each model's and parent's id suffixed with ``-c<copy>``, tiled on the executors
    (a generated graph with the real one's shape: its depth, fan-out, merges, self-loops and
    licences).

    Returns the models (``hub_models`` rows), edges and copies written."""
    import csv
    import gzip

    from pyspark.sql import functions as F

    from semfin_spark.schemas import HUB_MODELS, MODEL_FIELDS, MODEL_PARENTS

    with gzip.open(REAL_EDGES, "rt", newline="") as fh:
        edges = [(r["target"], r["source"], REAL_RELATIONS[r["edge"]]) for r in csv.DictReader(fh)]
    nodes = sorted({n for c, p, _ in edges for n in (c, p)})
    children = {c for c, _, _ in edges}
    external = {n for n in nodes if n not in children and sum(map(ord, n)) % 10 == 0}
    models = [n for n in nodes if n not in external]
    copies = max(1, -(-at_least // len(models)))

    def write(table, rows, ids):
        df = spark.createDataFrame([tuple(r.get(c) for c in table.columns) for r in rows], table.schema)
        if copies > 1:
            copy = spark.range(copies).select(F.col("id").alias("_copy"))
            df = df.crossJoin(copy).select(*[
                F.concat(F.col(c), F.lit("-c"), F.col("_copy").cast("string")).alias(c) if c in ids
                else F.col(c) for c in table.columns])
        store.overwrite(table, df)

    write(HUB_MODELS, [{"id": n} for n in models], {"id"})
    write(MODEL_PARENTS, [{"model_id": c, "parent_id": p, "relation": r if i % 3 else None,
                           "source": "tag"} for i, (c, p, r) in enumerate(edges)],
          {"model_id", "parent_id"})
    fields = []
    for i, n in enumerate(models):
        declared = ("apache-2.0", "llama3.1", "mit", "cc-by-nc-4.0", None, None)[i % 6]
        fields.append({"model_id": n, "field": "license", "declared_value": declared,
                       "imputed_value": None if declared else ("apache-2.0", "mit", None)[i % 3],
                       "value": declared})
        fields.append({"model_id": n, "field": "reuse_method",
                       "imputed_value": "finetune" if i % 2 else None})
    write(MODEL_FIELDS, fields, {"model_id"})
    return {"models": len(models) * copies, "edges": len(edges) * copies, "copies": copies}


def stage_real_lineage(spark, store, settings, args) -> dict[str, Any]:
    """Lineage of the real 30,383-edge graph; the warehouse is built before the clock starts."""
    real_graph_warehouse(spark, store)
    started = time.perf_counter()
    figures = stage_lineage(spark, store, settings, args)
    figures["lineage_s"] = round(time.perf_counter() - started, 1)
    return figures


def stage_tiled_lineage(spark, store, settings, args) -> dict[str, Any]:
    """Lineage of a generated graph of at least ``--models`` models: the real graph tiled
    (:func:`real_graph_warehouse`); the warehouse is built before the clock starts."""
    built = real_graph_warehouse(spark, store, args.models)
    say(f"tiled lineage: {built['copies']} copies of the real graph, {built['models']} models, "
        f"{built['edges']} edges")
    started = time.perf_counter()
    figures = stage_lineage(spark, store, settings, args)
    figures["lineage_s"] = round(time.perf_counter() - started, 1)
    return {**figures, "copies": built["copies"], "graph_models": built["models"]}


def _semfin(settings, *arguments: str) -> float | str:
    """Wall seconds of one ``semfin`` command in a process of its own, start-up included,
    as an analyst runs it (the embedded default: DuckDB, no JVM); its error when it fails
    (a query on a table the benchmark's stages did not write, such as ``runs``)."""
    import subprocess

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "semfin_spark.cli", *arguments,
                           "--warehouse", settings.warehouse], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode:
        return f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1]}"
    return round(time.perf_counter() - started, 2)


def stage_sql(spark, store, settings, args) -> dict[str, Any]:
    """Each named query of conf/queries/ and one aggregate, each as its own ``semfin sql``."""
    from semfin_spark.sql import named_queries

    seconds = {"aggregate": _semfin(
        settings, "sql", "SELECT pipeline_tag, count(*) FROM hub_models GROUP BY 1")}
    for name in named_queries(settings.conf_dir):
        seconds[name] = _semfin(settings, "sql", "--query", name, "--format", "csv")
        say(f"sql {name}: {seconds[name]}")
    timed = [v for v in seconds.values() if isinstance(v, float)]
    return {"items": len(timed), "unit": "queries", "seconds": seconds,
            "slowest_s": max(timed) if timed else None}


def stage_report(spark, store, settings, args) -> dict[str, Any]:
    """``semfin report`` in a process of its own."""
    return {"items": 1, "unit": "reports", "seconds": round(_semfin(settings, "report"), 2)}


def stage_aibom(spark, store, settings, args) -> dict[str, Any]:
    """Every model's BOM (``semfin aibom --all``) into a temporary folder, removed after."""
    from semfin_spark.aibom import write_all_boms

    out = tempfile.mkdtemp(prefix="semfin-boms-")
    try:
        done = write_all_boms(spark, store, out, max_depth=settings.lineage.max_depth,
                              progress=say)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"items": done["written"], "unit": "BOMs", "invalid": done["invalid"]}


def stage_aibom_nightly(spark, store, settings, args) -> dict[str, Any]:
    """The nightly's BOMs (``aibom.nightly``) twice into a temporary folder: the first
    night writes every BOM, the second finds all unchanged. ``aibom_state`` is removed
    after, unless the warehouse had one."""
    from semfin_spark.aibom import write_all_boms
    from semfin_spark.schemas import AIBOM_STATE

    had_state = store.exists(AIBOM_STATE)
    out = tempfile.mkdtemp(prefix="semfin-boms-")
    try:
        times = []
        for _ in range(2):
            started = time.perf_counter()
            done = write_all_boms(spark, store, out, max_depth=settings.lineage.max_depth,
                                  incremental=True, progress=say)
            times.append(round(time.perf_counter() - started, 2))
    finally:
        shutil.rmtree(out, ignore_errors=True)
        if not had_state:
            shutil.rmtree(store.path(AIBOM_STATE), ignore_errors=True)
    return {"items": done["unchanged"], "unit": "BOMs", "first_night_s": times[0],
            "unchanged_night_s": times[1]}


def changed_snapshot(snapshot: str, out: Path, every: int) -> int:
    """Write ``snapshot`` again with every ``every``-th model changed as a new commit would
    change it: a new ``sha``, ``lastModified`` a day later, more downloads, and in its
    ``config.json`` (when it has one) ``transformers_version`` set to ``4.99.0``. Returns
    the number of models changed."""
    import datetime as dt
    import hashlib

    import orjson

    changed = 0
    partial = out.with_suffix(".partial")
    with open(snapshot, "rb") as src, open(partial, "wb") as dst:
        for i, line in enumerate(src):
            if i % every == every // 2:
                record = orjson.loads(line)
                record["sha"] = hashlib.sha1(f"{record['sha']}+1".encode()).hexdigest()
                modified = dt.datetime.fromisoformat(record["lastModified"].replace("Z", "+00:00"))
                record["lastModified"] = (modified + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
                record["downloads"] = (record.get("downloads") or 0) + 1
                if record.get("config_json"):
                    config = orjson.loads(record["config_json"])
                    if isinstance(config, dict):
                        config["transformers_version"] = "4.99.0"
                        record["config_json"] = orjson.dumps(config).decode()
                line = orjson.dumps(record) + b"\n"
                changed += 1
            dst.write(line)
    partial.rename(out)
    return changed


def _night(settings, store, source: str) -> dict[str, Any]:
    """One ``semfin nightly --source SOURCE`` in a process of its own (start-up included),
    and each stage's seconds from the ``runs`` row it wrote."""
    from pyspark.sql import functions as F

    wall = _semfin(settings, "nightly", "--source", source)
    if isinstance(wall, str):
        raise RuntimeError(f"semfin nightly --source {source}: {wall}")
    runs = store.read("runs")
    last = runs.where("stage = 'nightly'").orderBy(F.desc("started_at")).first()["run_id"]
    stages = {r["stage"]: round((r["ended_at"] - r["started_at"]).total_seconds(), 1)
              for r in runs.where(F.col("run_id") == last).where("status = 'succeeded'").collect()}
    say(f"nightly --source {source}: {wall} s; {stages}")
    return {"wall_s": wall, "stages": stages}


def stage_nightly_changed(spark, store, settings, args) -> dict[str, Any]:
    """A full nightly on the generated Hub, then a second after ``--changed-pct`` of its
    models changed (issue 10: at most 10% of the full one's time), each as ``semfin
    nightly`` in a process of its own, as the scheduler runs it. Needs a fresh warehouse."""
    if store.exists("hub_models"):
        raise SystemExit("nightly_changed needs a fresh warehouse: run it alone, without --warehouse "
                         "of an earlier run")
    snapshot = Path(args.source.removeprefix("snapshot:"))
    every = max(1, round(100 / args.changed_pct))
    changed_file = snapshot.with_name(f"{snapshot.stem}-every{every}-changed.jsonl")
    n_changed = changed_snapshot(str(snapshot), changed_file, every)
    say(f"{n_changed} models changed (one in {every}) -> {changed_file}")
    full = _night(settings, store, f"snapshot:{snapshot}")
    second = _night(settings, store, f"snapshot:{changed_file}")
    return {"items": n_changed, "unit": "changed", "full_s": full["wall_s"],
            "changed_s": second["wall_s"],
            "changed_share": round(second["wall_s"] / full["wall_s"], 3),
            "full_stages_s": full["stages"], "changed_stages_s": second["stages"]}


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "ingest": stage_ingest,
    "flatten": stage_flatten,
    "train": stage_train,
    "impute": stage_impute,
    "lineage": stage_lineage,
    "real_lineage": stage_real_lineage,
    "tiled_lineage": stage_tiled_lineage,
    "sql": stage_sql,
    "report": stage_report,
    "aibom": stage_aibom,
    "aibom_nightly": stage_aibom_nightly,
    "nightly_changed": stage_nightly_changed,
}


def generated_hub(args: argparse.Namespace, settings: Any) -> str:
    """The snapshot file of the generated Hub of ``args.models`` models (written once)."""
    from bench_peer import write_snapshot

    folder = Path(args.hub_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"hub-{args.models}-seed{args.seed}-block{settings.synthetic.block_size}.jsonl"
    if not path.exists():
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        write_snapshot(partial, args.models, args.seed, settings.synthetic.block_size)
        partial.rename(path)
        print(f"[bench] generated {args.models} models in {time.perf_counter() - started:.1f} s "
              f"-> {path}", flush=True)
    return str(path.resolve())


def run_peer(snapshot: str, args: argparse.Namespace) -> dict[str, Any]:
    """``scripts/bench_peer.py`` on ``snapshot`` in a process of its own; its JSON report."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="semfin-peer-") as work:
        out = Path(work) / "peer.json"
        print("[bench] peer (one Python process)", flush=True)
        subprocess.run([sys.executable, str(Path(__file__).with_name("bench_peer.py")),
                        "--snapshot", snapshot, "--work", work, "--out", str(out)], check=True)
        return json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default="ingest,flatten")
    parser.add_argument("--warehouse", help="keep the warehouse here (default: a temp folder, removed)")
    parser.add_argument("--out", default="bench-results/bench.json")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--hub-dir", default="bench-results/hubs",
                        help="where generated snapshot files are kept between runs")
    parser.add_argument("--changed-pct", type=float, default=1.0,
                        help="nightly_changed: the share of models (in %%) changed before the second night")
    parser.add_argument("--peer", action="store_true",
                        help="also run the single-process peer (scripts/bench_peer.py) on the same Hub")
    args = parser.parse_args()

    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    warehouse = args.warehouse or tempfile.mkdtemp(prefix="semfin-bench-")
    settings = load_settings(overrides={"warehouse": warehouse})
    needs_hub = {"ingest", "nightly_changed"} & set(names) or args.peer
    snapshot = generated_hub(args, settings) if needs_hub else None
    args.source = f"snapshot:{snapshot}"
    spark = build_session(settings, app_name="semfin bench",
                          extra_conf={"spark.driver.memory": args.driver_memory})
    store = DeltaStore.from_settings(spark, settings)
    if "ingest" not in names and store.exists("hub_models"):  # a kept warehouse: its own size
        args.models = store.read("hub_models").count()
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

    peer = run_peer(snapshot, args) if args.peer else None
    print(f"\n{'stage':12s} {'models':>9s} {'wall s':>8s} {'items/s':>10s} {'unit':>8s} "
          f"{'py MB':>7s} {'JVM MB':>7s}" + (f" {'peer s':>8s} {'ratio':>6s}" if peer else ""))
    for r in rows:
        line = (f"{r['stage']:12s} {r['models']:>9d} {r['wall_s']:>8.1f} {r['per_s'] or 0:>10.0f} "
                f"{r.get('unit', ''):>8s} {r['driver_python_peak_mb']:>7d} {r['jvm_peak_mb']:>7d}")
        if peer and r["stage"] in peer["stages"]:
            r["peer_s"] = peer["stages"][r["stage"]]["seconds"]
            r["ratio"] = round(r["wall_s"] / max(r["peer_s"], 0.01), 1)
            line += f" {r['peer_s']:>8.1f} {r['ratio']:>6.1f}"
        print(line)
    if peer:
        compared = [r for r in rows if "peer_s" in r]
        ours, theirs = sum(r["wall_s"] for r in compared), sum(r["peer_s"] for r in compared)
        print(f"{'total':12s} {args.models:>9d} {ours:>8.1f} {'':>10s} {'':>8s} {'':>7s} "
              f"{peer['peak_rss_mb']:>7.0f} {theirs:>8.1f} {ours / max(theirs, 0.01):>6.1f}"
              "   (peer's peak RSS in the JVM column)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cpus": os.cpu_count(), "snapshot": snapshot, "results": rows,
                               "peer": peer}, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
