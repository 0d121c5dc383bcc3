#!/usr/bin/env python
"""Kill the nightly with SIGKILL during each stage, run it again, compare with a clean run.

    .venv/bin/python scripts/kill_nightly.py [--source synthetic:400,seed=5] [--out DIR]

For each stage (ingest, flatten, train, impute, lineage, upkeep) a fresh warehouse runs
``semfin nightly``; when the stage's progress line appears, the whole process group (the
Python driver and its JVM) gets SIGKILL after a delay drawn from ``--max-delay`` seconds,
so kills land anywhere in the stage, commits included. ``semfin nightly`` then runs again
on that warehouse (taking over the dead run's lock, resuming its run). Every table is
then compared, contents not versions, with an uninterrupted run of the same source, and
read by Spark (the rerun itself), delta-rs and DuckDB.

Prints one line per stage and writes ``kill_nightly.json`` in ``--out``. Too slow for the
test suite (two nightlies per stage); run it before a release and after touching a
stage's commit logic.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from semfin_spark.schemas import TABLES  # noqa: E402
from test_cluster import table_frame  # noqa: E402  (the cluster test's comparison)

SEMFIN = str(Path(sys.executable).parent / "semfin")
MARKERS = {"ingest": "nightly: 1/5 ingest", "flatten": "nightly: 2/5 flatten",
           "train": "nightly: 3/5 train", "impute": "nightly: 4/5 impute",
           "lineage": "nightly: 5/5 lineage", "upkeep": "nightly: upkeep"}


def nightly(warehouse: Path, source: str) -> subprocess.CompletedProcess:
    return subprocess.run([SEMFIN, "nightly", "--warehouse", str(warehouse), "--source", source],
                          capture_output=True, text=True, timeout=3600)


def killed_nightly(warehouse: Path, source: str, stage: str, max_delay: float,
                   rng: random.Random) -> dict:
    """Run the nightly and SIGKILL it ``delay`` seconds after ``stage`` starts."""
    proc = subprocess.Popen([SEMFIN, "nightly", "--warehouse", str(warehouse), "--source", source],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    delay = rng.uniform(0, max_delay)
    assert proc.stderr is not None
    for line in proc.stderr:
        if MARKERS[stage] in line:
            time.sleep(delay)
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    return {"killed": proc.returncode == -signal.SIGKILL, "delay_s": round(delay, 1)}


def compare(left: Path, right: Path) -> list[str]:
    """Tables whose contents differ (runs aside: its ids and times differ by nature)."""
    differing = []
    for name in sorted(set(TABLES) - {"runs"}):
        a, b = left / name, right / name
        if a.is_dir() != b.is_dir():
            differing.append(f"{name}: exists on one side only")
            continue
        if not a.is_dir():
            continue
        x, y = table_frame(left, name), table_frame(right, name)
        if len(x) != len(y) or any(not x[c].equals(y[c]) for c in x.columns):
            differing.append(f"{name}: {len(x)} vs {len(y)} rows")
    return differing


def readable_by_duckdb(warehouse: Path) -> list[str]:
    """Tables DuckDB's delta extension (the ``duckdb-ext-delta`` wheel, no download) cannot read."""
    import duckdb
    import duckdb_ext

    con = duckdb.connect(config={
        "extension_directory": os.path.join(list(duckdb_ext.__path__)[0], "extensions"),
        "autoinstall_known_extensions": "false"})
    con.sql("LOAD delta")
    bad = []
    for name in TABLES:
        if (warehouse / name).is_dir():
            try:
                con.sql(f"SELECT count(*) FROM delta_scan('{warehouse / name}')").fetchall()
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                bad.append(f"{name}: {exc}")
    return bad


def check_duckdb_only(out: Path) -> int:
    """``--duckdb-only``: read every warehouse of an earlier run with DuckDB again."""
    errors = {w.name: readable_by_duckdb(w) for w in sorted(out.iterdir()) if w.is_dir()}
    for name, bad in errors.items():
        print(f"{name:22s} duckdb errors: {bad or 'none'}")
    return 1 if any(errors.values()) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="synthetic:400,seed=5")
    parser.add_argument("--out", default="kill-nightly")
    parser.add_argument("--max-delay", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", default=",".join(MARKERS))
    parser.add_argument("--duckdb-only", action="store_true",
                        help="only read the warehouses of an earlier run with DuckDB")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    if args.duckdb_only:
        return check_duckdb_only(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    reference = out / "reference"
    if not (reference / "hub_models").is_dir():
        started = time.time()
        done = nightly(reference, args.source)
        if done.returncode != 0:
            print(done.stderr[-3000:])
            return 1
        print(f"reference nightly: {time.time() - started:.0f} s")
    results = {}
    for stage in args.stages.split(","):
        warehouse = out / f"killed-in-{stage}"
        kill = killed_nightly(warehouse, args.source, stage, args.max_delay, rng)
        started = time.time()
        rerun = nightly(warehouse, args.source)
        row = {**kill, "rerun_exit": rerun.returncode, "rerun_s": round(time.time() - started),
               "resumed": "resuming run" in rerun.stderr,
               "differing": compare(warehouse, reference) if rerun.returncode == 0 else ["rerun failed"],
               "duckdb_errors": readable_by_duckdb(warehouse)}
        results[stage] = row
        print(f"{stage:8s} killed={row['killed']} after {row['delay_s']:4.1f} s, rerun exit "
              f"{row['rerun_exit']} in {row['rerun_s']} s, resumed={row['resumed']}, "
              f"differing tables: {row['differing'] or 'none'}, duckdb errors: "
              f"{len(row['duckdb_errors'])}", flush=True)
    (out / "kill_nightly.json").write_text(json.dumps(results, indent=2))
    return 0 if all(not r["differing"] and not r["duckdb_errors"] and r["rerun_exit"] == 0
                    for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
