"""The warehouse's crawl of the Hub: incremental, within the request budget, resumable.

``semfin ingest --source hub[:LIMIT]`` (and the nightly with that source) runs it:

1. **Plan** (driver): the crawl folder ``<warehouse>/_crawl/<crawl_id>``, the open one a
   killed or failed crawl left (not yet ingested, same endpoint and limit) or a new one.
2. **List** (driver, :func:`~semfin_spark.hub_crawl.list_models_into`): every model's
   ``/api/models`` object into ``listing/``, resuming from the saved next-page link.
3. **Choose** (Spark): the models whose ``config.json`` must be fetched: listed with one,
   not answered in this folder already, and not known from ``crawl_state`` at the same
   commit with a final outcome (for a fetched config: still present in ``hub_models``).
4. **Fetch** (driver, :func:`~semfin_spark.hub_crawl.fetch_configs_into`): only those,
   streamed from Spark (``toLocalIterator``: the driver never holds the list), into
   ``configs/``, within the request budget of the account tier.
5. **Lines** (Spark, :func:`crawl_lines`): each listing record with its config answer
   folded in, for the ingest. A model whose config was not fetched has no
   ``config_json`` key, so the ingest keeps the stored text (same commit: a fill).
6. **Record** (Spark, :func:`finish_crawl`, after the ingest's ``hub_models`` commit):
   ``crawl_state`` updated, models a complete listing no longer holds marked deleted in
   both tables (and unmarked when they reappear), the folder marked ``_INGESTED``, old
   folders removed after ``crawl.retention_days``.

Implementation details:
    Killed at any moment, the next run converges: listing and config files appear only
    when complete (the listing's next-page link is saved after each file), step 3 skips
    what the folder already answered, and ``crawl_state`` is written after
    ``hub_models``, so a crash between them costs refetches, never a lost config. The
    throughput is bound by the Hub's budget, not by this machine: see the README.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.hub_crawl import (
    CONFIGS_DIR,
    LISTING_DIR,
    FetchResult,
    ListingResult,
    RequestBudget,
    client_options,
    fetch_configs_into,
    list_models_into,
    read_json_file,
    write_json_atomically,
)
from semfin_spark.redaction import redact
from semfin_spark.schemas import CRAWL_STATE, HUB_MODELS
from semfin_spark.settings import Settings, local_path

log = logging.getLogger(__name__)

CRAWL_ROOT = "_crawl"
_META, _INGESTED = "_crawl.json", "_INGESTED"
# Outcomes that hold for a commit: the same sha is not fetched again. `failed` is retried.
FINAL_OUTCOMES = ("fetched", "not_json", "absent", "gated", "too_large", "refused")
_WITH_TEXT = ("fetched", "not_json")
_CONFIG_MARK = '"rfilename":"config.json"'  # how orjson writes the sibling


class CrawlError(ValueError):
    """The crawl cannot run here (e.g. the warehouse is not a local folder): a usage error."""


@dataclass
class CrawlRun:
    """One crawl of the Hub into the warehouse, from plan to record.

    Attributes:
        crawl_id: Its folder's name under ``<warehouse>/_crawl``.
        folder: The folder.
        started_at: When this run started (UTC); the ``listed_at`` of what it lists.
        limit: The model limit (``hub:N``), or None for the whole Hub.
        resumed: The folder was left open by an earlier run.
        listing: What the listing holds.
        fetch: What this run fetched.
        to_fetch: Configs chosen for fetching.
        unchanged: Listed models with a config.json known at the same commit.
    """

    crawl_id: str
    folder: Path
    started_at: dt.datetime
    limit: int | None
    resumed: bool = False
    listing: ListingResult | None = None
    fetch: FetchResult = field(default_factory=FetchResult)
    to_fetch: int = 0
    unchanged: int = 0

    def counts(self) -> dict[str, Any]:
        return {"crawl_id": self.crawl_id, "resumed": self.resumed,
                "listed": self.listing.models if self.listing else 0,
                "complete": bool(self.listing and self.listing.complete),
                "to_fetch": self.to_fetch, "unchanged": self.unchanged,
                "fetch_deferred": self.to_fetch - self.fetch.requested,
                **{f"config_{k}": v for k, v in sorted(self.fetch.outcomes.items())}}


def crawl(spark: SparkSession, store: DeltaStore, settings: Settings, limit: int | None,
          progress: Callable[[str], None] = print) -> CrawlRun:
    """List the Hub and fetch the configs that changed (steps 1 to 4).

    Args:
        spark: The session.
        store: The warehouse (``crawl_state`` and ``hub_models`` are read, not written).
        settings: ``hub`` (endpoint, token), ``crawl`` (budget, files, progress) and
            ``ingest.hub_*`` (workers, retries, page size).
        limit: Stop the listing after this many models (no deletion is inferred then).
        progress: Where progress lines go.

    Returns:
        The :class:`CrawlRun`, ready for :func:`crawl_lines` and :func:`finish_crawl`.

    Raises:
        HubCrawlError: The listing failed after retries or was refused; what was listed
            stays in the folder and the next run resumes it.
        CrawlError: The warehouse is not a local folder.
    """
    run = _plan(settings, limit)
    cfg, hub = settings.crawl, settings.hub
    budget = RequestBudget.from_settings(settings)
    state = store.read(CRAWL_STATE)
    expected = state.where("deleted_at IS NULL").count() if store.exists(CRAWL_STATE) else None
    progress(f"crawl {run.crawl_id}: {'resuming' if run.resumed else 'starting'} at "
             f"{redact(hub.endpoint)}, budget {budget.describe()}")
    common = dict(client_options(settings), budget=budget, progress=progress,
                  progress_seconds=cfg.progress_seconds)
    run.listing = list_models_into(run.folder, limit=limit, page_size=settings.ingest.hub_page_size,
                                   pages_per_file=cfg.pages_per_file, expected_models=expected,
                                   **common)
    candidates, todo = _to_fetch(spark, store, run)
    todo = todo.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        run.to_fetch = todo.count()
        run.unchanged = candidates.count() - run.to_fetch
        progress(f"crawl {run.crawl_id}: {run.listing.models} listed, {run.to_fetch} configs to "
                 f"fetch, {run.unchanged} unchanged since the last crawl")
        if run.to_fetch:
            pairs = ((r["id"], r["sha"]) for r in todo.toLocalIterator())
            deadline = (time.monotonic() + cfg.max_fetch_minutes * 60
                        if cfg.max_fetch_minutes else None)
            run.fetch = fetch_configs_into(run.folder, pairs, total=run.to_fetch,
                                           workers=settings.ingest.hub_workers,
                                           configs_per_file=cfg.configs_per_file,
                                           deadline=deadline, **common)
            if run.fetch.stopped_at_deadline:
                left = run.to_fetch - run.fetch.requested
                progress(f"crawl {run.crawl_id}: crawl.max_fetch_minutes="
                         f"{cfg.max_fetch_minutes:g} reached; {left} configs are left for the "
                         "next crawl (their models are ingested without one meanwhile)")
    finally:
        todo.unpersist()
    return run


def crawl_lines(spark: SparkSession, store: DeltaStore, run: CrawlRun) -> DataFrame:
    """The crawl's records for the ingest: ``(value, source_file)``, ``value`` each listing
    record's bytes with its ``config_json`` folded in: this crawl's answer (with
    ``_fetch_error`` when it failed), else the text ``hub_models`` holds for the same
    commit, so an unchanged model reads exactly as stored and is not rewritten.

    Implementation details:
        The listing lines are JSON objects written by the crawler (no config keys), so
        the keys are appended before the closing brace; a line without an id (which the
        ingest rejects) is passed on untouched. Everything runs on the executors.
    """
    listing = _listing(spark, run.folder)
    answers = _latest_answers(spark, run.folder).select(
        F.col("model_key").alias("_a_key"), F.col("sha").alias("_a_sha"),
        F.concat(F.lit('{"config_json":'), _json_string("config_json"),
                 F.when(F.col("error").isNotNull(),
                        F.concat(F.lit(',"_fetch_error":'), _json_string("error")))
                 .otherwise(F.lit("")), F.lit("}")).alias("_answer"))
    stored = (store.read(HUB_MODELS).where("config_json IS NOT NULL")
              .select(F.lower("id").alias("_s_key"), F.col("sha").alias("_s_sha"),
                      F.concat(F.lit('{"config_json":'), _json_string("config_json"),
                               F.lit("}")).alias("_stored")))
    joined = (listing
              .join(answers, (F.col("model_key") == F.col("_a_key"))
                    & F.col("sha").eqNullSafe(F.col("_a_sha")), "left")
              .join(stored, (F.col("model_key") == F.col("_s_key"))
                    & (F.col("sha") == F.col("_s_sha")), "left"))
    keys = F.coalesce("_answer", "_stored")
    folded = F.concat(F.expr("substring(value, 1, length(value) - 1)"), F.lit(","),
                      F.substring(keys, 2, 1 << 30))
    value = F.when(keys.isNull(), F.col("value")).otherwise(folded)
    return joined.select(value.cast("binary").alias("value"), "source_file")


def _json_string(column: str) -> Any:
    """A text column as a JSON string literal (``null`` when null)."""
    # to_json(array(x)) is ["..."] with Spark's JSON escaping; keep what is inside [ ].
    return F.when(F.col(column).isNull(), F.lit("null")).otherwise(
        F.expr(f"substring(to_json(array(`{column}`)), 2, length(to_json(array(`{column}`))) - 2)"))


@dataclass(frozen=True)
class CrawlRecord:
    """What :func:`finish_crawl` recorded."""

    listed: int
    new: int
    deleted: int
    reappeared: int
    deletions_refused: bool

    def summary(self) -> str:
        return (f"listed {self.listed}, new {self.new}, marked deleted {self.deleted}, "
                f"reappeared {self.reappeared}"
                + (" (deletions not trusted: see above)" if self.deletions_refused else ""))


def finish_crawl(spark: SparkSession, store: DeltaStore, run: CrawlRun, settings: Settings,
                 progress: Callable[[str], None] = print) -> CrawlRecord:
    """Record a crawl after the ingest merged its lines (step 6).

    Each listed model's row in ``crawl_state`` is replaced (what was listed, the config
    outcome of this crawl or the one before when the config was not fetched). After a
    complete listing, models ``crawl_state`` knew and the listing lacks are marked
    deleted (``deleted_at``) in ``crawl_state`` and ``hub_models``, unless they are more
    than ``crawl.max_deleted_fraction`` of the known ones (a truncated listing is not a
    mass deletion: nothing is marked and a line says so). Listed models lose their mark.

    Raises:
        ConcurrentWriteError: Another writer changed ``crawl_state`` or ``hub_models``
            meanwhile; running the ingest again is safe.
    """
    started = F.lit(run.started_at).cast("timestamp")
    listed = (_listing(spark, run.folder).where("model_key IS NOT NULL")
              .withColumn("_n", F.row_number().over(
                  Window.partitionBy("model_key").orderBy(F.col("last_modified").desc_nulls_last())))
              .where("_n = 1").drop("_n"))
    answers = _latest_answers(spark, run.folder)
    state_version = store.version(CRAWL_STATE)
    old = store.read(CRAWL_STATE, version=state_version)
    old_cols = [c for c in CRAWL_STATE.columns if c != "model_key"]
    prior = old.select("model_key", *[F.col(c).alias(f"_old_{c}") for c in old_cols])
    answer = answers.select("model_key", F.col("sha").alias("_a_sha"), F.col("status").alias("_a_status"),
                            F.col("error").alias("_a_error"),
                            F.to_timestamp("at").alias("_a_at"))
    rows = (listed.join(answer, (listed.model_key == answer.model_key)
                        & listed.sha.eqNullSafe(answer._a_sha), "left").drop(answer.model_key)
            .join(prior, "model_key", "left"))
    no_config = ~F.col("has_config")
    fresh = F.col("_a_status").isNotNull()

    def config(answered: Any, absent: Any, old_value: str) -> Any:
        return (F.when(fresh, answered).when(no_config, absent)
                .otherwise(F.col(f"_old_{old_value}")))

    listed_rows = rows.select(
        "model_key", "id", "sha", "last_modified",
        F.coalesce("_old_first_listed_at", started).alias("first_listed_at"),
        started.alias("listed_at"), F.lit(None).cast("timestamp").alias("deleted_at"),
        config(F.col("_a_status"), F.lit("absent"), "config_status").alias("config_status"),
        config(F.col("sha"), F.col("sha"), "config_sha").alias("config_sha"),
        config(F.col("_a_at"), started, "config_at").alias("config_at"),
        config(F.col("_a_error"), F.lit(None).cast("string"), "config_error").alias("config_error"),
        F.lit(run.crawl_id).alias("crawl_id"),
        F.col("_old_id").isNull().alias("_new"),
        F.col("_old_deleted_at").isNotNull().alias("_reappeared"),
    ).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        known = (old.where("deleted_at IS NULL")
                 .join(listed.select("model_key", F.lit(True).alias("_listed")), "model_key", "left"))
        missing = known.where("_listed IS NULL").drop("_listed")
        counted = known.agg(F.count("*").alias("known"),
                            F.count(F.when(F.col("_listed").isNull(), 1)).alias("missing")).first()
        n_missing, n_known = counted["missing"], counted["known"]
        refused = False
        if not (run.listing and run.listing.complete):
            missing = missing.limit(0)
        elif n_known and n_missing / n_known > settings.crawl.max_deleted_fraction:
            progress(f"crawl {run.crawl_id}: the listing lacks {n_missing} of {n_known} known "
                     f"models, more than crawl.max_deleted_fraction="
                     f"{settings.crawl.max_deleted_fraction}: none is marked deleted")
            missing, refused = missing.limit(0), True
        gone = missing.withColumn("deleted_at", started).select(*CRAWL_STATE.columns)
        figures = listed_rows.agg(F.count("*").alias("listed"),
                                  F.sum(F.col("_new").cast("int")).alias("new"),
                                  F.sum(F.col("_reappeared").cast("int")).alias("back")).first()
        state_rows = listed_rows.select(*CRAWL_STATE.columns).unionByName(gone)
        store.replace_keys(CRAWL_STATE, state_rows, state_rows.select("model_key"),
                           operation="CRAWL", metadata={"crawl_id": run.crawl_id},
                           read_version=-1 if state_version is None else state_version)
        n_deleted = 0 if refused or not (run.listing and run.listing.complete) else n_missing
        _mark_deleted(store, listed.select("model_key"), gone.select("model_key"), started,
                      run.crawl_id)
    finally:
        listed_rows.unpersist()
    record = CrawlRecord(listed=figures["listed"], new=figures["new"] or 0, deleted=n_deleted,
                         reappeared=figures["back"] or 0, deletions_refused=refused)
    write_json_atomically(run.folder / _INGESTED, {
        "ingested_at": dt.datetime.now(dt.timezone.utc).isoformat(), **run.counts(),
        "new": record.new, "deleted": record.deleted, "reappeared": record.reappeared})
    progress(f"crawl {run.crawl_id}: {record.summary()}")
    _remove_old_crawls(run.folder.parent, settings.crawl.retention_days, progress)
    return record


# ------------------------------------------------------------------ steps


def _plan(settings: Settings, limit: int | None) -> CrawlRun:
    warehouse = local_path(settings.warehouse)
    if warehouse is None:
        raise CrawlError(f"the Hub crawl keeps its files in the warehouse, which must then be a "
                         f"local folder, not {settings.warehouse}; crawl on a machine with a "
                         "local warehouse, or run `semfin snapshot` and ingest the snapshot "
                         "(--source snapshot:PATH)")
    root = Path(warehouse) / CRAWL_ROOT
    root.mkdir(parents=True, exist_ok=True)
    endpoint = redact(settings.hub.endpoint)
    now = dt.datetime.now(dt.timezone.utc)
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
        meta = read_json_file(folder / _META)
        if (meta and not (folder / _INGESTED).exists() and meta.get("endpoint") == endpoint
                and meta.get("limit") == limit):
            return CrawlRun(folder.name, folder, now, limit, resumed=True)
    crawl_id = now.strftime("%Y%m%dT%H%M%S%fZ")
    folder = root / crawl_id
    folder.mkdir()
    write_json_atomically(folder / _META, {"crawl_id": crawl_id, "endpoint": endpoint,
                                           "limit": limit, "started_at": now.isoformat()})
    return CrawlRun(crawl_id, folder, now, limit)


def _listing(spark: SparkSession, folder: Path) -> DataFrame:
    """The listing lines with what the crawl needs to know of each."""
    files = sorted((folder / LISTING_DIR).glob("part-*.jsonl.gz"))
    if not files:
        return spark.createDataFrame(
            [], "value string, source_file string, id string, model_key string, sha string, "
                "last_modified timestamp, has_config boolean")
    lines = spark.read.text([str(f) for f in files]).select(
        "value", F.input_file_name().alias("source_file"))
    repo_id = F.coalesce(F.get_json_object("value", "$.id"), F.get_json_object("value", "$.modelId"))
    return lines.select(
        "value", "source_file", repo_id.alias("id"), F.lower(repo_id).alias("model_key"),
        F.get_json_object("value", "$.sha").alias("sha"),
        F.to_timestamp(F.get_json_object("value", "$.lastModified")).alias("last_modified"),
        F.col("value").contains(_CONFIG_MARK).alias("has_config"))


_ANSWER_SCHEMA = ("id string, sha string, status string, error string, at string, "
                  "config_json string")


def _answered(spark: SparkSession, folder: Path) -> DataFrame:
    files = sorted((folder / CONFIGS_DIR).glob("part-*.jsonl.gz"))
    if not files:
        return spark.createDataFrame([], _ANSWER_SCHEMA).withColumn("model_key", F.lit(None).cast("string"))
    return (spark.read.schema(_ANSWER_SCHEMA).json([str(f) for f in files])
            .withColumn("model_key", F.lower("id")))


def _latest_answers(spark: SparkSession, folder: Path) -> DataFrame:
    """One config answer per model and commit: the latest (a retry after a failure wins)."""
    latest = Window.partitionBy("model_key", "sha").orderBy(F.col("at").desc())
    return (_answered(spark, folder).withColumn("_n", F.row_number().over(latest))
            .where("_n = 1").drop("_n"))


def _to_fetch(spark: SparkSession, store: DeltaStore, run: CrawlRun) -> tuple[DataFrame, DataFrame]:
    """The listed models with a config.json this folder has not answered yet, and among
    them the (id, sha) this crawl must ask for (the others are known, unchanged)."""
    listed = _listing(spark, run.folder).where("has_config AND model_key IS NOT NULL")
    answered_here = (_latest_answers(spark, run.folder).where("status != 'failed'")
                     .select("model_key", "sha"))
    hub = store.read(HUB_MODELS).select(
        F.lower("id").alias("model_key"), F.col("sha").alias("_hub_sha"),
        F.col("config_json").isNotNull().alias("_has_text"))
    known = (store.read(CRAWL_STATE).where(F.col("config_status").isin(*FINAL_OUTCOMES))
             .select("model_key", F.col("config_sha").alias("sha"), "config_status")
             .join(hub, "model_key", "left")
             # A config the state calls fetched must still be in hub_models at that commit
             # (a warehouse restored from a snapshot may have lost it): else fetch again.
             .where(~F.col("config_status").isin(*_WITH_TEXT)
                    | (F.col("_has_text") & (F.col("_hub_sha") == F.col("sha"))))
             .select("model_key", "sha"))
    candidates = (listed.join(answered_here, ["model_key", "sha"], "left_anti")
                  .dropDuplicates(["model_key", "sha"]))
    return candidates, candidates.join(known, ["model_key", "sha"], "left_anti").select("id", "sha")


def _mark_deleted(store: DeltaStore, listed: DataFrame, gone: DataFrame, when: Any,
                  crawl_id: str) -> None:
    """Set ``hub_models.deleted_at`` for the models gone, clear it for those listed again."""
    if not store.exists(HUB_MODELS):
        return
    version = store.version(HUB_MODELS)
    hub = store.read(HUB_MODELS, version=version).withColumn("model_key", F.lower("id"))
    changes = (hub.join(gone.withColumn("_gone", F.lit(True)), "model_key", "left")
               .join(listed.dropDuplicates().withColumn("_listed", F.lit(True)), "model_key", "left")
               .where((F.col("_gone") & F.col("deleted_at").isNull())
                      | (F.col("_listed") & F.col("deleted_at").isNotNull()))
               .withColumn("deleted_at", F.when(F.col("_gone"), when)
                           .otherwise(F.lit(None).cast("timestamp")))
               .select(*HUB_MODELS.columns)).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        if changes.take(1):
            store.replace_keys(HUB_MODELS, changes, changes.select("id"), operation="CRAWL_DELETIONS",
                               metadata={"crawl_id": crawl_id}, read_version=version)
    finally:
        changes.unpersist()


def _remove_old_crawls(root: Path, retention_days: float, progress: Callable[[str], None]) -> None:
    """Delete the folders of crawls ingested more than ``retention_days`` ago."""
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=retention_days)
    for folder in root.iterdir():
        marker = read_json_file(folder / _INGESTED) if folder.is_dir() else None
        if not marker:
            continue
        try:
            ingested = dt.datetime.fromisoformat(marker["ingested_at"])
        except (KeyError, TypeError, ValueError):
            continue
        if ingested <= cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            progress(f"crawl: removed {folder.name} (ingested {ingested:%Y-%m-%d %H:%M}, "
                     f"older than crawl.retention_days={retention_days:g})")
