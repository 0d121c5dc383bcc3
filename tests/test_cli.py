"""The command and the spark-submit jobs run the same code with the same arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from semfin_spark.cli import EXIT_DATA, EXIT_USAGE, build_parser, main
from conftest import short_jvm_env

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


def test_learning_curve_sizes_are_parsed_or_refused_before_spark_starts(capsys):
    parser = build_parser()
    assert parser.parse_args(["evaluate", "--train-sizes", "1000,2_500, 5000"]).train_sizes == (1000, 2500, 5000)
    assert parser.parse_args(["evaluate"]).train_sizes == ()
    for bad in ("1k", "0,100", ""):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["evaluate", "--train-sizes", bad])
        assert exit_.value.code == 2
        assert "--train-sizes" in capsys.readouterr().err


def test_spark_submit_settings_win_over_the_embedded_defaults(tmp_path):
    """Under spark-submit, the master and settings of the command line are the job's."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import json\n"
        "from semfin_spark.settings import load_settings\n"
        "from semfin_spark.session import build_session\n"
        f"spark = build_session(load_settings(overrides={{'warehouse': {str(tmp_path / 'wh')!r}}}))\n"
        "c = spark.sparkContext.getConf()\n"
        "print('PROBE ' + json.dumps({'master': spark.sparkContext.master,"
        " 'partitions': spark.conf.get('spark.sql.shuffle.partitions'),"
        " 'host': c.get('spark.driver.host'), 'app': c.get('spark.app.name'),"
        " 'snapshot_partitions': spark.conf.get('spark.databricks.delta.snapshotPartitions')}))\n"
        "spark.stop()\n")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [str(VENV_BIN / "spark-submit"), "--master", "local[1]", "--name", "probe",
         "--conf", "spark.sql.shuffle.partitions=7", "--conf", "spark.driver.host=localhost",
         str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    probe = json.loads([l for l in proc.stdout.splitlines() if l.startswith("PROBE ")][-1][6:])
    assert probe["master"] == "local[1]"  # not the embedded local[*]
    assert probe["partitions"] == "7"  # not the defaults file's 64
    assert probe["host"] == "localhost"  # not the embedded 127.0.0.1
    assert probe["app"] == "probe"
    # Keys nobody set are filled from conf/spark-defaults.conf (Delta's own default is 50).
    assert probe["snapshot_partitions"] == "1"


def test_spark_submit_job_equals_semfin_command(tmp_path, shared_data):
    """`scripts/submit.sh local[1] ingest` (spark-submit jobs/ingest.py) and `semfin ingest`
    give the same table and the same output, and the job runs on the master it was given."""
    snapshot = tmp_path / "small.jsonl"
    import gzip
    with gzip.open(shared_data / "hub2025_trees.jsonl.gz", "rt") as fh:
        snapshot.write_text("".join(next(fh) for _ in range(50)) + "not json\n")
    outputs = []
    for name, cmd in (("submit", ["bash", str(REPO / "scripts" / "submit.sh"), "local[1]", "ingest"]),
                      ("cli", [str(VENV_BIN / "semfin"), "ingest", "--master", "local[1]"])):
        wh = tmp_path / name
        # A secret given as a setting (as an S3 key would be) reaches no line of output.
        secret = "--conf spark.hadoop.fs.s3a.secret.key=NOT-FOR-LOGS-42"
        proc = subprocess.run(cmd + ["--source", f"snapshot:{snapshot}", "--warehouse", str(wh)],
                              capture_output=True, text=True, timeout=300,
                              env=short_jvm_env(PYSPARK_PYTHON=sys.executable,
                                                SEMFIN_SUBMIT_ARGS=secret))
        assert proc.returncode == 0, proc.stderr[-3000:]
        # spark-submit merges the driver's stderr (progress lines) into stdout.
        text = proc.stdout + proc.stderr
        assert "NOT-FOR-LOGS-42" not in text
        if name == "submit":
            assert "spark.hadoop.fs.s3a.secret.key=***" in proc.stderr
        assert "on local[1] (Spark 4.2.0" in text
        result_line = [l for l in proc.stdout.splitlines() if l.startswith("{")][-1]
        outputs.append(json.loads(result_line))
    assert outputs[0] == outputs[1]
    assert (outputs[0]["written"], outputs[0]["rejected"]) == (50, 1)


def test_missing_snapshot_exits_with_data_code_before_spark_starts(tmp_path, capsys, monkeypatch):
    import semfin_spark.session

    def no_spark(*args, **kwargs):
        raise AssertionError("Spark was started for a snapshot path that does not exist")

    monkeypatch.setattr(semfin_spark.session, "build_session", no_spark)
    for stage in ("ingest", "nightly"):
        code = main([stage, "--source", f"snapshot:{tmp_path / 'none.jsonl'}",
                     "--warehouse", str(tmp_path / "w")])
        assert code == EXIT_DATA
        assert "does not exist" in capsys.readouterr().err
    code = main(["evaluate", "--snapshot", str(tmp_path / "none.jsonl.gz"),
                 "--warehouse", str(tmp_path / "w")])
    assert code == EXIT_DATA and "does not exist" in capsys.readouterr().err


def test_a_stage_without_its_input_tables_exits_before_spark_and_writes_nothing(tmp_path):
    """A mistyped --warehouse, or a stage run before the one that feeds it: a clear error
    and EXIT_DATA, not a run that creates empty tables in a new folder."""
    wh = tmp_path / "typo"
    proc = subprocess.run([str(VENV_BIN / "semfin"), "lineage", "--warehouse", str(wh)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_DATA, proc.stderr[-2000:]
    assert "has no model_parents table: run `semfin flatten` first" in proc.stderr
    assert "Traceback" not in proc.stderr and "Spark" not in proc.stderr  # no JVM started
    assert not wh.exists() or not any(wh.iterdir())  # at most the lock's folder, empty


def test_each_stage_names_the_first_table_it_lacks_and_the_stage_that_writes_it():
    from argparse import Namespace

    from semfin_spark.cli import missing_input

    def lacking(stage: str, tables: set[str], **options) -> str | None:
        return missing_input(Namespace(stage=stage, **options), "wh", tables.__contains__)

    everything = {"hub_models", "model_fields", "model_parents"}
    for stage in ("ingest", "flatten", "train", "evaluate", "impute", "lineage", "nightly",
                  "sql", "report", "tables", "aibom"):
        assert lacking(stage, everything) is None, stage
    assert "no hub_models table: run `semfin ingest`" in lacking("flatten", set())
    for stage in ("train", "evaluate", "impute", "lineage"):
        assert "no model_fields table: run `semfin flatten`" in lacking(stage, {"model_parents"})
    assert "no model_parents table" in lacking("lineage", {"model_fields"})
    assert lacking("ingest", set()) is None and lacking("nightly", set()) is None
    # evaluate --snapshot builds its own warehouse from the snapshot
    assert lacking("evaluate", set(), snapshot="dev.jsonl.gz") is None


def test_missing_delta_jars_say_how_to_fetch_them(tmp_path):
    proc = subprocess.run([str(VENV_BIN / "semfin"), "tables", "--warehouse", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SEMFIN_JARS_DIR": str(tmp_path / "no-jars")})
    assert proc.returncode == EXIT_USAGE
    assert "python -m semfin_spark.jars" in proc.stderr


def test_an_unreachable_hub_is_a_clear_error_without_the_credentials(tmp_path):
    """Issue 16 §11: no traceback, its own exit code, and the endpoint's password and the
    token never printed."""
    import socket

    from semfin_spark.cli import EXIT_UNREACHABLE

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "HF_ENDPOINT": f"http://alice:s3cr3t-pass@127.0.0.1:{port}",
           "HF_TOKEN": "hf_SecretTokenValue123456", "SEMFIN_INGEST__HUB_MAX_RETRIES": "0"}
    proc = subprocess.run([str(VENV_BIN / "semfin"), "ingest", "--master", "local[1]",
                           "--source", "hub:5", "--warehouse", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=300, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_UNREACHABLE, output[-2000:]
    assert "listing page 1" in proc.stderr and "***@127.0.0.1" in proc.stderr
    assert "s3cr3t-pass" not in output and "SecretTokenValue" not in output
    assert "Traceback" not in output


def test_snapshot_crawls_the_hub_into_files_without_spark(tmp_path, monkeypatch, capsys,
                                                          shared_data):
    """`semfin snapshot --out DIR`: the files a remote warehouse ingests with snapshot:."""
    import gzip
    import json

    from hub_server import FakeHub
    from semfin_spark.cli import EXIT_USAGE, main

    with gzip.open(shared_data / "hub2025_trees.jsonl.gz", "rt") as lines:
        records = [json.loads(next(lines)) for _ in range(12)]
    with FakeHub(records, {r["id"]: '{"model_type": "bert"}' for r in records}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        assert main(["snapshot", "--out", str(tmp_path / "snap"), "--limit", "10"]) == 0
        again = main(["snapshot", "--out", str(tmp_path / "snap")])
        assert not any(r.headers.get("authorization") for r in hub.requests)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert out["models"] == 10 and len(out["files"]) == 1
    with gzip.open(out["files"][0], "rt") as lines:
        assert [json.loads(line)["id"] for line in lines] == [r["id"] for r in records[:10]]
    assert again == EXIT_USAGE  # never mixes two crawls in one folder


def test_a_wheel_is_built_once_per_version_of_the_sources_and_never_over_one_in_use(tmp_path):
    """scripts/build_wheel.sh (what submit.sh ships with --py-files): unchanged sources reuse
    their wheel; changed ones get a new one beside it, and the wheel a running job reads
    stays byte for byte as it was (rebuilt in place, it failed that job's next import)."""
    import shutil
    import zipfile

    root = tmp_path / "checkout"
    shutil.copytree(REPO / "semfin_spark", root / "semfin_spark",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "conf", root / "conf")
    shutil.copy(REPO / "setup.py", root / "setup.py")
    (root / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "build_wheel.sh", root / "scripts" / "build_wheel.sh")

    def build() -> Path:
        proc = subprocess.run(["bash", str(root / "scripts" / "build_wheel.sh")], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "SEMFIN_PYTHON": sys.executable})
        assert proc.returncode == 0, proc.stderr[-2000:]
        return Path(proc.stdout.strip())

    first = build()
    in_use = first.read_bytes()
    assert first.name == "semfin_spark-0.1.0-py3-none-any.whl" and first.parent.parent == root / "dist"
    assert build() == first
    init = root / "semfin_spark" / "__init__.py"
    init.write_text(init.read_text(encoding="utf-8") + "# a new release\n", encoding="utf-8")
    second = build()
    assert second != first and first.read_bytes() == in_use
    assert zipfile.ZipFile(second).read("semfin_spark/__init__.py").endswith(b"# a new release\n")


def test_a_report_for_an_object_store_is_written_by_spark_not_duckdb(monkeypatch, tmp_path):
    """DuckDB reads a local warehouse without a JVM, but only Spark's Hadoop file system can
    write a page to ``s3a://``: ``semfin report --out s3a://...`` takes the Spark engine."""
    from semfin_spark.cli import sql_engine
    from semfin_spark.settings import load_settings

    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)  # not under spark-submit
    settings = load_settings(environ={}, overrides={"warehouse": str(tmp_path / "wh")})
    parser = build_parser()

    def engine(*argv: str) -> str:
        return sql_engine(parser.parse_args(["report", *argv]), settings)

    assert engine("--out", "s3a://bucket/reports") == "spark"
    assert engine("--out", str(tmp_path / "out")) == engine() == "duckdb"
    assert engine("--out", "s3a://bucket/reports", "--engine", "duckdb") == "duckdb"
    assert sql_engine(parser.parse_args(["sql", "SELECT 1"]), settings) == "duckdb"
