"""One SparkSession for the whole test session, tiny-data settings, shared fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# A pytest-xdist worker's __main__ is execnet's bootstrap, without __spec__ or __file__, and
# pyspark takes that for its own doctests: importing pyspark.sql.connect (MLflow does, to
# log a Spark model) then calls sys.exit(0) when grpc is missing. Name the worker's file.
_main = sys.modules["__main__"]
if getattr(_main, "__spec__", None) is None and not hasattr(_main, "__file__"):
    _main.__file__ = "<pytest-xdist worker>"

# Before anything imports huggingface_hub: no request may leave for huggingface.co.
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_TOKEN", None)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def short_jvm_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with ``extra``, for a JVM a test starts that lives minutes on a few
    hundred rows (the standalone cluster's daemons and executors, a spark-submit run): the
    JIT stops at C1.
    The C2 compiler spends more CPU on such a JVM's hot code than the code gives back
    before the JVM exits, and the suite is bound by CPU. Measured alone (2026-12-06): the
    standalone cluster's 1,500-model nightly took 198.2 s with its executors at C1 against
    252.6 and 241.1 s at both tiers. Only for JVMs started as processes: the session's own
    JVM lives for the whole run and keeps both tiers (C1 alone made its small flattens
    slower), so this is never put in ``os.environ``."""
    env = {**os.environ, **extra}
    own = env.get("JAVA_TOOL_OPTIONS")
    return {**env, "JAVA_TOOL_OPTIONS": " ".join(filter(None, (own, "-XX:TieredStopAtLevel=1")))}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real Hub metadata); skips when absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real Hub metadata not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """The one SparkSession of the test session: local[2], UI off, two shuffle partitions,
    interpreted expressions."""
    from semfin_spark.session import build_session
    from semfin_spark.settings import load_settings

    os.environ["PYSPARK_PYTHON"] = sys.executable
    warehouse = tmp_path_factory.mktemp("spark-session-warehouse")
    settings = load_settings(environ={}, overrides={"warehouse": str(warehouse),
                                                    "spark.master": "local[2]"})
    session = build_session(settings, app_name="semfin-tests", extra_conf={
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.sql.adaptive.enabled": "false",
        "spark.driver.memory": "3g",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "1000",
        # The tests' data is a few rows: compiling generated code for each new plan costs
        # more than running it interpreted (tests/test_impute.py 176 s -> 152 s). The
        # standalone-cluster and spark-submit tests run with the shipped defaults (codegen).
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.codegen.factoryMode": "NO_CODEGEN",
        # The session opens thousands of temporary tables: Delta's default cache kept every
        # log with its state, the old generation stayed full and G1 spent 158 s of CPU
        # marking it in a whole run (73 s of GC with these two).
        "spark.databricks.delta.delta.log.cacheSize": "32",
        "spark.driver.extraJavaOptions": "-XX:+UseParallelGC",
    })
    yield session
    session.stop()


NIGHTLY_SOURCE = "synthetic:1500,seed=3"
"""The generated Hub of the session's shared nightly run (tests/test_nightly.py, and the
reference the standalone-cluster run is compared with in tests/test_cluster.py)."""


@pytest.fixture(scope="session")
def nightly_run(spark, tmp_path_factory):
    """One whole nightly on the embedded session (BOMs included), shared by every test that
    reads it: (settings, store, first result, table versions, progress lines)."""
    from semfin_spark.delta import DeltaStore
    from semfin_spark.nightly import run_nightly
    from semfin_spark.settings import load_settings

    root = tmp_path_factory.mktemp("nightly")
    settings = load_settings(environ={}, overrides={"warehouse": str(root / "wh"),
                                                    "aibom.nightly": True})
    store = DeltaStore.from_settings(spark, settings)
    lines: list[str] = []
    first = run_nightly(spark, store, settings, NIGHTLY_SOURCE, progress=lines.append)
    versions = {name: info["version"] for name, info in first.tables.items()}
    return settings, store, first, versions, lines


def _real_warehouse(spark, tmp_path_factory, shared_data: Path, name: str):
    """``<name>.jsonl.gz`` of ``../shared/data`` ingested and flattened into a new warehouse."""
    from semfin_spark.delta import DeltaStore
    from semfin_spark.flatten import flatten
    from semfin_spark.ingest import ingest
    from semfin_spark.settings import load_settings

    root = tmp_path_factory.mktemp(f"real-{name}")
    settings = load_settings(environ={}, overrides={"warehouse": str(root)})
    store = DeltaStore(spark, str(root))
    quiet = lambda _line: None  # noqa: E731
    ingest(spark, store, f"snapshot:{shared_data / (name + '.jsonl.gz')}", settings, progress=quiet)
    flatten(spark, store, settings, progress=quiet)
    return store


@pytest.fixture(scope="session")
def trees_warehouse(spark, tmp_path_factory, shared_data):
    """``hub2025_trees`` (1,983 real models) ingested and flattened, once per session: a
    ``DeltaStore``. Read it; a test that writes works on a copy."""
    return _real_warehouse(spark, tmp_path_factory, shared_data, "hub2025_trees")


@pytest.fixture(scope="session")
def dev_warehouse(spark, tmp_path_factory, shared_data):
    """``hub2022_dev`` (5,000 real models) ingested and flattened, once per session, as
    :func:`trees_warehouse`."""
    return _real_warehouse(spark, tmp_path_factory, shared_data, "hub2022_dev")


SHARED_GROUP = "shared-warehouses"
SHARED_FIXTURES = {"nightly_run", "trees_warehouse", "dev_warehouse"}
"""The session's expensive warehouses: every test that needs one, directly or through
another fixture, runs in one pytest-xdist worker, so each is built once."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Group the tests for pytest-xdist's ``--dist loadgroup`` (pytest.ini runs two workers):
    the tests of one module run in one worker, so a module fixture is built once, and the
    tests that need one of :data:`SHARED_FIXTURES` (``fixturenames`` is the closure: a
    module fixture built on one counts) all run in one worker, so each is built once.
    (tryfirst: before xdist writes the group into the test's id.)"""
    for item in items:
        shared = bool(SHARED_FIXTURES & set(getattr(item, "fixturenames", ())))
        item.add_marker(pytest.mark.xdist_group(SHARED_GROUP if shared else item.path.stem))


@pytest.fixture(autouse=True)
def _reset_spark_state(request):
    """Drop cached data and temp views between tests that use Spark."""
    yield
    if "spark" in request.fixturenames:
        session = request.getfixturevalue("spark")
        session.catalog.clearCache()
        # SHOW VIEWS, not catalog.listTables(): the latter decodes its rows through an
        # encoder that fails with interpreted expressions (EXPRESSION_DECODING_FAILED).
        for view in session.sql("SHOW VIEWS").collect():
            if view.isTemporary:
                session.catalog.dropTempView(view.viewName)


@pytest.fixture
def settings(tmp_path):
    """Settings with a fresh warehouse under the test's tmp folder."""
    from semfin_spark.settings import load_settings

    return load_settings(environ={}, overrides={"warehouse": str(tmp_path / "warehouse")})
