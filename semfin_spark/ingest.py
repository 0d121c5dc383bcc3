"""Ingest Hub metadata into ``hub_models``; bad records into ``ingest_rejects``.

Sources, all through the same parse-validate-merge path:

* ``snapshot:PATH``: Hub snapshot files (JSON Lines, gzipped or not, or Parquet with the
  same columns); PATH is a file, a folder or a glob. The camelCase keys of ``/api/models``
  and the snake_case spelling of ``huggingface_hub``'s ``ModelInfo`` and of the public
  Parquet dumps are both understood.
* ``synthetic:N[,seed=S]``: a generated Hub of N models (:mod:`semfin_spark.synthetic`).
* ``hub[:LIMIT]``: a crawl of the Hub at ``HF_ENDPOINT`` (:mod:`semfin_spark.hub_crawl`)
  written as snapshot files inside the warehouse, then ingested as a snapshot.

Implementation details:
    Lines are read by Spark (``text`` for JSON Lines, ``parquet`` re-serialised with
    ``to_json``) and parsed on the executors in Arrow batches (``mapInArrow``, orjson).
    Each record becomes either a typed ``hub_models`` row or an ``ingest_rejects`` row.
    Duplicates of an id keep the newest (``lastModified``, then ``sha``). Rows whose
    ``record_hash`` equals the stored one are left alone, so re-ingesting a snapshot adds
    nothing and changes nothing; the rest are merged on ``id`` in one Delta commit.
    Only counts reach the driver.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import orjson
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from semfin_spark.delta import DeltaStore
from semfin_spark.schemas import HUB_MODELS, INGEST_REJECTS
from semfin_spark.settings import IngestSettings, Settings

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^(?:[A-Za-z0-9_.\-]+/)?[A-Za-z0-9_.\-]+$")
_MAX_REPO_ID = 256
_FIELD_LEVEL_REASONS = ("invalid_card_data", "fetch_error")
_SNAPSHOT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson", ".ndjson.gz",
                      ".parquet")

# Each hub_models column and the record keys it may come from, first present wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("id", "modelId", "model_id"),
    "author": ("author",),
    "sha": ("sha",),
    "last_modified": ("lastModified", "last_modified"),
    "created_at": ("createdAt", "created_at"),
    "private": ("private",),
    "gated": ("gated",),
    "disabled": ("disabled",),
    "downloads": ("downloads",),
    "likes": ("likes",),
    "library_name": ("library_name", "libraryName"),
    "pipeline_tag": ("pipeline_tag", "pipelineTag"),
    "tags": ("tags",),
    "card_data": ("cardData", "card_data"),
    "config": ("config",),
    "config_json": ("config_json",),
    "siblings": ("siblings",),
    "safetensors": ("safetensors",),
    "gguf": ("gguf",),
    "transformers_info": ("transformersInfo", "transformers_info"),
}


class IngestError(ValueError):
    """A source spec is malformed or names nothing that can be read."""


class RecordRejected(ValueError):
    """A record that cannot become a hub_models row; ``reason`` is the rejects-table code."""

    def __init__(self, reason: str, detail: str, model_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.model_id = reason, detail, model_id


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did, as printed by ``semfin ingest``."""

    source: str
    read: int
    written: int
    unchanged: int
    rejected: int
    duplicates: int
    version: int | None

    def summary(self) -> str:
        return (f"ingest {self.source}: read {self.read}, written {self.written}, "
                f"unchanged {self.unchanged}, rejected {self.rejected}, "
                f"duplicates {self.duplicates} (hub_models version {self.version})")


# ------------------------------------------------------------------ parsing one record

def is_valid_repo_id(repo_id: str) -> bool:
    """True for a Hub model id: ``owner/name`` or a legacy ``name``.

    Looser than ``huggingface_hub.utils.validate_repo_id`` on purpose: the Hub still
    serves older repos whose names break today's creation rules (names over 96
    characters, a leading ``_``, a ``.git`` suffix), and those are real models. What is
    refused cannot be a repo: empty parts, ``.``/``..`` parts, more than one ``/``,
    characters outside ``A-Za-z0-9_.-``, more than 256 characters.

    Examples:
        >>> is_valid_repo_id("meta-llama/Llama-3.1-8B"), is_valid_repo_id("gpt2")
        (True, True)
        >>> is_valid_repo_id("a/b/c"), is_valid_repo_id("x y/z"), is_valid_repo_id("../z")
        (False, False, False)
    """
    return (len(repo_id) <= _MAX_REPO_ID and bool(_REPO_ID.match(repo_id))
            and not any(part in (".", "..") for part in repo_id.split("/")))


