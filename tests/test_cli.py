"""The command and the spark-submit jobs run the same code with the same arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semfin_spark.cli import EXIT_DATA, EXIT_USAGE, build_parser, main

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def test_every_stage_has_a_job_and_every_job_a_stage():
    stages = set(build_parser()._subparsers._group_actions[0].choices)  # noqa: SLF001
    jobs = {p.stem for p in (REPO / "jobs").glob("*.py")}
    assert stages == jobs


def test_bad_settings_exit_with_usage_code(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense_key: 1\n")
    assert main(["ingest", "--source", "snapshot:x", "--conf", str(bad)]) == EXIT_USAGE
    assert "unknown setting" in capsys.readouterr().err


def test_spark_submit_job_equals_semfin_command(tmp_path, shared_data):
    """`spark-submit jobs/ingest.py` and `semfin ingest` give the same table and the same output."""
    spark_submit = VENV_BIN / "spark-submit"
    if not spark_submit.exists():
        pytest.skip("spark-submit not installed beside the interpreter")
    snapshot = tmp_path / "small.jsonl"
    import gzip
    with gzip.open(shared_data / "hub2025_trees.jsonl.gz", "rt") as fh:
        snapshot.write_text("".join(next(fh) for _ in range(50)) + "not json\n")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": str(REPO)}
    outputs = []
    for name, cmd in (("submit", [str(spark_submit), "--master", "local[1]", str(REPO / "jobs" / "ingest.py")]),
                      ("cli", [str(VENV_BIN / "semfin"), "ingest", "--master", "local[1]"])):
        wh = tmp_path / name
        proc = subprocess.run(cmd + ["--source", f"snapshot:{snapshot}", "--warehouse", str(wh)],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        # spark-submit merges the driver's stderr (progress lines) into stdout.
        result_line = [l for l in proc.stdout.splitlines() if l.startswith("{")][-1]
        outputs.append(json.loads(result_line))
    assert outputs[0] == outputs[1]
    assert (outputs[0]["written"], outputs[0]["rejected"]) == (50, 1)


def test_missing_snapshot_exits_with_data_code(tmp_path):
    proc = subprocess.run([str(VENV_BIN / "semfin"), "ingest", "--master", "local[1]",
                           "--source", f"snapshot:{tmp_path / 'none.jsonl'}", "--warehouse", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert proc.returncode == EXIT_DATA
    assert "does not exist" in proc.stderr
