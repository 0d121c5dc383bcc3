"""The nightly refresh: every stage in order, each reading and writing Delta tables.

``semfin nightly --source ...`` (and ``scripts/demo.sh``) runs this: ingest, flatten, train,
impute, lineage. Each stage commits its own tables, so a refresh killed half-way leaves
every table at a consistent version and a re-run picks up where the data says it should.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.runs import RunLog, stage_runner
from semfin_spark.schemas import INGEST_REJECTS, TABLES
from semfin_spark.session import clear_stale_checkpoints
from semfin_spark.settings import Settings, SettingsError, local_path


@dataclass
class NightlyResult:
    """What the refresh did: one entry per stage, and the warehouse afterwards."""

    stages: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, int | None]] = field(default_factory=dict)
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None
    report: dict[str, str] = field(default_factory=dict)
    """``html`` and ``json``: the nightly report's files; ``error`` when it failed;
    ``mlflow_ui``: the command that opens the runs behind it."""


STAGES = ("ingest", "flatten", "train", "impute", "lineage", "aibom")
"""The refresh's stages, in data-flow order (``aibom`` only with ``aibom.nightly``)."""


def run_nightly(spark: SparkSession, store: DeltaStore, settings: Settings, source: str, *,
                report_path: str | None = None,
                progress: Callable[[str], None] = print) -> NightlyResult:
    """Ingest ``source``, flatten, train, impute, rebuild lineage, then summarise.

    Args:
        spark: the session.
        store: the warehouse's Delta store.
        settings: the loaded settings.
        source: as for ``semfin ingest --source``.
        report_path: where the lineage report JSON goes (default
            ``<warehouse>/reports/lineage.json``).
        progress: where progress lines go.

    Returns:
        Per-stage results and each table's version and row count.

    Raises:
        SettingsError: ``aibom.nightly`` is on and the BOMs' folder is not a local or
            shared one (a warehouse on an object store without ``aibom.dir``), found before
            any stage runs rather than after the others have.

    Implementation details:
        Each stage appends its row to ``runs`` when it ends (:mod:`semfin_spark.runs`).
        A night that failed or was killed is resumed by the next run of the same source:
        the stages it finished are skipped. Each stage commits its own tables and is
        incremental or idempotent, so a refresh killed at any point is finished by
        running it again: ingest and flatten rewrite
        only changed models (a table none of whose rows changed keeps its version),
        train reuses the last run when its inputs are unchanged
        (:func:`~semfin_spark.train.train`), impute rescores only changed rows, lineage
        rebuilds its tables from the others unless its inputs are those of the last
        report (:func:`~semfin_spark.lineage.run_lineage`). With nothing new, a second run
        adds no version to any table but ``runs``, and registers no model.
    """
    from semfin_spark.flatten import flatten
    from semfin_spark.impute import impute
    from semfin_spark.ingest import ingest
    from semfin_spark.lineage import run_lineage, write_report
    from semfin_spark.train import train

    boms = settings.aibom.out_dir(settings.warehouse)
    if settings.aibom.nightly and local_path(boms) is None:
        raise SettingsError(f"aibom.nightly: the executors write BOMs as plain files, not to {boms}: "
                            "set aibom.dir to a folder every executor reaches")
    result = NightlyResult()
    log = RunLog.start(store, source)
    result.run_id = log.run_id
    if log.resumed:
        progress(f"nightly: resuming run {log.run_id} (attempt {log.attempt}); done before: "
                 f"{', '.join(sorted(log.succeeded)) or 'nothing'}")
    run = stage_runner(log, progress)
    versions_before = {name: store.version(name) for name in TABLES}

    stages = [s for s in STAGES if s != "aibom" or settings.aibom.nightly]

    def step(number: int, name: str) -> None:
        progress(f"nightly: {number}/{len(stages)} {name}")

    def do_ingest() -> dict[str, Any]:
        return _plain(ingest(spark, store, source, settings, progress=progress))

    def do_train() -> dict[str, Any]:
        trained = train(spark, store, settings, progress=progress)
        return {"run_id": trained.run_id, "unchanged": trained.unchanged,
                "registered": trained.registered, "skipped": sorted(trained.skipped)}

    def do_impute() -> dict[str, Any]:
        if not _registered_models(result, log):
            progress("nightly: impute skipped, no field had enough labels to train")
            return {"skipped": "no registered model"}
        imputed = impute(spark, store, settings, progress=progress)
        return {"table_version": imputed.table_version,
                **{name: {"scored": f.scored, "imputed": f.imputed}
                   for name, f in imputed.fields.items()}}

    def do_lineage() -> dict[str, Any]:
        path = report_path or os.path.join(settings.warehouse, "reports", "lineage.json")
        report = run_lineage(spark, store, settings, progress=progress, last_report=path)
        write_report(report, path, spark)
        figures = {k: report[k] for k in ("components", "largest_component", "isolated_models",
                                          "self_loops", "chains", "license_chains",
                                          "incompatible_share", "unchanged") if k in report}
        return {**figures, "report": path}

    def do_aibom() -> dict[str, Any]:
        from semfin_spark.aibom import write_all_boms

        done = write_all_boms(spark, store, boms,
                              max_depth=settings.lineage.max_depth, incremental=True,
                              progress=progress)
        return _plain(done)

    bodies = {"ingest": do_ingest,
              "flatten": lambda: _plain(flatten(spark, store, settings, progress=progress)),
              "train": do_train, "impute": do_impute, "lineage": do_lineage, "aibom": do_aibom}
    for number, name in enumerate(stages, 1):
        step(number, name)
        figures = run(name, bodies[name])
        result.stages[name] = figures if figures is not None else {"skipped": "done before"}
    # A resumed run cannot know what the killed attempt wrote: it tidies every table.
    written = [n for n in TABLES if log.resumed or store.version(n) != versions_before[n]]
    result.stages["upkeep"] = run("upkeep", lambda: {
        **maintain_tables(store, written, retention_hours=settings.delta.vacuum_retention_hours,
                          progress=progress),
        # Killed runs' checkpoint folders, as old as the files VACUUM deletes.
        "checkpoints_removed": clear_stale_checkpoints(spark, settings.delta.vacuum_retention_hours)}) or {}
    result.tables = warehouse_summary(store)
    if store.exists(INGEST_REJECTS):
        result.rejects_by_reason = {r[0]: r[1] for r in store.read(INGEST_REJECTS)
                                    .groupBy("reason").agg(F.count("*")).collect()}
    result.report = nightly_report(spark, store, settings, progress=progress)
    with log.stage("nightly") as counts:
        counts.update({name: _short(figures) for name, figures in result.stages.items()})
    return result