def parse_record(text: str, settings: IngestSettings) -> dict[str, Any]:
    """Validate one snapshot record and return its typed ``hub_models`` values.

    Args:
        text: one JSON object (a line of a snapshot file).
        settings: limits (record size, raw text kept).

    Returns:
        The row as a dict (without ``source`` and ``ingested_at``), plus ``_warning``:
        a (reason, detail) pair for a field dropped while keeping the model, or None.

    Raises:
        RecordRejected: with reason ``too_large``, ``invalid_json``, ``not_an_object``,
            ``missing_id``, ``invalid_id`` or ``wrong_type``.

    Examples:
        >>> s = IngestSettings()
        >>> parse_record('{"id": "a/b", "tags": ["mit"], "downloads": 3}', s)["tags"]
        ['mit']
        >>> parse_record('{"id": "a/b", "downloads": "many"}', s)
        Traceback (most recent call last):
        ...
        semfin_spark.ingest.RecordRejected: wrong_type: downloads: expected an integer, got str
    """
    if len(text) > settings.max_record_bytes:
        raise RecordRejected("too_large", f"record of {len(text)} characters exceeds "
                             f"ingest.max_record_bytes={settings.max_record_bytes}")
    record = _loads(text)
    if not isinstance(record, dict):
        raise RecordRejected("not_an_object", f"top level is {_type_name(record)}, not an object")
    get = _getter(record)
    model_id = get("id")
    if model_id is None or model_id == "":
        raise RecordRejected("missing_id", "no id (nor modelId)")
    if not isinstance(model_id, str):
        raise RecordRejected("invalid_id", f"id is {_type_name(model_id)}, not text")
    if not is_valid_repo_id(model_id):
        raise RecordRejected("invalid_id", f"{model_id[:200]!r} is not a valid Hub repo id",
                             model_id[:200])
    try:
        row, warning = _typed_row(get, model_id)
    except RecordRejected as exc:
        exc.model_id = model_id
        raise
    row["record_hash"] = hashlib.sha256(_dumps({k: row[k] for k in sorted(row)}).encode()).hexdigest()
    raw_record = {k: v for k, v in record.items() if k != "config_json"}
    raw = text if "config_json" not in record else _dumps(raw_record)
    row["raw"] = raw[: settings.raw_max_chars]
    row["_warning"] = warning
    return row


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        try:  # orjson refuses integers past 64 bits, which are valid JSON
            return json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise RecordRejected("invalid_json", str(exc)[:300]) from None


