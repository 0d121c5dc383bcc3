"""The nightly under spark-submit on a real standalone cluster (a master and two workers on
127.0.0.1), compared table by table with the embedded run of the same Hub (the session's
shared ``nightly_run``).

What only the driver sees breaks here: executors run in the workers' own folders (a
relative warehouse path would land there), import SemFin from the wheel that
``scripts/submit.sh`` ships (whose ``conf/`` is inside a zip), and run the executors'
Python named by the submit script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from semfin_spark.schemas import TABLES
from conftest import NIGHTLY_SOURCE
from standalone_cluster import StandaloneCluster

REPO = Path(__file__).resolve().parent.parent

VOLATILE = {"ingested_at", "flattened_at", "imputed_at", "rejected_at", "imputed_run_id",
            "written_at", "digest"}
"""Columns that say when or in which MLflow run: they differ between any two runs (a BOM's
digest covers the MLflow run that imputed its values)."""


FLOAT_TOLERANCE = 1e-6
"""Largest difference between a float of the cluster's run and the local one's. Spark ML
sums each L-BFGS gradient over the partitions in the order their tasks finish, so the
fitted coefficients, and the confidences they give, differ in the last bits from run to
run; a refit that starts warm (semfin_spark/classifier.py) carries that to about 1e-8."""


def table_frame(warehouse: Path, name: str):
    """A table read with delta-rs, volatile columns dropped, rows sorted by their other
    columns first (so a float's last bits cannot reorder them)."""
    from deltalake import DeltaTable

    frame = DeltaTable(str(warehouse / name)).to_pandas()
    frame = frame.drop(columns=[c for c in frame.columns if c in VOLATILE])
    if name == "aibom_state":  # BOM files under each warehouse's own aibom/ folder
        frame["path"] = frame["path"].map(lambda p: os.path.relpath(p, warehouse))
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: tuple(v) if hasattr(v, "__len__")
                                              and not isinstance(v, (str, bytes)) else v)
    floats = [c for c in frame.columns if frame[c].dtype.kind == "f"]
    order = [c for c in frame.columns if c not in floats] + floats
    return frame.sort_values(order).reset_index(drop=True)


def same_column(left, right) -> bool:
    """Equal values; floats within :data:`FLOAT_TOLERANCE` (nulls equal)."""
    import numpy as np

    if left.dtype.kind == "f" and right.dtype.kind == "f":
        return bool(np.allclose(left.to_numpy(), right.to_numpy(), rtol=0, atol=FLOAT_TOLERANCE,
                                equal_nan=True))
    return left.equals(right)


def test_nightly_on_a_standalone_cluster_equals_the_local_run(tmp_path, nightly_run):
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "SEMFIN_SUBMIT_ARGS": "--executor-memory 2g --conf spark.executor.cores=1 "
                                 "--conf spark.cores.max=2 --driver-memory 2g"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env["SEMFIN_AIBOM__NIGHTLY"] = "true"  # as the shared nightly: the executors write BOMs
    cluster = StandaloneCluster(tmp_path / "daemons").start()
    try:
        # A relative warehouse: the driver must make it absolute before executors see it.
        proc = subprocess.run(
            ["bash", str(REPO / "scripts" / "submit.sh"), cluster.url, "nightly",
             "--warehouse", "wh-cluster", "--source", NIGHTLY_SOURCE],
            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1500)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        assert f"on {cluster.url} (Spark 4.2.0" in output
        apps = [a for a in cluster.master_json["completedapps"] if a["name"] == "semfin nightly"]
        assert len(apps) == 1 and apps[0]["state"] == "FINISHED", apps
        by_worker = cluster.executors_by_worker(apps[0]["id"])
        assert len(by_worker) == 2 and all(n >= 1 for n in by_worker.values()), by_worker
    finally:
        cluster.stop()

    local = Path(nightly_run[0].warehouse)
    compared = 0
    for name in set(TABLES) - {"runs"}:  # run ids and times differ by nature
        on_cluster = tmp_path / "wh-cluster" / name
        on_local = local / name
        assert on_cluster.is_dir() == on_local.is_dir(), name
        if not on_local.is_dir():
            continue
        left, right = table_frame(tmp_path / "wh-cluster", name), table_frame(local, name)
        assert len(left) == len(right), name
        differing = [c for c in left.columns if not same_column(left[c], right[c])]
        assert not differing, f"{name}: columns {differing} differ between cluster and local runs"
        compared += 1
    assert compared >= 12
