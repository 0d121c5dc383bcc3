"""The ``semfin`` command: ``semfin <stage> [options]``.

``jobs/<stage>.py`` calls :func:`main` with its stage name, so ``spark-submit
jobs/ingest.py --source ...`` and ``semfin ingest --source ...`` run the same code with
the same arguments. This module only parses arguments, loads settings, builds the session
and calls one library function per stage.

Exit codes: 0 done, 2 bad arguments or settings, 3 bad input data (a source that does not
exist, a snapshot file refused while the others landed, a table that is missing), 4 the
Hub could not be reached, 5 another writer changed a table meanwhile (run again), 6 the
warehouse is locked by another running writer, 1 anything else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from typing import Any, Callable, Sequence

from semfin_spark.redaction import RedactingFilter, redact
from semfin_spark.settings import Settings, SettingsError, load_settings, local_path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DATA, EXIT_UNREACHABLE, EXIT_CONFLICT, EXIT_LOCKED = \
    0, 1, 2, 3, 4, 5, 6

WRITING_STAGES = frozenset({"ingest", "flatten", "train", "impute", "lineage", "nightly"})
"""Stages that write the warehouse: each takes its lock (:mod:`semfin_spark.runs`)."""


def progress(line: str) -> None:
    """A progress line on stderr with a timestamp (stdout stays for results); secrets redacted."""
    print(f"[semfin {time.strftime('%H:%M:%S')}] {redact(line)}", file=sys.stderr, flush=True)


def _error(stage: str, exc: BaseException | str) -> None:
    print(f"semfin {stage}: {redact(str(exc))}", file=sys.stderr)


# ------------------------------------------------------------------ stages

def _ingest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True,
                   help="snapshot:PATH (file, folder or glob), synthetic:N[,seed=S], or hub[:LIMIT]")
    p.add_argument("--backfill", action="store_true",
                   help="let older records replace newer stored ones (default: the newest wins)")


def _ingest(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.ingest import ingest

    result = ingest(spark, store, args.source, settings, progress=progress,
                    backfill=args.backfill)
    print(json.dumps(result.__dict__))
    # The good files landed; the exit code still tells the scheduler some input was bad.
    return EXIT_DATA if result.files_rejected else EXIT_OK


def _flatten_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true",
                   help="reprocess every model, not only those whose sha changed")


def _flatten(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.flatten import flatten

    result = flatten(spark, store, settings, progress=progress, full=args.full)
    print(json.dumps(_plain(result), default=str))
    return EXIT_OK


def _lineage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", help="write the lineage report JSON here (also printed)")


def _lineage(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.lineage import run_lineage, write_report

    report = run_lineage(spark, store, settings, progress=progress)
    if args.report:
        write_report(report, args.report, spark)
    print(json.dumps(report, indent=2, default=str))
    return EXIT_OK


def _sizes(text: str) -> tuple[int, ...]:
    """``--train-sizes 1000,2500`` as a tuple of positive ints (argparse reports the error)."""
    try:
        sizes = tuple(int(n.replace("_", "")) for n in text.split(",") if n.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers of models: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"training sizes must be positive: {text!r}")
    return sizes


def _fields(text: str | None) -> tuple[str, ...]:
    """``--fields license,model_type`` as a tuple (all five when omitted)."""
    from semfin_spark.settings import FIELDS

    if not text:
        return FIELDS
    names = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = [f for f in names if f not in FIELDS]
    if unknown or not names:
        raise SettingsError(f"unknown field(s) {unknown or text!r}; choose from {', '.join(FIELDS)}")
    return names


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seeds the validation hold-out (default 0)")
    p.add_argument("--force", action="store_true",
                   help="train even when the inputs and settings are those of the last training")


def _train(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.train import train

    result = train(spark, store, settings, progress=progress, seed=args.seed, force=args.force)
    print(json.dumps(_plain(result), indent=2, default=str))
    return EXIT_OK


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", help="evaluate on this Hub snapshot (ingested into a temporary "
                                      "warehouse) instead of the current warehouse")
    p.add_argument("--fields", help="comma-separated fields (default: all five)")
    p.add_argument("--split", choices=("random", "component"), default="random")
    p.add_argument("--test-fraction", type=float, help="share on the test side (default evaluate.test_fraction)")
    p.add_argument("--seed", type=int, help="split and validation seed (default evaluate.seed)")
    p.add_argument("--train-sizes", type=_sizes, default=(), metavar="N,N,...",
                   help="also measure each field with about this many training models "
                        "(a learning curve; e.g. 1000,2500,5000)")
    p.add_argument("--out", help="write the report JSON here (also printed)")


def _evaluate(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.evaluate import evaluate_command

    report = evaluate_command(
        spark, store, settings, fields=_fields(args.fields), split=args.split,
        test_fraction=(settings.evaluate.test_fraction if args.test_fraction is None
                       else args.test_fraction),
        seed=settings.evaluate.seed if args.seed is None else args.seed,
        snapshot=args.snapshot, train_sizes=args.train_sizes, progress=progress)
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        _write_text(args.out, text + "\n")
    print(text)
    return EXIT_OK


def _impute_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fields", help="comma-separated fields (default: all five)")
    p.add_argument("--model-version", help="registered model version to use (default: latest)")
    p.add_argument("--full", action="store_true",
                   help="rescore every missing value, not only those whose features changed")


def _impute(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.impute import impute

    result = impute(spark, store, settings, fields=_fields(args.fields),
                    model_version=args.model_version, full=args.full, progress=progress)
    print(json.dumps(_plain(result), indent=2, default=str))
    return EXIT_OK


def _write_text(path: str, text: str) -> None:
    import os

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _plain(obj: Any) -> Any:
    """A dataclass result as JSON-ready data."""
    if dataclasses.is_dataclass(obj):
        return {k: _plain(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj


def _nightly_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="synthetic:20000,seed=0",
                   help="what to ingest first (as for `semfin ingest`); default synthetic:20000,seed=0")
    p.add_argument("--report", help="lineage report path (default <warehouse>/reports/lineage.json)")


def _nightly(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.nightly import format_summary, run_nightly

    result = run_nightly(spark, store, settings, args.source, report_path=args.report,
                         progress=progress)
    print(format_summary(result))
    # As for ingest: the night ran on the good files, the code says some were refused.
    return EXIT_DATA if result.stages["ingest"].get("files_rejected") else EXIT_OK


def _sql_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", nargs="?",
                   help="SQL (statements end with ';'); every table is a view named after it. "
                        "None: an interactive shell, or the statements on standard input")
    p.add_argument("--query", dest="named", metavar="NAME",
                   help="run a named query of conf/queries/ (see --list)")
    p.add_argument("--list", action="store_true", help="list the named queries and the views")
    p.add_argument("--engine", choices=("auto", "duckdb", "spark"), default="auto",
                   help="auto (default): Spark SQL under spark-submit or with --master, else "
                        "DuckDB over the Delta tables (no JVM)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument("--limit", type=int, default=1000, help="rows printed at most (default 1000)")
    p.add_argument("--as-of", help="time travel: a version or timestamp for every table, or "
                                   "TABLE=VERSION|TIMESTAMP,... (e.g. hub_models=3)")
    p.add_argument("--out", help="write the results to this file instead of printing them")


def sql_engine(args: argparse.Namespace, settings: Settings) -> str:
    """The engine ``semfin sql`` (and ``semfin report``) runs on: ``--engine``, else Spark
    under spark-submit, with an explicit ``--master``, on a warehouse that is not a local
    folder or for a report whose ``--out`` is not one (only Spark can write there), else
    DuckDB where it is installed."""
    from semfin_spark.session import under_spark_submit

    from semfin_spark.sql import duckdb_available

    if args.engine != "auto":
        return args.engine
    remote_out = args.stage == "report" and args.out and local_path(args.out) is None
    if under_spark_submit() or args.master or local_path(settings.warehouse) is None or remote_out:
        return "spark"
    return "duckdb" if duckdb_available() else "spark"


def _sql(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.sql import SparkEngine, parse_as_of

    return _sql_session(SparkEngine(spark, store, parse_as_of(args.as_of)), settings, args)


def _sql_duckdb(settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.delta import DeltaError
    from semfin_spark.sql import parse_as_of
    from semfin_spark.sql_duckdb import DuckDBEngine

    try:
        engine = DuckDBEngine(local_path(settings.warehouse) or settings.warehouse,
                              parse_as_of(args.as_of))
    except ValueError as exc:
        _error("sql", exc)
        return EXIT_USAGE
    except DeltaError as exc:
        _error("sql", exc)
        return EXIT_DATA
    try:
        return _sql_session(engine, settings, args)
    finally:
        engine.close()


def _sql_session(engine: Any, settings: Settings, args: argparse.Namespace) -> int:
    """``semfin sql`` on either engine: the query, the named query, standard input or the
    shell; the results to standard output or ``--out``."""
    import os

    from semfin_spark.sql import (
        UnknownQueryError,
        interactive_shell,
        named_queries,
        named_query,
        run_script,
    )

    conf_dir = settings.conf_dir
    if args.list:
        for query in named_queries(conf_dir).values():
            print(f"{query.name:48s} {query.title}")
        print(f"\nviews ({engine.name}): {', '.join(engine.views())}")
        return EXIT_OK
    if args.named and args.query:
        _error("sql", "give a query or --query NAME, not both")
        return EXIT_USAGE
    try:
        script = named_query(conf_dir, args.named).text if args.named else args.query
    except UnknownQueryError as exc:
        _error("sql", exc)
        return EXIT_USAGE
    if script is None and sys.stdin.isatty() and not args.out:
        history = os.path.join(os.path.expanduser("~"), ".semfin_sql_history")
        interactive_shell(engine, fmt=args.format, limit=args.limit, history=history,
                          conf_dir=conf_dir)
        return EXIT_OK
    if script is None:
        script = sys.stdin.read()
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        failed = run_script(engine, script, fmt=args.format, limit=args.limit,
                            write=lambda text: print(text, file=out), conf_dir=conf_dir)
    finally:
        if args.out:
            out.close()
            progress(f"sql: wrote {args.out}")
    return EXIT_USAGE if failed else EXIT_OK


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", help="folder for report.html and report.json "
                                 "(default <warehouse>/reports)")
    p.add_argument("--engine", choices=("auto", "duckdb", "spark"), default="auto",
                   help="as for semfin sql")


def _report_out(settings: Settings, args: argparse.Namespace) -> str:
    from semfin_spark.report import default_out_dir

    return args.out or default_out_dir(settings.warehouse)


def _report(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.report import make_report
    from semfin_spark.sql import SparkEngine

    make_report(SparkEngine(spark, store), settings.warehouse, _report_out(settings, args),
                progress=progress)
    return EXIT_OK


def _report_duckdb(settings: Settings, args: argparse.Namespace) -> int:
    import os

    from semfin_spark.report import make_report
    from semfin_spark.sql import MissingTableError
    from semfin_spark.sql_duckdb import DuckDBEngine

    warehouse = local_path(settings.warehouse) or settings.warehouse
    engine = DuckDBEngine(warehouse)
    try:
        figures = make_report(engine, warehouse, _report_out(settings, args), progress=progress)
    except MissingTableError as exc:
        _error("report", exc)
        return EXIT_DATA
    finally:
        engine.close()
    print(f"open it: file://{os.path.abspath(figures['html'])}")
    return EXIT_OK


def _tables_args(p: argparse.ArgumentParser) -> None:
    pass


def _aibom_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_id", nargs="?", help="the model's Hub id (owner/name)")
    p.add_argument("--all", action="store_true",
                   help="every model's BOM, built on the executors, into --out DIR as "
                        "<owner>/<name>.cdx.json")
    p.add_argument("--out", help="write the BOM here (default: print it); with --all, the folder")


def _aibom(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    from semfin_spark.aibom import InvalidBomError, model_bom, write_all_boms

    if args.all == bool(args.model_id):
        _error("aibom", "give a MODEL_ID, or --all --out DIR")
        return EXIT_USAGE
    if args.all:
        if not args.out:
            _error("aibom", "--all needs --out DIR")
            return EXIT_USAGE
        import os

        done = write_all_boms(spark, store, os.path.abspath(args.out),
                              max_depth=settings.lineage.max_depth, progress=progress)
        print(json.dumps(done, indent=2, default=str))
        return EXIT_ERROR if done["invalid"] else EXIT_OK
    try:
        bom = model_bom(spark, store, args.model_id, max_depth=settings.lineage.max_depth)
    except InvalidBomError as exc:  # never written: a bug to report, not a file to ship
        _error("aibom", exc)
        return EXIT_ERROR
    text = json.dumps(bom, indent=2, ensure_ascii=False)
    if args.out:
        from semfin_spark.session import write_text

        # Whole or not at all (a reader never sees half a BOM); an object store works too.
        write_text(args.out, text + "\n", spark)
        progress(f"aibom: wrote {args.out} (CycloneDX 1.6, validated)")
    else:
        print(text)
    return EXIT_OK


def _snapshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="empty local folder for the snapshot files")
    p.add_argument("--limit", type=int, help="stop after this many models")
    p.add_argument("--no-configs", action="store_true", help="the listing only, no config.json")


def _snapshot(settings: Settings, args: argparse.Namespace) -> int:
    """Crawl the Hub into snapshot files, without Spark or a warehouse (for a warehouse on
    object storage: crawl here, copy the folder, ingest it with --source snapshot:)."""
    from semfin_spark.hub_crawl import HubCrawlError, RequestBudget, client_options, crawl_hub

    try:
        result = crawl_hub(args.out, **client_options(settings), limit=args.limit,
                           page_size=settings.ingest.hub_page_size,
                           workers=settings.ingest.hub_workers,
                           fetch_configs=not args.no_configs,
                           budget=RequestBudget.from_settings(settings),
                           progress=progress)
    except HubCrawlError as exc:
        _error("snapshot", exc)
        return EXIT_UNREACHABLE
    except (FileExistsError, ValueError, OSError) as exc:
        _error("snapshot", exc)
        return EXIT_USAGE
    print(json.dumps({"models": result.models, "configs": result.configs,
                      "errors": result.errors, "files": [str(f) for f in result.files]}))
    return EXIT_OK


def _tables(spark: Any, store: Any, settings: Settings, args: argparse.Namespace) -> int:
    import os

    from semfin_spark.nightly import warehouse_summary
    from semfin_spark.schemas import TABLES

    present = warehouse_summary(store)
    damaged = 0
    for name in TABLES:
        if name in present:
            info = present[name]
            print(f"{name:22s} version={info['version']!s:5s} rows={info['rows']}")
        elif os.path.exists(store.path(name)):  # files but no Delta log: not a table any more
            damaged += 1
            print(f"{name:22s} DAMAGED: {store.path(name)} holds files but no Delta log")
        else:
            print(f"{name:22s} missing (not written yet)")
    return EXIT_DATA if damaged else EXIT_OK


STAGES: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[..., int]]] = {
    "ingest": ("ingest Hub metadata into hub_models / ingest_rejects", _ingest_args, _ingest),
    "flatten": ("flatten config.json and declared metadata into the feature tables",
                _flatten_args, _flatten),
    "train": ("train one classifier per field, log the run and register the models in MLflow",
              _train_args, _train),
    "evaluate": ("measure semfin against hub_avg and graph_avg on a held-out split",
                 _evaluate_args, _evaluate),
    "impute": ("fill missing fields with the registered models (never overwriting declared ones)",
               _impute_args, _impute),
    "lineage": ("rebuild lineage: components, chains, licence conflicts, report", _lineage_args, _lineage),
    "nightly": ("the whole refresh: ingest, then every downstream stage, then a summary",
                _nightly_args, _nightly),
    "sql": ("read-only SQL over the warehouse's tables (DuckDB, or Spark SQL under "
            "spark-submit), named queries, an interactive shell", _sql_args, _sql),
    "report": ("write the nightly report: one self-contained HTML page with its plots, and "
               "the same figures as JSON", _report_args, _report),
    "tables": ("list the warehouse's tables with version and row count", _tables_args, _tables),
    "aibom": ("write a model's CycloneDX 1.6 AI Bill of Materials with its whole lineage",
              _aibom_args, _aibom),
    "snapshot": ("crawl the Hub into snapshot files (no Spark, no warehouse): every model and "
                 "its config.json", _snapshot_args, _snapshot),
}
# Stages that need neither Spark nor the warehouse.
DRIVER_ONLY_STAGES = frozenset({"snapshot"})
# The tables a stage reads, each with the stage that writes it. A stage run on its own
# over a warehouse without them (a mistyped --warehouse, or a stage run before the one
# that feeds it) exits with EXIT_DATA instead of writing empty tables into a new folder.
STAGE_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "flatten": (("hub_models", "ingest"),),
    "train": (("model_fields", "flatten"),),
    "evaluate": (("model_fields", "flatten"),),
    "impute": (("model_fields", "flatten"),),
    "lineage": (("model_parents", "flatten"), ("model_fields", "flatten")),
}
# Stages that read the warehouse with DuckDB on the embedded default (see sql_engine).
DUCKDB_STAGES = {"sql": _sql_duckdb, "report": _report_duckdb}


# ------------------------------------------------------------------ main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semfin", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name, (help_text, add_arguments, _) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--conf", help="YAML file overriding conf/semfin.yaml")
        p.add_argument("--warehouse", help="warehouse root (default ./semfin-warehouse, or SEMFIN_WAREHOUSE)")
        p.add_argument("--master", help="Spark master when not under spark-submit (default local[*])")
        p.add_argument("--log-level", default="INFO", help="Python log level (default INFO)")
        add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None, *, stage: str | None = None) -> int:
    """Run one stage. ``stage`` is given by ``jobs/<stage>.py``; else the first argument."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if stage is not None:
        argv = [stage, *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Per-request HTTP lines (one per config.json, at INFO) only with --log-level DEBUG.
    for noisy in ("py4j", "httpx", "httpx2", "httpcore", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(
            logging.DEBUG if logging.getLogger().level <= logging.DEBUG else logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    try:
        settings = load_settings(args.conf, overrides={"warehouse": args.warehouse,
                                                       "spark.master": args.master})
    except SettingsError as exc:
        print(f"semfin: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    return _run(args, settings)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from contextlib import ExitStack

    from semfin_spark.runs import WarehouseLocked, warehouse_lock

    if args.stage in DRIVER_ONLY_STAGES:
        return STAGES[args.stage][2](settings, args)
    # A mistyped snapshot path (ingest's and nightly's --source, evaluate's --snapshot)
    # fails before the JVM starts.
    source = getattr(args, "source", None) or (
        f"snapshot:{args.snapshot}" if getattr(args, "snapshot", None) else None)
    if source:
        from semfin_spark.ingest import IngestError, check_source

        try:
            check_source(source)
        except IngestError as exc:
            _error(args.stage, exc)
            return EXIT_DATA
    if args.stage in DUCKDB_STAGES and sql_engine(args, settings) == "duckdb":
        return DUCKDB_STAGES[args.stage](settings, args)
    with ExitStack() as held:
        if args.stage in WRITING_STAGES:
            try:
                held.enter_context(warehouse_lock(settings.warehouse, f"semfin {args.stage}"))
            except WarehouseLocked as exc:
                _error(args.stage, exc)
                return EXIT_LOCKED
            except OSError as exc:  # a read-only or full warehouse: nothing can be written
                _error(args.stage, f"cannot write to the warehouse {settings.warehouse}: {exc}")
                return EXIT_USAGE
        # After the lock: a table another writer is creating right now is not missing.
        root = local_path(settings.warehouse)
        if root is not None:  # answered before the JVM starts; else in _run_stage
            missing = missing_input(args, settings.warehouse,
                                    lambda table: _local_table_exists(root, table))
            if missing:
                _error(args.stage, missing)
                return EXIT_DATA
        return _run_stage(args, settings)


def _run_stage(args: argparse.Namespace, settings: Settings) -> int:
    from semfin_spark.delta import ConcurrentWriteError, DeltaError, DeltaStore
    from semfin_spark.hub_crawl import HubCrawlError
    from semfin_spark.session import build_session, release_checkpoints

    from semfin_spark.jars import JarsError

    data_errors = _data_errors()
    try:
        spark = build_session(settings, app_name=f"semfin {args.stage}")
    except JarsError as exc:
        _error(args.stage, exc)
        return EXIT_USAGE
    started = time.time()
    try:
        store = DeltaStore.from_settings(spark, settings)
        missing = None if local_path(settings.warehouse) is not None else \
            missing_input(args, settings.warehouse, store.exists)
        if missing:
            _error(args.stage, missing)
            return EXIT_DATA
        progress(f"{args.stage}: warehouse {settings.warehouse} on {spark.sparkContext.master} "
                 f"(Spark {spark.version}, UI {spark.sparkContext.uiWebUrl or 'off'})")
        code = STAGES[args.stage][2](spark, store, settings, args)
        progress(f"{args.stage}: done in {time.time() - started:.1f} s")
        return code
    except ConcurrentWriteError as exc:
        _error(args.stage, exc)
        return EXIT_CONFLICT
    except HubCrawlError as exc:
        _error(args.stage, exc)
        return EXIT_UNREACHABLE
    except (DeltaError, *data_errors) as exc:
        _error(args.stage, exc)
        return EXIT_DATA
    except (SettingsError, ValueError) as exc:
        _error(args.stage, exc)
        return EXIT_USAGE
    finally:
        release_checkpoints(spark)
        spark.stop()


def missing_input(args: argparse.Namespace, warehouse: str,
                  exists: Callable[[str], bool]) -> str | None:
    """Why ``args.stage`` cannot run on ``warehouse`` (a table of :data:`STAGE_INPUTS` that
    ``exists`` does not find), or None. ``evaluate --snapshot`` reads no warehouse table."""
    if getattr(args, "snapshot", None):
        return None
    for table, writer in STAGE_INPUTS.get(args.stage, ()):
        if not exists(table):
            return (f"the warehouse {warehouse} has no {table} table: run `semfin {writer}` "
                    "first, or check --warehouse / SEMFIN_WAREHOUSE")
    return None


def _local_table_exists(root: str, table: str) -> bool:
    """A Delta table with a commit (or a checkpoint) under the local warehouse ``root``."""
    from pathlib import Path

    log = Path(root) / table / "_delta_log"
    return log.is_dir() and any(p.name.endswith(".json") or ".checkpoint" in p.name
                                for p in log.iterdir())


def _data_errors() -> tuple[type[BaseException], ...]:
    from semfin_spark.aibom import AibomError
    from semfin_spark.impute import ImputeError
    from semfin_spark.ingest import IngestError
    from semfin_spark.sql import MissingTableError

    return (IngestError, ImputeError, MissingTableError, AibomError, FileNotFoundError)


if __name__ == "__main__":
    sys.exit(main())