def _dumps(value: Any) -> str:
    """Compact JSON text; falls back to the json module for integers orjson cannot hold."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _getter(record: dict[str, Any]) -> Callable[[str], Any]:
    def get(column: str) -> Any:
        for key in _ALIASES[column]:
            if record.get(key) is not None:
                return record[key]
        return None
    return get


def _typed_row(get: Callable[[str], Any], model_id: str) -> tuple[dict[str, Any], Any]:
    warning = None
    card = get("card_data")
    if isinstance(card, str):  # card data given as the card's YAML header text
        try:
            card = _safe_yaml(card)
        except ValueError as exc:
            card, warning = None, ("invalid_card_data", str(exc)[:300])
    if card is not None and not isinstance(card, dict):
        card, warning = None, ("invalid_card_data", f"card data is {_type_name(card)}, not a mapping")
    config = get("config")
    if isinstance(config, str):
        try:
            config = orjson.loads(config)
        except orjson.JSONDecodeError:
            raise RecordRejected("wrong_type", "config: text that is not JSON") from None
    config_json = get("config_json")
    if config_json is not None and not isinstance(config_json, str):
        config_json = _dumps(config_json)
    row = {
        "id": model_id,
        "author": _text(get("author"), "author"),
        "sha": _text(get("sha"), "sha"),
        "last_modified": _timestamp(get("last_modified"), "lastModified"),
        "created_at": _timestamp(get("created_at"), "createdAt"),
        "private": _bool(get("private"), "private"),
        "gated": _gated(get("gated")),
        "disabled": _bool(get("disabled"), "disabled"),
        "downloads": _int(get("downloads"), "downloads"),
        "likes": _int(get("likes"), "likes"),
        "library_name": _text(get("library_name"), "library_name"),
        "pipeline_tag": _text(get("pipeline_tag"), "pipeline_tag"),
        "tags": _text_list(get("tags"), "tags"),
        "card_data": _json_object_text(card, "cardData"),
        "config": _json_object_text(config, "config"),
        "config_json": config_json,
        "siblings": _siblings(get("siblings")),
        "safetensors": _json_text(get("safetensors")),
        "gguf": _json_text(get("gguf")),
        "transformers_info": _json_text(get("transformers_info")),
    }
    return row, warning


def _safe_yaml(text: str) -> Any:
    import yaml

    body = text.strip()
    if body.startswith("---"):  # a whole card header: keep what is between the fences
        body = body[3:].split("\n---", 1)[0]
    try:
        return yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise ValueError(f"card data is not valid YAML: {exc}") from None


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _wrong(name: str, expected: str, value: Any) -> RecordRejected:
    return RecordRejected("wrong_type", f"{name}: expected {expected}, got {type(value).__name__}")


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _wrong(name, "text", value)


def _bool(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise _wrong(name, "a boolean", value)


def _int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _wrong(name, "an integer", value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if abs(value) >= 2**63:
            raise RecordRejected("wrong_type", f"{name}: {value} does not fit 64 bits")
        return value
    raise _wrong(name, "an integer", value)


def _gated(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    raise _wrong("gated", "a boolean or text", value)


def _timestamp(value: Any, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value  # epoch millis or seconds
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    if not isinstance(value, str):
        raise _wrong(name, "an ISO 8601 time", value)
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise RecordRejected("wrong_type", f"{name}: {value[:60]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.astimezone(dt.timezone.utc)


def _text_list(value: Any, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _wrong(name, "a list of text", value)
    for item in value:
        if not isinstance(item, str):
            raise RecordRejected("wrong_type", f"{name}: an element is {type(item).__name__}, not text")
    return value


def _siblings(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _wrong("siblings", "a list", value)
    out = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("rfilename"), str):
            out.append(item["rfilename"])
        elif isinstance(item, str):
            out.append(item)
        else:
            raise RecordRejected("wrong_type", "siblings: an element has no rfilename")
    return out


def _json_object_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _wrong(name, "an object", value)
    return _dumps(value)


def _json_text(value: Any) -> str | None:
    return None if value is None else _dumps(value)


# ------------------------------------------------------------------ executors: Arrow batches

_PARSED_FIELDS = [f for f in HUB_MODELS.schema.fields if f.name not in ("source", "ingested_at")]
PARSED_SCHEMA = T.StructType(
    [T.StructField("kind", T.StringType(), False)]
    + [T.StructField(f.name, f.dataType, True) for f in _PARSED_FIELDS]
    + [T.StructField(n, t, True) for n, t in (
        ("source_file", T.StringType()), ("reason", T.StringType()),
        ("detail", T.StringType()), ("raw_excerpt", T.StringType()),
        ("raw_length", T.LongType()))]
)


def parse_batches(batches: Iterator[Any], settings: IngestSettings) -> Iterator[Any]:
    """``mapInArrow`` body: (value, source_file) batches in, :data:`PARSED_SCHEMA` batches out."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(PARSED_SCHEMA, timezone="UTC")
    for batch in batches:
        values = batch.column("value").to_pylist()
        files = batch.column("source_file").to_pylist()
        rows: list[dict[str, Any]] = []
        for text, source_file in zip(values, files):
            if text is None or not text.strip():
                continue
            rows.extend(_parse_one(text, source_file, settings))
        yield pa.RecordBatch.from_pylist(rows, schema=arrow_schema)


def _parse_one(text: str, source_file: str, settings: IngestSettings) -> list[dict[str, Any]]:
    try:
        row = parse_record(text, settings)
    except RecordRejected as exc:
        return [_reject_row(text, source_file, exc.reason, exc.detail, exc.model_id, settings)]
    except RecursionError:
        return [_reject_row(text, source_file, "invalid_json", "nesting too deep to parse",
                            None, settings)]
    out = []
    warning = row.pop("_warning")
    if warning:
        out.append(_reject_row(text, source_file, warning[0], warning[1], row["id"], settings))
    fetch_error = _fetch_error(text)
    if fetch_error:
        out.append(_reject_row(text, source_file, "fetch_error", fetch_error, row["id"], settings))
    row.update(kind="model", source_file=source_file)
    out.append(row)
    return out


def _fetch_error(text: str) -> str | None:
    if '"_fetch_error"' not in text:
        return None
    value = orjson.loads(text).get("_fetch_error")
    return str(value)[:500] if value else None


