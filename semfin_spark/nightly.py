"""The nightly refresh: every stage in order, each reading and writing Delta tables.

``semfin nightly --source ...`` (and ``scripts/demo.sh``) runs this. Each stage commits its
own tables, so a refresh killed half-way leaves every table at a consistent version and a
re-run picks up where the data says it should (ingest and flatten are incremental).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.schemas import INGEST_REJECTS, TABLES
from semfin_spark.settings import Settings


@dataclass
class NightlyResult:
    """What the refresh did: one entry per stage, and the warehouse afterwards."""

    stages: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, dict[str, int | None]] = field(default_factory=dict)
    rejects_by_reason: dict[str, int] = field(default_factory=dict)


def run_nightly(spark: SparkSession, store: DeltaStore, settings: Settings, source: str, *,
                progress: Callable[[str], None] = print) -> NightlyResult:
    """Ingest ``source``, then run the downstream stages, then summarise the warehouse.

    Args:
        spark: the session.
        store: the warehouse's Delta store.
        settings: the loaded settings.
        source: as for ``semfin ingest --source``.
        progress: where progress lines go.

    Returns:
        Per-stage results and each table's version and row count.
    """
    from semfin_spark.ingest import ingest

    result = NightlyResult()
    progress("nightly: stage 1 ingest")
    result.stages["ingest"] = ingest(spark, store, source, settings, progress=progress).__dict__
    result.tables = warehouse_summary(store)
    if store.exists(INGEST_REJECTS):
        result.rejects_by_reason = {r[0]: r[1] for r in store.read(INGEST_REJECTS)
                                    .groupBy("reason").agg(F.count("*")).collect()}
    return result


def warehouse_summary(store: DeltaStore) -> dict[str, dict[str, int | None]]:
    """Version and row count of every SemFin table that exists."""
    out: dict[str, dict[str, int | None]] = {}
    for name in TABLES:
        version = store.version(name)
        if version is not None:
            out[name] = {"version": version, "rows": store.read(name).count()}
    return out


def format_summary(result: NightlyResult) -> str:
    """The human-readable summary printed at the end of a refresh."""
    lines = ["", "SemFin nightly summary", "======================"]
    for stage, figures in result.stages.items():
        shown = ", ".join(f"{k}={v}" for k, v in figures.items() if not isinstance(v, (dict, list)))
        lines.append(f"{stage:10s} {shown}")
    lines += ["", f"{'table':22s} {'version':>8s} {'rows':>12s}"]
    for name, info in result.tables.items():
        lines.append(f"{name:22s} {info['version']!s:>8s} {info['rows']!s:>12s}")
    if result.rejects_by_reason:
        lines += ["", "ingest rejects by reason: " + ", ".join(
            f"{k}={v}" for k, v in sorted(result.rejects_by_reason.items()))]
    return "\n".join(lines)
