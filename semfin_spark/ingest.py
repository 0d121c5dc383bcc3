"""Ingest Hub metadata into ``hub_models``; bad records into ``ingest_rejects``.

Sources, all through the same parse-validate-merge path:

* ``snapshot:PATH``: Hub snapshot files (JSON Lines, gzipped or not, or Parquet with the
  same columns); PATH is a file, a folder or a glob. The camelCase keys of ``/api/models``
  and the snake_case spelling of ``huggingface_hub``'s ``ModelInfo`` and of the public
  Parquet dumps are both understood.
* ``synthetic:N[,seed=S]``: a generated Hub of N models (:mod:`semfin_spark.synthetic`).
* ``hub[:LIMIT]``: an incremental crawl of the Hub at ``HF_ENDPOINT`` (:mod:`semfin_spark.crawl`):
  listing and changed configs kept under ``<warehouse>/_crawl``, folded into records here.

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

import dataclasses
import datetime as dt
import glob
import hashlib
import json
import logging
import math
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
from semfin_spark.repo_ids import is_valid_repo_id
from semfin_spark.schemas import HUB_MODELS, INGEST_REJECTS
from semfin_spark.settings import IngestSettings, Settings, local_path

log = logging.getLogger(__name__)

# Rejects that keep their model: a value was dropped or repaired, the rest stored.
_FIELD_LEVEL_REASONS = ("invalid_card_data", "fetch_error", "invalid_utf8", "invalid_unicode",
                        "number_out_of_range", "time_out_of_range")
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
    older: int = 0
    files_rejected: int = 0
    crawl: dict[str, Any] | None = None  # a hub source's crawl: listed, fetched, deleted, ...

    def summary(self) -> str:
        return (f"ingest {self.source}: read {self.read}, written {self.written}, "
                f"unchanged {self.unchanged}, older than stored {self.older}, "
                f"rejected {self.rejected}, duplicates {self.duplicates}, "
                f"files refused {self.files_rejected} (hub_models version {self.version})")


# ------------------------------------------------------------------ parsing one record

def parse_record(text: str, settings: IngestSettings) -> dict[str, Any]:
    """Validate one snapshot record and return its typed ``hub_models`` values.

    Args:
        text: one JSON object (a line of a snapshot file).
        settings: limits (record size, raw text kept).

    Returns:
        The row as a dict (without ``source`` and ``ingested_at``), plus ``_warnings``:
        (reason, detail) pairs for values dropped or repaired while keeping the model
        (a card that is not a mapping, a time out of range, a lone surrogate).

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
                             f"ingest.max_record_bytes={settings.max_record_bytes}",
                             _id_of_unparsed(text))
    warnings: list[tuple[str, str]] = []
    record = _loads(text, warnings)
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
        row = _typed_row(get, model_id, warnings)
    except RecordRejected as exc:
        exc.model_id = model_id
        raise
    row["record_hash"] = hashlib.sha256(_dumps({k: row[k] for k in sorted(row)}).encode()).hexdigest()
    raw_record = {k: v for k, v in record.items() if k != "config_json"}
    raw = text if "config_json" not in record else _dumps(raw_record)
    row["raw"] = raw[: settings.raw_max_chars]
    row["_warnings"] = warnings
    return row


_ID_IN_TEXT = re.compile(r'"(?:id|modelId|model_id)"\s*:\s*"([^"\\]{1,300})"')


def _id_of_unparsed(text: str) -> str | None:
    """The id of a record too large to parse, read from its text (None if not found)."""
    found = _ID_IN_TEXT.search(text[:1_000_000])
    return found.group(1) if found else None


