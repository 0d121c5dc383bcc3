"""The warehouse lock and the runs table: one writer at a time, and a failed night resumed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from semfin_spark.cli import EXIT_LOCKED
from semfin_spark.delta import DeltaStore
from semfin_spark.runs import LOCK_FILE, WarehouseLocked, acquire_lock, warehouse_lock
from semfin_spark.schemas import RUNS

VENV_BIN = Path(sys.executable).parent


def write_lock(warehouse: Path, **owner) -> Path:
    warehouse.mkdir(parents=True, exist_ok=True)
    path = warehouse / LOCK_FILE
    path.write_text(json.dumps({"operation": "semfin nightly", "started_at": time.time(),
                                "refreshed_at": time.time(), "token": "t", **owner}))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_writer_at_a_time_and_the_lock_is_released(tmp_path):
    with warehouse_lock(str(tmp_path), "semfin nightly"):
        with pytest.raises(WarehouseLocked, match=rf"semfin nightly \(pid {os.getpid()}"):
            acquire_lock(str(tmp_path), "semfin flatten")
    assert not (tmp_path / LOCK_FILE).exists()
    acquire_lock(str(tmp_path), "semfin flatten").release()


@pytest.mark.parametrize("holder", ["dead_process", "unreadable", "silent_other_host"])
def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path, holder):
    if holder == "dead_process":
        write_lock(tmp_path, host=socket.gethostname(), pid=dead_pid())
    elif holder == "unreadable":  # killed while writing the lock file
        (tmp_path / LOCK_FILE).write_text("")
    else:
        write_lock(tmp_path, host="elsewhere", pid=1, refreshed_at=time.time() - 7 * 3600)
    lock = acquire_lock(str(tmp_path), "semfin nightly")
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_live_holder_on_another_host_keeps_its_lock(tmp_path):
    write_lock(tmp_path, host="elsewhere", pid=1, refreshed_at=time.time() - 60)
    with pytest.raises(WarehouseLocked, match="on elsewhere"):
        acquire_lock(str(tmp_path), "semfin nightly")


def test_a_second_writer_exits_with_its_own_code(tmp_path):
    """The CLI checks the lock before it starts Spark: the refusal is immediate."""
    write_lock(tmp_path / "w", host=socket.gethostname(), pid=os.getpid())
    proc = subprocess.run([str(VENV_BIN / "semfin"), "flatten", "--warehouse", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_LOCKED, proc.stderr[-2000:]
    assert "is locked by semfin nightly" in proc.stderr and "Traceback" not in proc.stderr


def fake_stages(monkeypatch, calls: list[str], fail_at: set[str]):
    """Stand-ins for the five stages: the runs bookkeeping is what is tested here."""
    import semfin_spark.flatten
    import semfin_spark.impute
    import semfin_spark.ingest
    import semfin_spark.lineage
    import semfin_spark.train

    def stage(name, value):
        def run(*args, **kwargs):
            calls.append(name)
            if name in fail_at:
                raise RuntimeError(f"{name} broke (token hf_NotForLogs12345)")
            return value
        return run

    monkeypatch.setattr(semfin_spark.ingest, "ingest", stage("ingest", {"written": 3}))
    monkeypatch.setattr(semfin_spark.flatten, "flatten", stage("flatten", {"reprocessed": 3}))
    monkeypatch.setattr(semfin_spark.train, "train", stage("train", SimpleNamespace(
        run_id="r", unchanged=False, registered=["semfin-license"], skipped=set())))
    monkeypatch.setattr(semfin_spark.impute, "impute", stage("impute", SimpleNamespace(
        table_version=None, fields={})))
    monkeypatch.setattr(semfin_spark.lineage, "run_lineage", stage("lineage", {"components": 1}))
    monkeypatch.setattr(semfin_spark.lineage, "write_report", lambda report, path, spark=None: None)


def test_a_failed_night_resumes_at_the_stage_that_did_not_finish(spark, settings, monkeypatch):
    from semfin_spark.nightly import run_nightly

    store = DeltaStore.from_settings(spark, settings)
    calls: list[str] = []
    fake_stages(monkeypatch, calls, fail_at={"train"})
    with pytest.raises(RuntimeError, match="train broke"):
        run_nightly(spark, store, settings, "synthetic:3", progress=lambda _: None)
    rows = store.read(RUNS).collect()
    assert {(r.stage, r.status, r.attempt) for r in rows} == {
        ("ingest", "succeeded", 1), ("flatten", "succeeded", 1), ("train", "failed", 1)}
    failed = next(r for r in rows if r.status == "failed")
    assert "train broke" in failed.error and "NotForLogs" not in failed.error
    assert json.loads(next(r for r in rows if r.stage == "ingest").counts) == {"written": 3}

    calls.clear()
    fake_stages(monkeypatch, calls, fail_at=set())
    lines: list[str] = []
    result = run_nightly(spark, store, settings, "synthetic:3", progress=lines.append)
    assert calls == ["train", "impute", "lineage"]
    assert any("resuming run" in l for l in lines)
    assert result.stages["ingest"] == {"skipped": "done before"}
    rows = store.read(RUNS).collect()
    assert {r.run_id for r in rows} == {result.run_id}
    assert {(r.stage, r.status) for r in rows if r.attempt == 2} == {
        ("train", "succeeded"), ("impute", "succeeded"), ("lineage", "succeeded"),
        ("upkeep", "succeeded"), ("nightly", "succeeded")}

    calls.clear()
    again = run_nightly(spark, store, settings, "synthetic:3", progress=lambda _: None)
    assert calls == ["ingest", "flatten", "train", "impute", "lineage"]
    assert again.run_id != result.run_id  # the last night finished: a new one starts


def test_a_warehouse_that_cannot_be_written_is_a_usage_error(tmp_path):
    """Issue 14 §5: a read-only warehouse gives a clear message and exit code 2. (Tests run
    as root, which ignores file modes: the warehouse path runs through a file instead.)"""
    from semfin_spark.cli import EXIT_USAGE

    (tmp_path / "a-file").write_text("")
    proc = subprocess.run([str(VENV_BIN / "semfin"), "flatten", "--warehouse",
                           str(tmp_path / "a-file" / "w")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USAGE, proc.stderr[-2000:]
    assert "cannot write to the warehouse" in proc.stderr and "Traceback" not in proc.stderr