def nightly_report(spark: SparkSession, store: DeltaStore, settings: Settings, *,
                   progress: Callable[[str], None] = print) -> dict[str, str]:
    """Write the report (:mod:`semfin_spark.report`) into ``<warehouse>/reports`` with
    DuckDB on a local warehouse (no Spark job), else Spark SQL. A failure is reported, not
    raised: the night's tables are written and consistent without it."""
    from semfin_spark.redaction import redact
    from semfin_spark.report import default_out_dir, make_report
    from semfin_spark.settings import local_path
    from semfin_spark.sql import SparkEngine, duckdb_available

    local = local_path(settings.warehouse)
    out_dir = default_out_dir(settings.warehouse)
    engine: Any = None
    try:
        if local is not None and duckdb_available():
            from semfin_spark.sql_duckdb import DuckDBEngine

            engine = DuckDBEngine(local)
        else:
            engine = SparkEngine(spark, store)
        figures = make_report(engine, local or settings.warehouse, out_dir, progress=progress)
    except Exception as exc:  # noqa: BLE001 - reported in the summary; the night stands
        progress(f"report: failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if engine is not None and hasattr(engine, "close"):
            engine.close()
    return {"html": figures["html"], "json": figures["json"],
            "mlflow_ui": redact(f"mlflow ui --backend-store-uri {settings.tracking_uri}")}


def _registered_models(result: NightlyResult, log: RunLog) -> bool:
    """Whether train left models to impute with (this attempt, or an earlier one)."""
    train = result.stages.get("train", {})
    if "registered" in train:
        return bool(train["registered"])
    return log.done("train")


def maintain_tables(store: DeltaStore, tables: list[str], *, retention_hours: float,
                    progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Compact (``OPTIMIZE``) then ``VACUUM`` each of ``tables`` that needs it: the upkeep
    of a night.

    Only tables written this night are given: an untouched table has nothing new to
    compact, and leaving it alone keeps a night with no new data from adding versions.
    A table is compacted when it holds more files than its size needs
    (:meth:`~semfin_spark.delta.DeltaStore.needs_compaction`, read from the commit's
    checksum file), and vacuumed when a data file in its folder is older than the
    retention (younger files are never deleted, so VACUUM would delete nothing). Both
    checks read the table's log and folder on the driver and start no Spark job; each
    command they spare costs several.

    Returns:
        Per table, the files compacted (removed -> added), or ``"fine"``; and ``vacuumed``,
        the tables vacuumed.
    """
    done: dict[str, Any] = {}
    vacuumed = []
    for name in tables:
        if store.needs_compaction(name):
            metrics = store.optimize(name)
            done[name] = (f"{metrics.get('numFilesRemoved') or 0}->"
                          f"{metrics.get('numFilesAdded') or 0} files")
        else:
            done[name] = "fine"
        age = store.oldest_data_file_age_hours(name)
        if age is not None and age > retention_hours:
            store.vacuum(name, retention_hours)
            vacuumed.append(name)
    if tables:
        compacted = sum(v != "fine" for v in done.values())
        progress(f"nightly: upkeep: {compacted} of {len(tables)} tables compacted (OPTIMIZE), "
                 f"{len(vacuumed)} vacuumed (files older than {retention_hours:g} h)")
    return {**done, "vacuumed": vacuumed} if tables else done


def _plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def warehouse_summary(store: DeltaStore) -> dict[str, dict[str, int | None]]:
    """Version and row count of every SemFin table that exists."""
    out: dict[str, dict[str, int | None]] = {}
    for name in TABLES:
        version = store.version(name)
        if version is not None:
            out[name] = {"version": version, "rows": store.read(name).count()}
    return out


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()
                               if not isinstance(v, (list, dict)) or k != "new_examples") + "}"
    return str(value)


def format_summary(result: NightlyResult) -> str:
    """The human-readable summary printed at the end of a refresh."""
    lines = ["", "SemFin nightly summary", "======================"]
    for stage, figures in result.stages.items():
        shown = ", ".join(f"{k}={_short(v)}" for k, v in figures.items())
        lines.append(f"{stage:10s} {shown}")
    lines += ["", f"{'table':22s} {'version':>8s} {'rows':>12s}"]
    for name, info in result.tables.items():
        lines.append(f"{name:22s} {info['version']!s:>8s} {info['rows']!s:>12s}")
    if result.rejects_by_reason:
        lines += ["", "ingest rejects by reason: " + ", ".join(
            f"{k}={v}" for k, v in sorted(result.rejects_by_reason.items()))]
    if result.report.get("html"):
        lines += ["", f"report: {result.report['html']}",
                  f"runs and models in MLflow: {result.report['mlflow_ui']}"]
    elif result.report.get("error"):
        lines += ["", f"report: not written ({result.report['error']})"]
    return "\n".join(lines)