def _reject_row(text: str, source_file: str, reason: str, detail: str, model_id: str | None,
                settings: IngestSettings) -> dict[str, Any]:
    return {"kind": "reject", "id": model_id, "source_file": source_file, "reason": reason,
            "detail": detail, "raw_excerpt": text[: settings.reject_raw_max_chars],
            "raw_length": len(text)}


# ------------------------------------------------------------------ sources

def snapshot_lines(spark: SparkSession, path: str) -> DataFrame:
    """Lines of Hub snapshot files at ``path`` (file, folder or glob) as (value, source_file).

    Raises:
        IngestError: nothing matches ``path``.
    """
    files = _snapshot_files(path)
    json_files = [f for f in files if not f.endswith(".parquet")]
    parquet_files = [f for f in files if f.endswith(".parquet")]
    parts = []
    if json_files:
        parts.append(spark.read.text(json_files).select(
            "value", F.input_file_name().alias("source_file")))
    if parquet_files:
        pq = spark.read.parquet(*parquet_files)
        parts.append(pq.select(F.to_json(F.struct(*[F.col(f"`{c}`") for c in pq.columns]))
                               .alias("value"), F.input_file_name().alias("source_file")))
    lines = parts[0]
    for extra in parts[1:]:
        lines = lines.unionByName(extra)
    # Gzip files are not splittable: spread the parsing over every core.
    parallelism = spark.sparkContext.defaultParallelism
    if lines.rdd.getNumPartitions() < parallelism:
        lines = lines.repartition(parallelism)
    return lines


def _snapshot_files(path: str) -> list[str]:
    if "://" in path and not path.startswith("file://"):
        return [path]  # remote storage: Spark lists it
    local = path[len("file://"):] if path.startswith("file://") else path
    if os.path.isdir(local):
        found = [os.path.join(root, name) for root, _, names in os.walk(local) for name in names
                 if name.endswith(_SNAPSHOT_SUFFIXES) and not name.startswith((".", "_"))]
    elif any(ch in local for ch in "*?["):
        found = [p for p in glob.glob(local, recursive=True) if os.path.isfile(p)]
    elif os.path.isfile(local):
        found = [local]
    else:
        raise IngestError(f"snapshot path {path!r} does not exist")
    if not found:
        raise IngestError(f"no snapshot files (*.jsonl[.gz], *.json[.gz], *.parquet) at {path!r}")
    return sorted(os.path.abspath(p) for p in found)


def _snapshot_files_or_none(path: str) -> list[str]:
    try:
        return _snapshot_files(path)
    except IngestError:
        return []


def source_lines(spark: SparkSession, source: str, settings: Settings,
                 progress: Callable[[str], None] = print) -> DataFrame:
    """The (value, source_file) lines of a source spec: ``snapshot:``, ``synthetic:``, ``hub``.

    Raises:
        IngestError: unknown source kind or malformed spec.
    """
    kind, _, arg = source.partition(":")
    if kind == "snapshot":
        if not arg:
            raise IngestError("snapshot source needs a path: --source snapshot:PATH")
        return snapshot_lines(spark, arg)
    if kind == "synthetic":
        from semfin_spark.synthetic import parse_spec, synthetic_records

        try:
            n, seed = parse_spec(arg)
        except ValueError as exc:
            raise IngestError(str(exc)) from None
        return synthetic_records(spark, n, seed, block_size=settings.synthetic.block_size) \
            .withColumn("source_file", F.lit(f"synthetic:{n},seed={seed}"))
    if kind == "hub":
        crawled = crawl_into_warehouse(settings, arg, progress)
        if not os.path.isdir(crawled) or not _snapshot_files_or_none(crawled):
            return spark.createDataFrame([], "value string, source_file string")
        return snapshot_lines(spark, crawled)
    raise IngestError(f"unknown source {source!r}: use snapshot:PATH, synthetic:N[,seed=S] "
                      "or hub[:LIMIT]")