def _loads(text: str, warnings: list[tuple[str, str]]) -> Any:
    """Parse one record; what the fast parser refuses gets a second, careful reading.

    orjson refuses integers past 64 bits, numbers past the float range and lone
    surrogate escapes (``"\\ud800"``), all of which the json module reads. A number
    past the float range (``1e400``) is kept as its text and a lone surrogate becomes
    U+FFFD; each repair is reported in ``warnings`` so that nothing changes silently.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        try:
            value = json.loads(text, parse_constant=_reject_constant,
                               parse_float=_float_or_text)
        except (ValueError, RecursionError):
            raise RecordRejected("invalid_json", str(exc)[:300]) from None
        return _repaired(value, "", warnings)


class _OutOfRange(str):
    """A JSON number past the float range, kept as the text it was written as."""


def _float_or_text(spelling: str) -> float | str:
    number = float(spelling)
    return number if math.isfinite(number) else _OutOfRange(spelling)


def _repaired(value: Any, path: str, warnings: list[tuple[str, str]]) -> Any:
    if isinstance(value, _OutOfRange):
        warnings.append(("number_out_of_range",
                         f"{path or 'value'}: {str(value)[:60]} is past the float range; kept as text"))
        return str(value)
    if isinstance(value, str):
        clean = _without_lone_surrogates(value)
        if clean is not value:
            warnings.append(("invalid_unicode",
                             f"{path or 'value'}: a lone surrogate escape, replaced by U+FFFD"))
        return clean
    if isinstance(value, list):
        return [_repaired(v, f"{path}[{i}]", warnings) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {_repaired(k, path, warnings): _repaired(v, f"{path}.{k}" if path else str(k), warnings)
                for k, v in value.items()}
    return value


def _without_lone_surrogates(text: str) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:  # UTF-16 round trip: each lone surrogate becomes U+FFFD
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


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


def _typed_row(get: Callable[[str], Any], model_id: str,
               warnings: list[tuple[str, str]]) -> dict[str, Any]:
    card = get("card_data")
    if isinstance(card, str):  # card data given as the card's YAML header text
        try:
            card = _safe_yaml(card)
        except ValueError as exc:
            card = None
            warnings.append(("invalid_card_data", str(exc)[:300]))
    if card is not None and not isinstance(card, dict):
        warnings.append(("invalid_card_data", f"card data is {_type_name(card)}, not a mapping"))
        card = None
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
        "last_modified": _timestamp(get("last_modified"), "lastModified", warnings),
        "created_at": _timestamp(get("created_at"), "createdAt", warnings),
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
    return row


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


def _timestamp(value: Any, name: str, warnings: list[tuple[str, str]]) -> dt.datetime | None:
    """A UTC time from ISO 8601 text or epoch seconds/milliseconds.

    A time that exists in no calendar Spark can store (``1e18`` ms, ``-1e300``,
    ``0001-01-01T00:00:00+14:00``) is dropped with a ``time_out_of_range`` warning: the
    model stays. Text that is no time at all rejects the record (``wrong_type``).
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) > 1e11 else value  # epoch millis or seconds
        try:
            return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            warnings.append(("time_out_of_range", f"{name}: {value!r} is no time between "
                                                  "years 1 and 9999; dropped"))
            return None
    if not isinstance(value, str):
        raise _wrong(name, "an ISO 8601 time", value)
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        raise RecordRejected("wrong_type", f"{name}: {value[:60]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    try:
        return parsed.astimezone(dt.timezone.utc)
    except OverflowError:
        warnings.append(("time_out_of_range", f"{name}: {value[:60]!r} falls outside years "
                                              "1 to 9999 in UTC; dropped"))
        return None


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

# hub_models columns the ingest sets itself rather than reading them from a record.
_RUN_COLUMNS = ("source", "ingested_at", "deleted_at")
_PARSED_FIELDS = [f for f in HUB_MODELS.schema.fields if f.name not in _RUN_COLUMNS]
PARSED_SCHEMA = T.StructType(
    [T.StructField("kind", T.StringType(), False)]
    + [T.StructField(f.name, f.dataType, True) for f in _PARSED_FIELDS]
    + [T.StructField(n, t, True) for n, t in (
        ("source_file", T.StringType()), ("reason", T.StringType()),
        ("detail", T.StringType()), ("raw_excerpt", T.StringType()),
        ("raw_length", T.LongType()))]
)


def parse_batches(batches: Iterator[Any], settings: IngestSettings) -> Iterator[Any]:
    """``mapInArrow`` body: (value, source_file) batches in, :data:`PARSED_SCHEMA` batches out.

    ``value`` is the line's bytes (binary): text that is not UTF-8 must reach this code
    to be rejected, not fail the Arrow conversion of the whole batch. No record can fail
    its batch: whatever a record raises becomes its reject row.
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(PARSED_SCHEMA, timezone="UTC")
    for batch in batches:
        values = batch.column("value").to_pylist()
        files = batch.column("source_file").to_pylist()
        rows: list[dict[str, Any]] = []
        for raw, source_file in zip(values, files):
            if raw is None:
                continue
            text, bad_utf8 = _decoded(raw)
            if not text.strip():
                continue
            rows.extend(_parse_one(text, source_file, settings, bad_utf8))
        yield _record_batch(rows, arrow_schema, settings, pa)


def _decoded(raw: bytes | str) -> tuple[str, bool]:
    """The line as text, and whether it held bytes that are not UTF-8 (now U+FFFD).

    A byte-order mark (files saved by Windows editors start with one) is not part of the
    record and is dropped.
    """
    if isinstance(raw, str):
        return raw.lstrip("\ufeff"), False
    try:
        return raw.decode("utf-8").lstrip("\ufeff"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace").lstrip("\ufeff"), True


def _record_batch(rows: list[dict[str, Any]], schema: Any, settings: IngestSettings,
                  pa: Any) -> Any:
    """The rows as one Arrow batch; a row Arrow refuses becomes a reject, not a failed task."""
    try:
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    except (pa.ArrowException, UnicodeEncodeError, OverflowError, TypeError, ValueError):
        kept = []
        for row in rows:
            try:
                pa.RecordBatch.from_pylist([row], schema=schema)
                kept.append(row)
            except (pa.ArrowException, UnicodeEncodeError, OverflowError, TypeError, ValueError) as exc:
                text = str(row.get("raw") or row.get("raw_excerpt") or "")
                kept.append(_reject_row(_printable(text), row.get("source_file"), "unstorable",
                                        f"{type(exc).__name__}: {_printable(str(exc))[:300]}",
                                        _printable(row["id"]) if row.get("id") else None, settings))
        return pa.RecordBatch.from_pylist(kept, schema=schema)


def _printable(text: str) -> str:
    return text.encode("utf-8", "replace").decode("utf-8")


def _parse_one(text: str, source_file: str, settings: IngestSettings,
               bad_utf8: bool = False) -> list[dict[str, Any]]:
    try:
        row = parse_record(text, settings)
    except RecordRejected as exc:
        return [_reject_row(text, source_file, exc.reason, exc.detail, exc.model_id, settings)]
    except RecursionError:
        return [_reject_row(text, source_file, "invalid_json", "nesting too deep to parse",
                            None, settings)]
    except Exception as exc:  # noqa: BLE001 - one record never fails the batch; kept as a reject
        return [_reject_row(text, source_file, "unparseable",
                            f"{type(exc).__name__}: {str(exc)[:300]}", None, settings)]
    out = []
    warnings = row.pop("_warnings")
    if bad_utf8:
        warnings.insert(0, ("invalid_utf8", "bytes that are not UTF-8, replaced by U+FFFD"))
    for reason, detail in warnings:
        out.append(_reject_row(text, source_file, reason, detail, row["id"], settings))
    fetch_error = _fetch_error(text)
    if fetch_error:
        out.append(_reject_row(text, source_file, "fetch_error", fetch_error, row["id"], settings))
    row.update(kind="model", source_file=source_file)
    out.append(row)
    return out


def _fetch_error(text: str) -> str | None:
    if '"_fetch_error"' not in text:
        return None
    value = _loads(text, []).get("_fetch_error")
    return str(value)[:500] if value else None


def _reject_row(text: str, source_file: str, reason: str, detail: str, model_id: str | None,
                settings: IngestSettings) -> dict[str, Any]:
    return {"kind": "reject", "id": model_id, "source_file": source_file, "reason": reason,
            "detail": detail, "raw_excerpt": text[: settings.reject_raw_max_chars],
            "raw_length": len(text)}


# ------------------------------------------------------------------ sources

@dataclass(frozen=True)
class SnapshotFiles:
    """The files of a snapshot path: those to read and those refused, with the reason."""

    json: list[str]
    parquet: list[list[str]]  # grouped by schema: each group is read with its own columns
    rejected: list[tuple[str, str, str]]  # (file, reason, detail)


def snapshot_files(path: str) -> SnapshotFiles:
    """Find and check the snapshot files at ``path`` (a file, a folder or a glob).

    A file that cannot be read whole (a truncated gzip, text named ``.gz``, a Parquet
    file with a broken footer) or a Parquet file with no id column is refused with its
    reason, and the others are read: one bad file never stops an ingest. Files on remote
    storage (``s3://``, ``hdfs://``) are not checked here; Spark reads them as given.

    Raises:
        IngestError: nothing matches ``path``.

    Implementation details:
        Runs on the driver. A gzip file is decompressed once, streaming, to find its end
        (about 1 s per 300 MB); a Parquet file has only its footer read.
    """
    files = _snapshot_files(path)
    json_files: list[str] = []
    by_schema: dict[str, list[str]] = {}
    rejected: list[tuple[str, str, str]] = []
    for name in files:
        remote = local_path(name) is None
        if name.endswith(".parquet"):
            schema, problem = (None, None) if remote else _parquet_schema(name)
            if problem:
                rejected.append((name, *problem))
            else:
                by_schema.setdefault(schema or "", []).append(name)
        else:
            problem = None if remote else _unreadable(name)
            if problem:
                rejected.append((name, "unreadable_file", problem))
            else:
                json_files.append(name)
    return SnapshotFiles(json_files, list(by_schema.values()), rejected)


def _unreadable(name: str) -> str | None:
    """Why a JSON Lines file cannot be read to its end, or None."""
    import gzip
    import zlib

    try:
        if name.endswith(".gz"):
            with gzip.open(name, "rb") as fh:
                while fh.read(8 << 20):
                    pass
        else:
            with open(name, "rb") as fh:
                fh.read(1)
    except (OSError, EOFError, zlib.error) as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    return None


def _parquet_schema(name: str) -> tuple[str | None, tuple[str, str] | None]:
    """(the file's schema as text, None), or (None, (reason, detail)) for a refused file."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(name)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a broken file
        return None, ("unreadable_file", f"{type(exc).__name__}: {exc}"[:500])
    if not set(schema.names) & set(_ALIASES["id"]):
        return None, ("foreign_schema", f"no id column (columns: {', '.join(schema.names[:20])})")
    return schema.to_string(show_schema_metadata=False), None


def hadoop_path(path: str) -> str:
    """``path`` with Hadoop's glob characters escaped, so Spark reads that one file.

    Spark expands ``*?[]{}`` in every path it is given: ``hub[2022].jsonl`` would be a
    pattern matching ``hub2.jsonl``, not itself.

    Examples:
        >>> print(hadoop_path("/data/hub[2022].jsonl"))
        /data/hub\\[2022\\].jsonl
    """
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", path)


def snapshot_lines(spark: SparkSession, files: SnapshotFiles) -> DataFrame:
    """Lines of checked snapshot files as (value: the line's bytes, source_file)."""
    parts = []
    if files.json:
        parts.append(spark.read.text([hadoop_path(f) for f in files.json]).select(
            F.col("value").cast("binary").alias("value"), F.input_file_name().alias("source_file")))
    for group in files.parquet:
        pq_rows = spark.read.parquet(*[hadoop_path(f) for f in group])
        parts.append(pq_rows.select(
            F.to_json(F.struct(*[F.col(f"`{c}`") for c in pq_rows.columns])).cast("binary")
            .alias("value"), F.input_file_name().alias("source_file")))
    if not parts:
        return spark.createDataFrame([], "value binary, source_file string")
    lines = parts[0]
    for extra in parts[1:]:
        lines = lines.unionByName(extra)
    # Gzip files are not splittable: spread the parsing over every core.
    parallelism = spark.sparkContext.defaultParallelism
    if lines.rdd.getNumPartitions() < parallelism:
        lines = lines.repartition(parallelism)
    return lines


def check_source(source: str) -> None:
    """Refuse, before any Spark job, a ``snapshot:`` source that names nothing.

    Raises:
        IngestError: the snapshot path does not exist or holds no snapshot file.

    Examples:
        >>> check_source("synthetic:10")
        >>> check_source("snapshot:/nowhere/hub.jsonl")
        Traceback (most recent call last):
        ...
        semfin_spark.ingest.IngestError: snapshot path '/nowhere/hub.jsonl' does not exist
    """
    if source.startswith("snapshot:"):
        _snapshot_files(source[len("snapshot:"):])


def _snapshot_files(path: str) -> list[str]:
    local = local_path(path)
    if local is None:
        return [path]  # remote storage: Spark lists it
    if os.path.isdir(local):
        found = [os.path.join(root, name) for root, _, names in os.walk(local) for name in names
                 if name.endswith(_SNAPSHOT_SUFFIXES) and not name.startswith((".", "_"))]
    elif os.path.isfile(local):  # before the glob test: "hub[2022].jsonl" is a file name
        found = [local]
    elif any(ch in local for ch in "*?["):
        found = [p for p in glob.glob(local, recursive=True) if os.path.isfile(p)]
    else:
        raise IngestError(f"snapshot path {path!r} does not exist")
    if not found:
        raise IngestError(f"no snapshot files (*.jsonl[.gz], *.json[.gz], *.parquet) at {path!r}")
    return sorted(os.path.abspath(p) for p in found)


def source_lines(spark: SparkSession, source: str, settings: Settings,
                 progress: Callable[[str], None] = print,
                 ) -> tuple[DataFrame, list[tuple[str, str, str]]]:
    """The lines of a source spec (``snapshot:``, ``synthetic:``, ``hub``) and its refused files.

    Returns:
        (value, source_file) lines, ``value`` being each line's bytes, and the
        (file, reason, detail) of every snapshot file that was refused.

    Raises:
        IngestError: unknown source kind, malformed spec, or a path that matches nothing.
    """
    kind, _, arg = source.partition(":")
    if kind == "snapshot":
        if not arg:
            raise IngestError("snapshot source needs a path: --source snapshot:PATH")
        files = snapshot_files(arg)
        return snapshot_lines(spark, files), files.rejected
    if kind == "synthetic":
        from semfin_spark.synthetic import parse_spec, synthetic_records

        try:
            n, seed = parse_spec(arg)
        except ValueError as exc:
            raise IngestError(str(exc)) from None
        lines = synthetic_records(spark, n, seed, block_size=settings.synthetic.block_size)
        return lines.select(F.col("value").cast("binary").alias("value"),
                            F.lit(f"synthetic:{n},seed={seed}").alias("source_file")), []
    raise IngestError(f"unknown source {source!r}: use snapshot:PATH, synthetic:N[,seed=S] "
                      "or hub[:LIMIT]")


# ------------------------------------------------------------------ the stage

def ingest(spark: SparkSession, store: DeltaStore, source: str, settings: Settings, *,
           progress: Callable[[str], None] = print, backfill: bool = False) -> IngestResult:
    """Ingest a source into ``hub_models`` (merge on id) and ``ingest_rejects``.

    The newest record of a model wins, across runs as within one: a record older than the
    stored one (by ``lastModified``) is skipped, so re-ingesting last year's snapshot
    changes nothing. A record of the same time as the stored one (the same commit seen
    again, a config fetched on a later crawl, a partial Parquet file with a few columns)
    fills in and updates values but never erases a stored one with null. Ids are matched
    as the Hub matches them, ignoring case: ``Org/Model`` and ``org/model`` are one model,
    stored under the spelling of its newest record.

    Args:
        spark: the session.
        store: the warehouse's Delta store.
        source: ``snapshot:PATH``, ``synthetic:N[,seed=S]`` or ``hub[:LIMIT]``.
        settings: limits for records and rejects.
        progress: where progress lines go.
        backfill: let older records replace newer stored ones (repairing a warehouse
            from an older snapshot on purpose).

    Returns:
        The counts: read (non-empty records), written (new or changed models),
        unchanged, older (skipped: the stored record is newer), rejected records,
        duplicates (older copies of an id in the same source) and refused files.

    Raises:
        IngestError: the source spec is malformed or matches no file.
        ConcurrentWriteError: another writer changed ``hub_models`` meanwhile; nothing of
            this run was committed to it and running again is safe.
    """
    kind, _, arg = source.partition(":")
    run = None
    if kind == "hub":
        from semfin_spark.crawl import crawl, crawl_lines

        if arg and not arg.isdigit():
            raise IngestError(f"hub source limit must be a number, not {arg!r}")
        run = crawl(spark, store, settings, int(arg) if arg else None, progress)
        lines, bad_files = crawl_lines(spark, store, run), []
    else:
        lines, bad_files = source_lines(spark, source, settings, progress)
    for name, reason, detail in bad_files:
        progress(f"ingest {source}: refused {name}: {reason}: {detail}")
    cfg = settings.ingest
    parsed = (lines.mapInArrow(lambda it: parse_batches(it, cfg), PARSED_SCHEMA)
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        result = _merge_parsed(store, parsed, source, bad_files, backfill, progress)
    finally:
        parsed.unpersist()
    if run is not None:
        from semfin_spark.crawl import finish_crawl

        record = finish_crawl(spark, store, run, settings, progress)
        result = dataclasses.replace(result, crawl={**run.counts(), "new": record.new,
                                                    "deleted": record.deleted,
                                                    "reappeared": record.reappeared})
    return result


def _merge_parsed(store: DeltaStore, parsed: DataFrame, source: str,
                  bad_files: list[tuple[str, str, str]], backfill: bool,
                  progress: Callable[[str], None]) -> IngestResult:
    now = F.lit(dt.datetime.now(dt.timezone.utc)).cast("timestamp")
    models = parsed.where("kind = 'model'")
    # Field-level rejects (a dropped card, a failed config download) keep their model.
    outcome_kind = (F.when(F.col("kind") == "model", "model")
                    .when(F.col("reason").isin(*_FIELD_LEVEL_REASONS), "field_reject")
                    .otherwise("record_reject"))
    counts = {r[0]: r[1] for r in parsed.groupBy(outcome_kind).count().collect()}
    n_models, n_record_rejects = counts.get("model", 0), counts.get("record_reject", 0)
    progress(f"ingest {source}: parsed {n_models} models, {n_record_rejects} rejected records, "
             f"{counts.get('field_reject', 0)} field-level rejects")

    # Every read of hub_models is pinned to one version; if another writer commits
    # before this run's MERGE, the MERGE is refused rather than undo the other's rows.
    read_version = store.version(HUB_MODELS)
    stored = store.read(HUB_MODELS, version=read_version)
    classified = _classify(stored, models, backfill).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        status = {r[0]: r[1] for r in classified.groupBy("_status").count().collect()}
        n_changed = status.get("replace", 0) + status.get("fill", 0)
        result = None
        if n_changed:
            rows, keys = _rows_to_write(stored, classified)
            result = store.replace_keys(HUB_MODELS, rows.withColumn("source", F.lit(source))
                                        .withColumn("ingested_at", now), keys,
                                        operation="INGEST", metadata={"source": source},
                                        read_version=-1 if read_version is None else read_version)
    finally:
        classified.unpersist()
    _store_rejects(store, parsed, bad_files, source, now)
    version = result.version if result else store.version(HUB_MODELS)
    n_distinct = sum(status.values())
    outcome = IngestResult(source=source, read=n_models + n_record_rejects,
                           written=n_changed, unchanged=status.get("same", 0),
                           older=status.get("older", 0), rejected=n_record_rejects,
                           duplicates=n_models - n_distinct, files_rejected=len(bad_files),
                           version=version)
    progress(outcome.summary())
    return outcome


def _classify(stored: DataFrame, models: DataFrame, backfill: bool) -> DataFrame:
    """One row per model (newest record per case-insensitive id), with ``_status``:
    ``replace`` (new, or newer than stored), ``fill`` (as new as the stored record, with
    other values), ``same`` (stored as is) or ``older`` (the stored record is newer)."""
    # The windows and the join with the stored rows share one partitioning, on the
    # column _key: each record (its config text with it) is shuffled once, not twice.
    key = F.col("_key")
    newest = Window.partitionBy(key).orderBy(
        F.col("last_modified").desc_nulls_last(), F.col("sha").desc_nulls_last(),
        F.col("record_hash").desc())
    whole = newest.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    # Copies of a model as new as its newest (or undated: a partial file of a few columns)
    # complete each other, the newest first; older copies give nothing.
    current = (F.col("last_modified").isNull()
               | (F.col("last_modified") == F.max("last_modified").over(Window.partitionBy(key))))
    columns = [c for c in HUB_MODELS.columns if c != "id" and c not in _RUN_COLUMNS]
    hashes = F.array_sort(F.collect_set(F.when(F.col("_current"), F.col("record_hash")))
                          .over(whole))
    merged_hash = (F.when(F.size(hashes) > 1, F.sha2(F.concat_ws(",", hashes), 256))
                   .otherwise(F.col("record_hash")))
    deduped = (models.withColumn("_key", F.lower("id")).withColumn("_current", current)
               .select(F.row_number().over(newest).alias("_rank"), "_key", "id",
                       *[F.first(F.when(F.col("_current"), F.col(c)), ignorenulls=True)
                         .over(whole).alias(c) if c not in ("record_hash", "raw") else F.col(c)
                         for c in columns], merged_hash.alias("_merged_hash"))
               .where("_rank = 1").drop("_rank")
               .withColumn("record_hash", F.col("_merged_hash")).drop("_merged_hash"))
    stored = stored.select(
        F.lower("id").alias("_key"), F.col("id").alias("_stored_id"),
        F.col("record_hash").alias("_stored_hash"), F.col("last_modified").alias("_stored_time"))
    new, old = F.col("last_modified"), F.col("_stored_time")
    status = (F.when(F.col("_stored_id").isNull(), "replace")
              .when((F.col("_stored_hash") == F.col("record_hash"))
                    & (F.col("_stored_id") == F.col("id")), "same")
              .when(F.lit(backfill) | (old.isNull() & new.isNotNull()) | (new > old), "replace")
              .when(new.isNull() & old.isNotNull(), "fill")
              .when(new < old, "older")
              .otherwise("fill"))
    return deduped.join(stored, "_key", "left").withColumn("_status", status)


def _rows_to_write(stored: DataFrame, classified: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The ``hub_models`` rows to write, and the ids they replace (old spellings included).

    A newer record means the model exists (``deleted_at`` null); a record of the same
    commit changes nothing about that (only a crawl's listing decides deletions).
    """
    columns = [c for c in HUB_MODELS.columns if c not in _RUN_COLUMNS]
    replace = (classified.where("_status = 'replace'").select(*columns)
               .withColumn("deleted_at", F.lit(None).cast("timestamp")))
    stored = stored.select(
        F.lower("id").alias("_key"), *[F.col(c).alias(f"_stored_{c}")
                                       for c in (*columns, "deleted_at")])
    filled = (classified.where("_status = 'fill'").select("_key", *columns)
              .join(stored, "_key", "inner")
              .select("id", *[F.coalesce(F.col(c), F.col(f"_stored_{c}")).alias(c)
                              for c in columns if c != "id"],
                      F.col("_stored_deleted_at").alias("deleted_at")))
    keys = (classified.where("_status IN ('replace', 'fill')")
            .select(F.explode(F.array_distinct(F.array("id", "_stored_id"))).alias("id"))
            .where(F.col("id").isNotNull()))
    return replace.unionByName(filled), keys


def _store_rejects(store: DeltaStore, parsed: DataFrame, bad_files: list[tuple[str, str, str]],
                   source: str, now: Any) -> None:
    """Add the run's new rejects to ``ingest_rejects`` (a MERGE on ``reject_id``: two runs
    rejecting the same record at once cannot both add it)."""
    records = parsed.where("kind = 'reject'").select(
        "source_file", F.col("id").alias("model_id"), "reason", "detail",
        F.col("raw_excerpt").alias("raw"), "raw_length")
    if bad_files:
        files = parsed.sparkSession.createDataFrame(
            [(name, None, reason, detail, None, None) for name, reason, detail in bad_files],
            "source_file string, model_id string, reason string, detail string, raw string, "
            "raw_length long")
        records = records.unionByName(files)
    rows = records.select(
        F.sha2(F.concat_ws("\u0000", "source_file", "reason", F.coalesce("raw", F.lit(""))),
               256).alias("reject_id"),
        F.lit(source).alias("source"), "source_file", "model_id", "reason", "detail", "raw",
        "raw_length", now.alias("rejected_at"),
    ).dropDuplicates(["reject_id"])
    exists = store.exists(INGEST_REJECTS)
    if exists:
        rows = rows.join(store.read(INGEST_REJECTS).select("reject_id"), "reject_id", "left_anti")
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # A first ingest with no reject still creates the table: "no rejects" is an answer
        # an analyst's query can read, a missing table is not.
        if not exists or rows.take(1):
            store.upsert(INGEST_REJECTS, rows, operation="INGEST_REJECTS",
                         metadata={"source": source})
    finally:
        rows.unpersist()