def crawl_into_warehouse(settings: Settings, limit: str, progress: Callable[[str], None]) -> str:
    """Crawl the Hub at ``settings.hub.endpoint`` into ``<warehouse>/_crawl/<time>``."""
    from semfin_spark.hub_crawl import crawl_hub

    if limit and not limit.isdigit():
        raise IngestError(f"hub source limit must be a number, not {limit!r}")
    out = os.path.join(settings.warehouse, "_crawl",
                       dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    result = crawl_hub(out, endpoint=settings.hub.endpoint, token=settings.hub.token,
                       limit=int(limit) if limit else None,
                       page_size=settings.ingest.hub_page_size,
                       workers=settings.ingest.hub_workers,
                       max_retries=settings.ingest.hub_max_retries, progress=progress)
    progress(f"crawl: {result.models} models, {result.configs} configs, {result.errors} errors")
    return out


# ------------------------------------------------------------------ the stage

def ingest(spark: SparkSession, store: DeltaStore, source: str, settings: Settings, *,
           progress: Callable[[str], None] = print) -> IngestResult:
    """Ingest a source into ``hub_models`` (merge on id) and ``ingest_rejects``.

    Args:
        spark: the session.
        store: the warehouse's Delta store.
        source: ``snapshot:PATH``, ``synthetic:N[,seed=S]`` or ``hub[:LIMIT]``.
        settings: limits for records and rejects.
        progress: where progress lines go.

    Returns:
        The counts: read (non-empty records), written (new or changed models),
        unchanged, rejected, duplicates (older copies of an id in the same source).

    Raises:
        IngestError: the source spec is malformed or matches no file.
    """
    lines = source_lines(spark, source, settings, progress)
    cfg = settings.ingest
    parsed = (lines.mapInArrow(lambda it: parse_batches(it, cfg), PARSED_SCHEMA)
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        return _merge_parsed(store, parsed, source, progress)
    finally:
        parsed.unpersist()


def _merge_parsed(store: DeltaStore, parsed: DataFrame, source: str,
                  progress: Callable[[str], None]) -> IngestResult:
    now = F.lit(dt.datetime.now(dt.timezone.utc)).cast("timestamp")
    models = parsed.where("kind = 'model'")
    rejects = parsed.where("kind = 'reject'")
    # Field-level rejects (a dropped card, a failed config download) keep their model.
    outcome_kind = (F.when(F.col("kind") == "model", "model")
                    .when(F.col("reason").isin(*_FIELD_LEVEL_REASONS), "field_reject")
                    .otherwise("record_reject"))
    counts = {r[0]: r[1] for r in parsed.groupBy(outcome_kind).count().collect()}
    n_models, n_record_rejects = counts.get("model", 0), counts.get("record_reject", 0)
    n_rejects = n_record_rejects + counts.get("field_reject", 0)
    progress(f"ingest {source}: parsed {n_models} models, {n_record_rejects} rejected records, "
             f"{counts.get('field_reject', 0)} field-level rejects")

    newest = Window.partitionBy("id").orderBy(
        F.col("last_modified").desc_nulls_last(), F.col("sha").desc_nulls_last(),
        F.col("record_hash").desc())
    deduped = (models.withColumn("_rank", F.row_number().over(newest))
               .where("_rank = 1").drop("_rank"))
    current = store.read(HUB_MODELS).select("id", F.col("record_hash").alias("_stored_hash"))
    changed = (deduped.join(current, "id", "left")
               .where(F.col("_stored_hash").isNull() | (F.col("_stored_hash") != F.col("record_hash")))
               .drop("_stored_hash")
               .withColumn("source", F.lit(source))
               .withColumn("ingested_at", now))
    changed = changed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        n_distinct = deduped.count()
        n_changed = changed.count()
        result = store.upsert(HUB_MODELS, changed, operation="INGEST",
                              metadata={"source": source}) if n_changed else None
    finally:
        changed.unpersist()

    reject_rows = rejects.select(
        F.sha2(F.concat_ws("\u0000", "source_file", "reason", "raw_excerpt"), 256).alias("reject_id"),
        F.lit(source).alias("source"), "source_file", F.col("id").alias("model_id"), "reason",
        "detail", F.col("raw_excerpt").alias("raw"), "raw_length", now.alias("rejected_at"),
    ).dropDuplicates(["reject_id"])
    if n_rejects:
        known = store.read(INGEST_REJECTS).select("reject_id")
        store.append(INGEST_REJECTS, reject_rows.join(known, "reject_id", "left_anti"),
                     operation="INGEST_REJECTS", metadata={"source": source})
    version = result.version if result else store.version(HUB_MODELS)
    outcome = IngestResult(source=source, read=n_models + n_record_rejects,
                           written=n_changed, unchanged=n_distinct - n_changed,
                           rejected=n_record_rejects, duplicates=n_models - n_distinct,
                           version=version)
    progress(outcome.summary())
    return outcome

