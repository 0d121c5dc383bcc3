#!/usr/bin/env python
"""The single-process Python peer of the five nightly stages, for ``scripts/bench.py``.

What a competent user of plain Python would write to compute what SemFin computes, on one
machine, with no Spark: orjson, pyarrow, scikit-learn and networkx. ``scripts/bench.py``
runs it on the same snapshot file as the project and reports project time / peer time.

Usage:
    .venv/bin/python scripts/bench_peer.py --models 20000 --seed 0 --work /tmp/peer
    .venv/bin/python scripts/bench_peer.py --snapshot hub.jsonl.gz --work /tmp/peer --out peer.json

From Python: :func:`write_snapshot` writes the generated Hub the project's
``--source synthetic:N,seed=S`` reads (the same lines, so ``semfin ingest --source
snapshot:FILE`` and the peer see the same models); :func:`run_peer` runs the five stages.

The stages, each reading the Parquet files of the ones before it from the work folder and
writing its own (as the project's stages read and write Delta tables), each timed alone:

1. ingest (:func:`ingest_snapshot`): JSON Lines (``.gz`` too) read with orjson; the
   columns the later stages use (id, sha, tags, sibling file names, library_name,
   pipeline_tag, card data, the config summary, config.json's text); one row per id, the
   last line wins -> ``hub_models.parquet``.
2. flatten (:func:`flatten_models`): every config through the project's own
   :func:`~semfin_spark.flatten.flatten_config` (config.json, else the summary) ->
   ``config_features.parquet``; tags, files, parents and the five declared fields by the
   rules of :mod:`semfin_spark.declared` (its pure-Python ``tag_kind``, ``file_kind``,
   ``normalize_relation`` and the licence normalisation of :mod:`semfin_spark.licenses`)
   -> ``model_tags``, ``model_files``, ``model_parents``, ``model_fields``.
3. train (:func:`train_fields`): the token bags of :mod:`semfin_spark.features` as one
   binary document-term matrix (``features.npz``: what ``CountVectorizer(binary=True)``
   gives, built from token numbers); per field the columns its leakage rule allows, with
   ``train.min_feature_df`` / ``train.max_features`` taken on that field's training
   models, as a ``CountVectorizer`` fitted there would; rare classes pooled as in the
   project; each family of ``train.classifiers`` (scikit-learn ``MultinomialNB`` /
   ``LogisticRegression`` lbfgs, multinomial / ``RandomForestClassifier``, with the
   project's hyper-parameters) fitted on 80% and scored on a seeded 20% hold-out; the best
   by accuracy, then log loss, refitted on every labelled model; ``model_type`` also gets
   the project's architecture name match (:mod:`semfin_spark.name_match`) ->
   ``field_models.pkl``.
4. impute (:func:`impute_fields`): every model without a declared value (for reuse_method:
   every model with a parent other than itself) scored; value kept when its confidence
   reaches ``impute.confidence_threshold`` (raised to ``impute.configless_threshold`` for a
   model without a config.json, and to ``impute.undeclared_family_threshold`` for a model
   with lineage none of whose relatives declares the field) -> ``imputed.parquet``.
5. lineage (:func:`build_lineage`): networkx ``DiGraph`` child -> parent; connected
   components over every model plus external parents; strongly connected components
   (cycles); every root-to-leaf path by depth-first search (``lineage.max_depth``,
   ``lineage.max_fanout``, no node twice on a path); per path the relations and licences,
   declared and with imputed values; licence verdicts of ``conf/licenses.yaml`` per edge
   -> ``lineage_edges``, ``lineage_components``, ``lineage_chains``, ``license_conflicts``.

Where the peer's rules deviate from the project's (none changes a figure on the
generated Hub unless said):
    * ingest: a record is kept when it is an object with a text id and text (or null)
      tags, siblings and scalar columns; the project also checks repo ids and the other
      columns' types, writes rejects as rows of ``ingest_rejects``, repairs lone
      surrogates and out-of-range numbers, and reads card data given as YAML text.
      Duplicates: the last line wins (the project keeps the newest ``lastModified``, then
      ``sha``). No ``raw``, ``record_hash``, timestamps or counter columns, no merge
      against a stored table.
    * flatten: ``flatten_config`` is the project's own, but the peer writes no
      ``flatten_state`` (it always reprocesses everything, like ``flatten --full``) and
      keeps only the counts of rejects, not their rows. Whitespace trimming and lower-casing
      are Python's (``str.strip(" ")``, ``str.lower``) where the project runs Spark's
      ``trim``/``lower``; JSON values of the card that are not text are read as orjson's
      spelling of them (Spark's ``from_json`` spelling may differ for floats).
    * train: the hold-out is a BLAKE2 hash of the id, not Spark's ``xxhash64``, so the
      validation models differ (the accuracies are comparable, not equal); scikit-learn's
      optimisers are not Spark ML's (L-BFGS with ``C = 1 / (regParam * n)`` is the same
      objective as Spark's ``regParam``, but the stopping rules differ); above
      ``VALIDATION_MAX_MODELS`` training models the sample is drawn by the same BLAKE2
      hash. No MLflow run, no registered models: the fitted models are pickled.
    * impute: no ``features_hash`` incremental logic (every missing value is scored, like
      ``impute --full``); the output is a table of its own, not a merge into
      ``model_fields``.
    * lineage: same definitions; cycles are counted with networkx's strongly connected
      components (the project's ``find_cycles`` gives the same groups).

    Work the project does that the peer does not (so the ratio is not quite like for
    like): ``ingest`` hashes and keeps every record (``record_hash``, ``raw``) and merges
    into a Delta table; ``flatten`` keeps per-model change keys and reject rows; ``train``
    logs an MLflow run (confusion matrices, per-class reports) and registers five Spark
    ML models; ``impute`` loads them back from MLflow and recomputes the token bags
    (the peer keeps its token matrix from the train stage); every stage commits Delta
    versions.

Implementation details:
    One process, one core (BLAS limited to one thread by default: see :func:`run_peer`).
    Large tables are read and written in pieces (``iter_batches``, ``ParquetWriter``) and
    the token bags live only as the sparse matrix, so memory grows with the models by
    what a dict of ids, the matrix and the networkx graph take, not by Python objects per
    config row. Peak memory is the process's ``ru_maxrss``, read after each stage. The
    cyclic garbage collector is paused in the loops that make millions of small objects,
    as the project's flatten does.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import math
import os
import pickle
import re
import resource
import sys
import time
import warnings
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import networkx as nx
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import sparse
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import MultinomialNB
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from semfin_spark.declared import (  # noqa: E402
    ADAPTER_FILES, ADAPTER_LIBRARIES, MERGE_FILE_KINDS, MERGE_TAGS, QUANT_METHODS,
    QUANTIZED_FILE_KINDS, QUANTIZED_TAGS, RELATION_PRECEDENCE, TAG_PREFIX_KINDS, file_kind,
    normalize_relation, tag_kind,
)
from semfin_spark.features import (  # noqa: E402
    ARCHITECTURE_PATTERN, EXACT_INT_LIMIT, LEAKAGE_RULES, MAX_VALUE_CHARS, names_config,
)
from semfin_spark.flatten import _gc_paused, config_source, flatten_config  # noqa: E402
from semfin_spark.licenses import load_license_rules, normalize_card_license  # noqa: E402
from semfin_spark.name_match import (  # noqa: E402
    ARCHITECTURE_PREFIX, MIN_PRECISION, NAME_MATCH_FIELDS, PRIOR_MODELS, normalise,
)
from semfin_spark.settings import Settings, load_settings  # noqa: E402
from semfin_spark.synthetic import generate_block_lines  # noqa: E402
from semfin_spark.classifier import (  # noqa: E402
    EXCLUDED_LABELS, FAMILIES, LOG_LOSS_FLOOR, LR_MAX_ITER, LR_REG_PARAM, NB_SMOOTHING,
    POOLED_CLASS, RF_DEPTH, RF_TREES, VALIDATION_FRACTION, VALIDATION_MAX_MODELS,
)

STAGES = ("ingest", "flatten", "train", "impute", "lineage")
"""The five stages, in data-flow order (the keys of :func:`run_peer`'s ``stages``)."""

VARIANTS = ("declared", "with_imputed")
_SEP = " > "
_WRITE_ROWS = 100_000  # rows per Parquet write: bounds the memory a table being written takes
_WRITE_MODELS = 10_000  # hub_models rows per write (each holds a config.json of kilobytes)
_READ_ROWS = 65_536  # rows per piece read from a large Parquet file

# The project's regular expressions (semfin_spark/declared.py, features.py), Python spelling.
_BASE_MODEL_RELATION = re.compile(r"(?i)^base_model:([^:]*):(.+)$")
_BASE_MODEL_PLAIN = re.compile(r"(?i)^base_model:([^:]+)$")
_PREFIX = re.compile(r"^([^:]+):")
_EXTENSION = re.compile(r"^.+\.([^.]+)$")
_DIGIT_SEGMENTS = re.compile(r"(^|\.)[0-9]+(?=\.|$)")
_DIGITS = re.compile(r"[0-9]+")
_ARCHITECTURE = re.compile(ARCHITECTURE_PATTERN)
_NAME_SPLIT = re.compile(r"[^a-z0-9]+")
_TRAILING_DIGITS = re.compile(r"[0-9]+$")
_LOG2 = math.log(2.0)  # Spark's log2 is ln(x) / ln(2): the same bucket edges

HUB_SCHEMA = pa.schema([
    ("id", pa.string()), ("sha", pa.string()), ("library_name", pa.string()),
    ("pipeline_tag", pa.string()), ("tags", pa.list_(pa.string())),
    ("siblings", pa.list_(pa.string())), ("card_data", pa.string()), ("config", pa.string()),
    ("config_json", pa.string()),
])
CONFIG_FEATURES_SCHEMA = pa.schema([
    ("model_id", pa.string()), ("sha", pa.string()), ("source", pa.string()),
    ("key", pa.string()), ("key_path", pa.string()), ("position", pa.int32()),
    ("value", pa.string()), ("value_type", pa.string()), ("value_num", pa.float64()),
    ("truncated", pa.bool_()),
])


# ------------------------------------------------------------------ the generated Hub

def write_snapshot(path: str | os.PathLike[str], n: int, seed: int = 0,
                   block_size: int = 64) -> int:
    """Write the generated Hub of ``n`` models as a snapshot file (JSON Lines).

    The lines are exactly those of the project's ``--source synthetic:N,seed=S`` with
    ``synthetic.block_size = block_size`` (:func:`~semfin_spark.synthetic.synthetic_records`
    generates block ``b`` = models ``[b*block_size, (b+1)*block_size)``, cut at ``n``), in
    model order.

    Args:
        path: the file to write; gzipped when it ends in ``.gz``.
        n: number of models (>= 0).
        seed: the Hub's seed.
        block_size: models per generation block (``settings.synthetic.block_size``).

    Returns:
        The number of lines written (``n``).

    Examples:
        >>> write_snapshot("/tmp/hub.jsonl", 100, seed=0)   # doctest: +SKIP
        100
    """
    if n < 0 or block_size < 1:
        raise ValueError(f"need n >= 0 and block_size >= 1, got n={n}, block_size={block_size}")
    opener = gzip.open if str(path).endswith(".gz") else open
    written = 0
    with opener(path, "wt", encoding="utf-8") as out:
        for block in range(math.ceil(n / block_size)):
            lines = generate_block_lines(seed, block, block_size, n)
            out.write("\n".join(lines))
            out.write("\n")
            written += len(lines)
    return written


# ------------------------------------------------------------------ small helpers

def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory, in MB."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _columns(path: Path, names: Iterable[str]) -> list[list[Any]]:
    """Whole columns of a Parquet file as Python lists (for the small ones)."""
    table = pq.read_table(path, columns=list(names))
    return [table.column(name).to_pylist() for name in names]


def _rows(path: Path, names: list[str]) -> Iterator[tuple[Any, ...]]:
    """The rows of a Parquet file as tuples, read in pieces (for the large ones)."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=_READ_ROWS, columns=names):
        yield from zip(*(batch.column(name).to_pylist() for name in names))


class _TableWriter:
    """One output Parquet file, filled a row at a time and written in pieces of
    :data:`_WRITE_ROWS` rows, so that no table is ever whole in memory."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_write: int = _WRITE_ROWS) -> None:
        self.schema, self.rows_per_write = schema, rows_per_write
        self.writer = pq.ParquetWriter(path, schema)
        self.columns: dict[str, list[Any]] = {name: [] for name in schema.names}
        self.pending = self.written = 0

    def add(self, *values: Any) -> None:
        for column, value in zip(self.columns.values(), values):
            column.append(value)
        self.pending += 1
        if self.pending >= self.rows_per_write:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.Table.from_pydict(self.columns, schema=self.schema))
            self.written += self.pending
            self.columns = {name: [] for name in self.schema.names}
            self.pending = 0

    def close(self) -> int:
        """Write what is left; the number of rows written."""
        self.flush()
        self.writer.close()
        return self.written


def _strings(*names: str) -> pa.Schema:
    return pa.schema([(name, pa.string()) for name in names])


def _trim(text: str | None) -> str | None:
    """Spark's ``trim``: spaces only."""
    return None if text is None else text.strip(" ")


def _lower_or_none(text: str | None) -> str | None:
    value = _trim(text)
    return value.lower() if value else None


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _card_values(value: Any) -> list[str]:
    """A card value as a list of trimmed non-blank texts (a list gives its elements)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if item is None:
            continue
        text = _trim(_json_text(item))
        if text:
            out.append(text)
    return out


def _held_out(model_id: str, seed: int, fraction: float) -> bool:
    """A seeded ``fraction`` of the ids, the same whatever the order (BLAKE2 of seed and id)."""
    digest = hashlib.blake2b(f"{seed}:{model_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 1_000_000 < round(fraction * 1_000_000)


# ------------------------------------------------------------------ 1. ingest

_ALIASES = {
    "id": ("id", "modelId", "model_id"),
    "library_name": ("library_name", "libraryName"),
    "pipeline_tag": ("pipeline_tag", "pipelineTag"),
    "card_data": ("cardData", "card_data"),
}


def _first_key(record: dict[str, Any], column: str) -> Any:
    for key in _ALIASES.get(column, (column,)):
        value = record.get(key)
        if value is not None:
            return value
    return None


def _lines(path: str | os.PathLike[str]) -> Iterator[bytes]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        yield from fh


def _texts(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def hub_row(record: Any) -> tuple[Any, ...] | None:
    """The :data:`HUB_SCHEMA` values of one snapshot record, or None when it is no object
    with a text id, or a column has the wrong type. JSON columns (card data, config
    summary) become compact JSON text."""
    model_id = _first_key(record, "id") if isinstance(record, dict) else None
    if not isinstance(model_id, str) or not model_id:
        return None
    scalars = (record.get("sha"), _first_key(record, "library_name"),
               _first_key(record, "pipeline_tag"))
    siblings = [s.get("rfilename") if isinstance(s, dict) else s
                for s in record.get("siblings") or []]
    if not (all(v is None or isinstance(v, str) for v in scalars)
            and _texts(record.get("tags")) and _texts(siblings)):
        return None
    card = _first_key(record, "card_data")
    config = record.get("config")
    if isinstance(config, str):
        try:
            config = orjson.loads(config)
        except orjson.JSONDecodeError:
            config = None
    config_json = record.get("config_json")
    return (model_id, *scalars, record.get("tags"), siblings,
            orjson.dumps(card).decode() if isinstance(card, dict) else None,
            orjson.dumps(config).decode() if isinstance(config, dict) else None,
            config_json if config_json is None or isinstance(config_json, str)
            else orjson.dumps(config_json).decode())


def ingest_snapshot(snapshot: str | os.PathLike[str], work: Path) -> dict[str, Any]:
    """Stage 1: a snapshot file -> ``hub_models.parquet`` (one row per id, last line wins).

    Args:
        snapshot: JSON Lines, optionally gzipped; one Hub ``/api/models`` object per line
            plus ``config_json``.
        work: the work folder.

    Returns:
        ``items`` (lines read), ``models`` (rows written), ``rejected`` (lines that are
        not JSON, or fail :func:`hub_row`), ``duplicates``.

    Implementation details:
        Rows are written as they are read; only each id's last row number is kept. When an
        id came twice, the file is read back once and its earlier rows dropped.
    """
    target = work / "hub_models.parquet"
    staged = work / "hub_models.staged.parquet"
    writer = _TableWriter(staged, HUB_SCHEMA, _WRITE_MODELS)
    last: dict[str, int] = {}
    read = rejected = 0
    with _gc_paused():
        for line in _lines(snapshot):
            if not line.strip():
                continue
            read += 1
            try:
                row = hub_row(orjson.loads(line))
            except orjson.JSONDecodeError:
                row = None
            if row is None:
                rejected += 1
                continue
            last[row[0]] = writer.pending + writer.written
            writer.add(*row)
    written = writer.close()
    if len(last) < written:
        pq.write_table(pq.read_table(staged).take(sorted(last.values())), target)
        staged.unlink()
    else:
        staged.replace(target)
    return {"items": read, "unit": "models", "models": len(last), "rejected": rejected,
            "duplicates": written - len(last)}


# ------------------------------------------------------------------ 2. flatten

@functools.lru_cache(maxsize=1 << 16)
def _tag_row(tag: str, library_name: str | None) -> tuple[str, str, str | None]:
    """``(kind, value, relation)`` of one tag, as ``declared.model_tags`` derives them."""
    kind = tag_kind(tag, library_name)
    with_relation = _BASE_MODEL_RELATION.match(tag)
    prefix = _PREFIX.match(tag)
    if kind == "base_model" and with_relation:
        return kind, with_relation.group(2), normalize_relation(with_relation.group(1))
    if prefix and prefix.group(1).lower() in TAG_PREFIX_KINDS:
        return kind, tag.split(":", 1)[1], None
    return kind, tag, None


@functools.lru_cache(maxsize=1 << 16)
def _file_row(path: str) -> tuple[str | None, str]:
    """``(extension, kind)`` of one repo file, as ``declared.model_files`` derives them."""
    found = _EXTENSION.match(path.rsplit("/", 1)[-1].lower())
    return (found.group(1) if found else None), file_kind(path)


@dataclass
class _Parent:
    key: str
    no_relation: bool
    rank: int
    parent_id: str
    source: str
    relation: str | None
    relation_source: str | None


def declared_parents(tags: list[str], card: dict[str, Any]) -> list[_Parent]:
    """The model's declared parents, one per parent (case-folded), as ``model_parents``.

    Sources ``tag`` (``base_model:<relation>:<p>``), ``card_data`` (card ``base_model``)
    and ``tag_plain`` (``base_model:<p>``); the relation is the tag's, else the card's
    ``base_model_relation``; for a parent named twice the row with a relation wins, then
    ``tag`` > ``card_data`` > ``tag_plain``. Self-loops are kept.
    """
    card_relation_raw = next(iter(_card_values(card.get("base_model_relation"))), None)
    card_relation = normalize_relation(card_relation_raw)
    found: list[_Parent] = []

    def add(parent: str, rank: int, source: str, tag_relation: str | None) -> None:
        if not parent:
            return
        relation = tag_relation or card_relation
        relation_source = "tag" if tag_relation else ("card_data" if relation else None)
        found.append(_Parent(parent.lower(), relation is None, rank, parent, source, relation,
                             relation_source))

    for tag in tags:
        if tag[:11].lower() != "base_model:":
            continue
        with_relation = _BASE_MODEL_RELATION.match(tag)
        if with_relation:
            add(_trim(with_relation.group(2)), 0, "tag", normalize_relation(with_relation.group(1)))
        plain = _BASE_MODEL_PLAIN.match(tag)
        if plain:
            add(_trim(plain.group(1)), 2, "tag_plain", None)
    for parent in _card_values(card.get("base_model")):
        add(parent, 1, "card_data", None)
    found.sort(key=lambda p: (p.key, p.no_relation, p.rank, p.parent_id))
    kept: list[_Parent] = []
    for parent in found:
        if not kept or kept[-1].key != parent.key:
            kept.append(parent)
    return kept


def _json_path(text: str | None, *keys: str) -> str | None:
    """``get_json_object(text, '$.a.b')``: a string value, or the JSON text of another."""
    if not text or keys[0] not in text:  # most configs lack the key: skip the parse
        return None
    try:
        value: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return _json_text(value)


def _rule_reuse(model: dict[str, Any]) -> str | None:
    """The Hub's reuse rule for parents declared without a relation (declared.py)."""
    files = model["siblings"] or []
    tags = [t.lower() for t in model["tags"] or []]
    library = _lower_or_none(model["library_name"])
    names = [p.rsplit("/", 1)[-1].lower() for p in files]
    if any(n in ADAPTER_FILES for n in names) or library in ADAPTER_LIBRARIES \
            or any(t in ADAPTER_LIBRARIES for t in tags):
        return "adapter"
    kinds = {_file_row(p)[1] for p in files}
    if kinds & set(QUANTIZED_FILE_KINDS):
        return "quantized"
    method = (_json_path(model["config"], "quantization_config", "quant_method")
              or _json_path(model["config_json"], "quantization_config", "quant_method"))
    if (method and method.lower() in QUANT_METHODS) or any(t in QUANTIZED_TAGS for t in tags):
        return "quantized"
    if kinds & set(MERGE_FILE_KINDS) or any(t in MERGE_TAGS for t in tags):
        return "merge"
    return None


def declared_fields(model: dict[str, Any], card: dict[str, Any],
                    parents: list[_Parent]) -> dict[str, tuple[str | None, str | None]]:
    """Field -> ``(declared_value, declared_source)`` by the rules of ``declared.py``."""
    card_licence = card.get("license")
    tag_licences = [t[len("license:"):] for t in model["tags"] or []
                    if t.lower().startswith("license:")]
    license_value, license_source = normalize_card_license(_card_values(card_licence)), "card_data"
    if license_value is None:
        license_value, license_source = normalize_card_license(tag_licences), "tag"

    reuse: tuple[str | None, str | None] = (None, None)
    if parents:
        relations: dict[str, _Parent] = {}
        for parent in parents:  # the first parent of each relation, as the project picks
            if parent.relation:
                relations.setdefault(parent.relation, parent)
        winner = next((relations[r] for r in RELATION_PRECEDENCE if r in relations), None)
        if winner is not None:
            reuse = (winner.relation, winner.relation_source)
        else:
            rule = _rule_reuse(model)
            reuse = (rule, "rule" if rule else None)

    def hub_or_card(column: str) -> tuple[str | None, str | None]:
        hub = _lower_or_none(model[column])
        if hub:
            return hub, "hub"
        first = next(iter(_card_values(card.get(column))), None)
        return (first.lower(), "card_data") if first else (None, None)

    model_type = (_lower_or_none(_json_path(model["config"], "model_type"))
                  or _lower_or_none(_json_path(model["config_json"], "model_type")))
    return {
        "license": (license_value, license_source if license_value else None),
        "reuse_method": reuse,
        "pipeline_tag": hub_or_card("pipeline_tag"),
        "library_name": hub_or_card("library_name"),
        "model_type": (model_type, "config" if model_type else None),
    }


class _FeatureWriter:
    """``config_features.parquet``, written in pieces of :data:`_WRITE_ROWS` rows."""

    def __init__(self, path: Path) -> None:
        self.writer = pq.ParquetWriter(path, CONFIG_FEATURES_SCHEMA)
        self.rows: list[tuple[Any, ...]] = []
        self.owners: list[tuple[str, str | None, str, int]] = []
        self.written = 0

    def add(self, model_id: str, sha: str | None, source: str, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.rows.extend(rows)
            self.owners.append((model_id, sha, source, len(rows)))
        if len(self.rows) >= _WRITE_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        columns = dict(zip(("key", "key_path", "position", "value", "value_type", "value_num",
                            "truncated"), map(list, zip(*self.rows))))
        for i, name in enumerate(("model_id", "sha", "source")):
            columns[name] = [owner[i] for owner in self.owners for _ in range(owner[3])]
        self.writer.write_table(pa.Table.from_pydict(columns, schema=CONFIG_FEATURES_SCHEMA))
        self.written += len(self.rows)
        self.rows, self.owners = [], []

    def close(self) -> int:
        """Write what is left; the number of rows written."""
        self.flush()
        self.writer.close()
        return self.written


_DECLARED_TABLES = {
    "model_tags": _strings("model_id", "tag", "kind", "value", "relation"),
    "model_files": _strings("model_id", "path", "extension", "kind"),
    "model_parents": _strings("model_id", "parent_id", "relation", "source"),
    "model_fields": _strings("model_id", "field", "declared_value", "declared_source"),
}


def declare(model: dict[str, Any], out: dict[str, _TableWriter]) -> None:
    """Add one ``hub_models`` row's tags, files, parents and five fields to ``out``."""
    model_id = model["id"]
    tags = model["tags"] or []
    for tag in dict.fromkeys(tags):
        if tag is not None and _trim(tag):
            out["model_tags"].add(model_id, tag, *_tag_row(tag, model["library_name"]))
    for path in dict.fromkeys(model["siblings"] or []):
        if path is not None and _trim(path):
            out["model_files"].add(model_id, path, *_file_row(path))
    card = orjson.loads(model["card_data"]) if model["card_data"] else {}
    parents = declared_parents(tags, card)
    for p in parents:
        out["model_parents"].add(model_id, p.parent_id, p.relation, p.source)
    for name, (value, source) in declared_fields(model, card, parents).items():
        out["model_fields"].add(model_id, name, value, source)


def flatten_models(work: Path, settings: Settings) -> dict[str, Any]:
    """Stage 2: ``hub_models`` -> config features, tags, files, parents and declared fields.

    Args:
        work: the work folder (reads ``hub_models.parquet``).
        settings: ``settings.flatten`` limits.

    Returns:
        ``items`` (configs flattened), the configs with rejects and the rows of every
        table written.
    """
    columns = HUB_SCHEMA.names
    features = _FeatureWriter(work / "config_features.parquet")
    out = {name: _TableWriter(work / f"{name}.parquet", schema)
           for name, schema in _DECLARED_TABLES.items()}
    configs = with_rejects = 0
    with _gc_paused():
        for values in _rows(work / "hub_models.parquet", columns):
            model = dict(zip(columns, values))
            text, source = config_source(model["config_json"], model["config"])
            if text is not None:
                configs += 1
                result = flatten_config(text, settings.flatten)
                features.add(model["id"], model["sha"], source, result.rows)
                with_rejects += bool(result.rejects)
            declare(model, out)
    counts = {name: writer.close() for name, writer in out.items()}
    return {"items": configs, "unit": "configs", "configs_with_rejects": with_rejects,
            "config_features": features.close(), **counts}


# ------------------------------------------------------------------ 3. train: tokens

def config_tokens(key: str, value: str | None, value_type: str, value_num: float | None
                  ) -> tuple[str, ...]:
    """The tokens of one ``config_features`` row (features.py: ``config_key:``,
    ``config:<key>=<value>`` or ``~2^<e>``, ``architecture:``, ``architecture_head:``)."""
    name = _DIGIT_SEGMENTS.sub(r"\1#", key.lower())
    if value_type in ("int", "float") and value_num is not None:
        if value_type == "int" and abs(value_num) <= EXACT_INT_LIMIT:
            suffix: str | None = f"={int(value_num)}"
        elif value_num == 0:
            suffix = "=0"
        else:
            exponent = math.floor(math.log(abs(value_num)) / _LOG2)
            suffix = f"~2^{exponent}" if value_num > 0 else f"~-2^{exponent}"
    elif value_type in ("object", "list"):
        suffix = None
    elif value is None:
        suffix = "=null"
    else:
        suffix = "=" + value.strip(" ").lower()[:MAX_VALUE_CHARS]
    tokens = [f"config_key:{name}"]
    if suffix is not None:
        tokens.append(f"config:{name}{suffix}")
    if key.lower() == "architectures" and value is not None:
        found = _ARCHITECTURE.match(value)
        if found and found.group(1):
            tokens.append(f"architecture:{found.group(1).lower()}")
            if found.group(2):
                tokens.append(f"architecture_head:{found.group(2).lower()}")
    return tuple(tokens)


@functools.lru_cache(maxsize=1 << 16)
def _tag_tokens(tag: str, kind: str | None, value: str, relation: str | None,
                model_type: str | None) -> tuple[str, ...]:
    value = value.strip(" ").lower()
    if model_type is not None and tag.strip(" ").lower() == model_type:
        tokens = [f"tag:model_type:{value}"]
    else:
        tokens = [f"tag:{(kind or 'other').lower()}:{value}"]
    if relation is not None:
        tokens.append(f"tag:base_model_relation:{relation.lower()}")
    return tuple(tokens)


@functools.lru_cache(maxsize=1 << 16)
def _file_tokens(path: str, extension: str | None, kind: str) -> tuple[str, ...]:
    tokens = [f"file:{_DIGITS.sub('#', path.strip(' ').lower())}", f"file_kind:{kind.lower()}"]
    if extension is not None:
        tokens.append(f"file_ext:{extension.lower()}")
    return tuple(tokens)


def repo_tokens(model_id: str) -> list[str]:
    """``author:<owner>`` and ``name:<word>`` tokens (words and their digit-less stems)."""
    tokens = [f"author:{model_id.split('/', 1)[0].lower()}"] if "/" in model_id else []
    name = model_id.rsplit("/", 1)[-1].lower()
    words = [w for w in _NAME_SPLIT.split(name) if len(w) > 1]
    stems = [s for s in (_TRAILING_DIGITS.sub("", w) for w in words) if len(s) > 1]
    tokens.extend(f"name:{w}" for w in dict.fromkeys(words + stems))
    return tokens


class _Vocabulary:
    """Token -> column number, numbered in order of first sight."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def ids(self, tokens: Iterable[str]) -> list[int]:
        index = self.index
        return [index.setdefault(token, len(index)) for token in tokens]


@dataclass
class TokenMatrix:
    """Every model's token bag (leaking tokens still in) as a binary sparse matrix.

    Attributes:
        ids: the model of each row, in ``hub_models`` order.
        matrix: CSR, 1.0 where the model has the token.
        vocabulary: the token of each column. Columns are in sorted token order, so a
            row's tokens come in the order ``features.model_features`` sorts them.
        architectures: per row, the names of its ``architecture:`` tokens normalised by
            ``name_match.normalise``, in token order (what the name match reads).
    """

    ids: list[str]
    matrix: sparse.csr_matrix
    vocabulary: np.ndarray
    architectures: list[tuple[str, ...]]


def token_matrix(work: Path) -> TokenMatrix:
    """The token bags of :mod:`semfin_spark.features` for every model, as a matrix.

    Reads ``hub_models`` (ids), ``config_features``, ``model_tags``, ``model_files`` (in
    pieces) and the declared ``model_type`` of ``model_fields``.

    Implementation details:
        The matrix is what ``CountVectorizer(binary=True)`` fitted on the bags would give
        (every token; the fields choose their columns), built from token numbers in two
        ``array('i')`` (row, column) so that no Python list of tokens per model is ever
        held; each distinct config row, tag and file is turned into tokens once.
    """
    (ids,) = _columns(work / "hub_models.parquet", ["id"])
    position = {model_id: i for i, model_id in enumerate(ids)}
    vocabulary = _Vocabulary()
    rows, cols = array("i"), array("i")

    def add(row: int, columns: list[int]) -> None:
        rows.extend([row] * len(columns))
        cols.extend(columns)

    config_columns: dict[tuple[Any, ...], list[int]] = {}
    with _gc_paused():
        for row, model_id in enumerate(ids):
            add(row, vocabulary.ids(repo_tokens(model_id)))
        for model_id, *config_row in _rows(work / "config_features.parquet",
                                           ["model_id", "key", "value", "value_type", "value_num"]):
            key = tuple(config_row)
            if key[0] is None:
                continue
            if key not in config_columns:
                config_columns[key] = vocabulary.ids(config_tokens(*key))
            add(position[model_id], config_columns[key])
        model_types = {m: _lower_or_none(v) for m, f, v in _rows(
            work / "model_fields.parquet", ["model_id", "field", "declared_value"])
            if f == "model_type" and v is not None}
        for model_id, tag, kind, value, relation in _rows(
                work / "model_tags.parquet", ["model_id", "tag", "kind", "value", "relation"]):
            add(position[model_id], vocabulary.ids(
                _tag_tokens(tag, kind, value, relation, model_types.get(model_id))))
        for model_id, path, extension, kind in _rows(
                work / "model_files.parquet", ["model_id", "path", "extension", "kind"]):
            add(position[model_id], vocabulary.ids(_file_tokens(path, extension, kind)))
    tokens = np.array(list(vocabulary.index), dtype=object)
    order = np.argsort(tokens, kind="stable")
    column = np.empty(len(tokens), np.intc)
    column[order] = np.arange(len(tokens), dtype=np.intc)
    matrix = sparse.csr_matrix(
        (np.ones(len(cols)), (np.frombuffer(rows, np.intc), column[np.frombuffer(cols, np.intc)])),
        shape=(len(ids), len(tokens)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0  # a token twice in a bag (two config rows) is still one token
    return TokenMatrix(ids, matrix, tokens[order], _architectures(matrix, tokens[order]))


def _architectures(matrix: sparse.csr_matrix, vocabulary: np.ndarray) -> list[tuple[str, ...]]:
    columns = np.flatnonzero(np.fromiter((t.startswith(ARCHITECTURE_PREFIX) for t in vocabulary),
                                         bool, len(vocabulary)))
    names = [normalise(t[len(ARCHITECTURE_PREFIX):]) for t in vocabulary[columns]]
    sub = matrix[:, columns].tocsr()
    sub.sort_indices()
    return [tuple(names[j] for j in sub.indices[sub.indptr[i]:sub.indptr[i + 1]])
            for i in range(sub.shape[0])]


# ------------------------------------------------------------------ 3. train: classifiers

@dataclass
class NameRule:
    """The fitted name match of :mod:`semfin_spark.name_match`: architecture -> label."""

    labels: dict[str, str]
    confidence: dict[str, float]

    def match(self, names: tuple[str, ...]) -> tuple[str, float] | None:
        """Label and confidence of the first of a model's architecture names it knows."""
        for name in names:
            if name in self.labels:
                return self.labels[name], self.confidence[name]
        return None


_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.\- ]{1,100}$")


def fit_name_rule(architectures: list[tuple[str, ...]], labels: list[str]) -> NameRule | None:
    """:func:`semfin_spark.name_match.fit_name_match` in plain Python.

    Args:
        architectures: per training model, its normalised architecture names.
        labels: its declared value.
    """
    by_name: dict[str, str] = {}
    for label, _ in sorted(Counter(labels).items(), key=lambda kv: (-kv[1], kv[0])):
        key = normalise(label)
        if key and _SAFE_LABEL.match(label) and key not in by_name:
            by_name[key] = label
    if not by_name:
        return None
    seen: Counter[str] = Counter()
    right: Counter[str] = Counter()
    for names, label in zip(architectures, labels):
        for name in set(names) & by_name.keys():
            seen[name] += 1
            right[name] += by_name[name] == label
    total = sum(seen.values())
    prior = sum(right.values()) / total if total else MIN_PRECISION
    rule = NameRule({}, {})
    for key, label in by_name.items():
        n, k = seen[key], right[key]
        if n and k / n < MIN_PRECISION:
            continue
        rule.labels[key] = label
        rule.confidence[key] = round((k + PRIOR_MODELS * prior) / (n + PRIOR_MODELS), 6)
    return rule if rule.labels else None


def _estimator(family: str, n_fit: int, seed: int) -> Any:
    if family == "naive_bayes":
        return MultinomialNB(alpha=NB_SMOOTHING)
    if family == "logistic_regression":
        # Spark minimises mean loss + regParam/2 |w|^2; scikit-learn C * sum loss + |w|^2 / 2.
        return LogisticRegression(C=1.0 / (LR_REG_PARAM * max(n_fit, 1)), solver="lbfgs",
                                  max_iter=LR_MAX_ITER)
    if family == "random_forest":
        return RandomForestClassifier(n_estimators=RF_TREES, max_depth=RF_DEPTH,
                                      max_features="sqrt", max_samples=0.8, random_state=seed)
    raise ValueError(f"unknown classifier family {family!r}; choose from {', '.join(FAMILIES)}")


@dataclass
class FieldModel:
    """A fitted field classifier.

    Attributes:
        field: the field it predicts.
        family: the classifier family that won on validation.
        columns: the columns of :class:`TokenMatrix` it reads (its vocabulary).
        classifier: the fitted scikit-learn classifier.
        name_rule: the name match (``model_type``), or None.
        n_train: labelled models it was refitted on.
        validation: per family tried, accuracy, log loss and size of the hold-out.
        seconds: wall time of validation and refit.
    """

    field: str
    family: str
    columns: np.ndarray
    classifier: Any
    name_rule: NameRule | None
    n_train: int
    validation: dict[str, dict[str, float]]
    seconds: float

    def predict(self, matrix: sparse.csr_matrix, architectures: list[tuple[str, ...]]
                ) -> tuple[list[str], np.ndarray]:
        """Labels and confidences of the rows of ``matrix`` (already cut to
        :attr:`columns`): the most probable real class (never the pooled one) and its
        probability; the name rule's answer where it has one."""
        labels, confidence = _most_probable(self.classifier, matrix)
        if self.name_rule is not None:
            for i, names in enumerate(architectures):
                found = self.name_rule.match(names)
                if found:
                    labels[i], confidence[i] = found
        return labels, confidence


class _Constant:
    """The classifier of a training set with one class: that class, probability 1."""

    def __init__(self, label: str) -> None:
        self.classes_ = np.array([label], dtype=object)

    def predict_proba(self, matrix: Any) -> np.ndarray:
        return np.ones((matrix.shape[0], 1))


def _fit(family: str, matrix: sparse.csr_matrix, y: list[str], seed: int) -> Any:
    if len(set(y)) < 2:
        return _Constant(y[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the project's iteration budget
        return _estimator(family, matrix.shape[0], seed).fit(matrix, y)


def _most_probable(classifier: Any, matrix: sparse.csr_matrix) -> tuple[list[str], np.ndarray]:
    proba = classifier.predict_proba(matrix)
    classes = [str(c) for c in classifier.classes_]
    ranked = proba.copy()
    if POOLED_CLASS in classes and len(classes) > 1:
        ranked[:, classes.index(POOLED_CLASS)] = -1.0
    best = ranked.argmax(axis=1)
    return [classes[i] for i in best], proba[np.arange(len(best)), best]


def _columns_for(matrix: sparse.csr_matrix, rows: np.ndarray, allowed: np.ndarray,
                 min_df: int, max_features: int) -> np.ndarray:
    """The vocabulary a binary ``CountVectorizer(min_df, max_features)`` fitted on
    ``rows`` would keep, among the ``allowed`` columns: tokens in at least ``min_df`` of
    the rows, the ``max_features`` most frequent."""
    df = np.asarray(matrix[rows].sum(axis=0)).ravel()
    keep = np.flatnonzero(allowed & (df >= min_df))
    if len(keep) > max_features:
        keep = np.sort(keep[np.argsort(-df[keep], kind="stable")[:max_features]])
    return keep


def _log_loss(classifier: Any, matrix: sparse.csr_matrix, truth: list[str]) -> float:
    proba = classifier.predict_proba(matrix)
    index = {c: i for i, c in enumerate(classifier.classes_)}
    p = np.array([proba[r, index[t]] if t in index else 0.0 for r, t in enumerate(truth)])
    return round(float(np.mean(-np.log(np.maximum(p, LOG_LOSS_FLOOR)))), 6) if len(p) else math.nan


def _validate(name: str, features: TokenMatrix, fit_rows: np.ndarray, val_rows: np.ndarray,
              fit_y: list[str], fit_labels: list[str], val_y: list[str], val_labels: list[str],
              columns: np.ndarray, settings: Settings, seed: int) -> dict[str, dict[str, float]]:
    """Fit each family of ``train.classifiers`` on the fit rows, score it on the others."""
    fit_x = features.matrix[fit_rows][:, columns]
    val_x = features.matrix[val_rows][:, columns]
    rule = (fit_name_rule([features.architectures[r] for r in fit_rows], fit_labels)
            if name in NAME_MATCH_FIELDS else None)
    validation: dict[str, dict[str, float]] = {}
    for family in [f for f in FAMILIES if f in settings.train.classifiers]:
        clf = _fit(family, fit_x, fit_y, seed)
        model = FieldModel(name, family, columns, clf, rule, 0, {}, 0.0)
        predicted, _ = model.predict(val_x, [features.architectures[r] for r in val_rows])
        correct = sum(p == truth for p, truth in zip(predicted, val_labels))
        validation[family] = {"accuracy": round(correct / max(len(val_rows), 1), 6),
                              "n": int(len(val_rows)), "log_loss": _log_loss(clf, val_x, val_y)}
    return validation


def fit_field(name: str, features: TokenMatrix, rows: np.ndarray, labels: list[str],
              settings: Settings, seed: int = 0) -> FieldModel:
    """Fit one field: validate every family on a hold-out, refit the best on all labels.

    Args:
        name: the field.
        features: every model's tokens.
        rows: the rows of the labelled models; ``labels`` their declared values.
        settings: ``train.classifiers``, ``min_class_support``, ``min_feature_df``,
            ``max_features``.
        seed: seeds the hold-out and the random forest.

    Returns:
        The refitted :class:`FieldModel`. As in the project, labels rarer than
        ``train.min_class_support`` are pooled into ``__other__`` (never predicted), a
        pooled validation model counts as an error unless the name match gets it, the
        winner has the best validation accuracy, then the lower log loss, then comes
        first in ``train.FAMILIES``.
    """
    started = time.perf_counter()
    t = settings.train
    rule = LEAKAGE_RULES[name]
    allowed = ~np.fromiter((rule.leaks(tok) for tok in features.vocabulary), bool,
                           len(features.vocabulary))
    pooled = {c for c, n in Counter(labels).items() if n < t.min_class_support}
    y = [POOLED_CLASS if label in pooled else label for label in labels]
    held = np.array([_held_out(features.ids[r], seed + 7919, VALIDATION_FRACTION) for r in rows])
    sample = (np.array([_held_out(features.ids[r], seed + 104729, VALIDATION_MAX_MODELS / len(rows))
                        for r in rows]) if len(rows) > VALIDATION_MAX_MODELS
              else np.ones(len(rows), bool))
    fit_at, val_at = np.flatnonzero(~held & sample), np.flatnonzero(held & sample)
    validation = _validate(
        name, features, rows[fit_at], rows[val_at], [y[i] for i in fit_at],
        [labels[i] for i in fit_at], [y[i] for i in val_at], [labels[i] for i in val_at],
        _columns_for(features.matrix, rows[fit_at], allowed, t.min_feature_df, t.max_features),
        settings, seed)
    best = max(validation, key=lambda f: (validation[f]["accuracy"], -validation[f]["log_loss"],
                                          -FAMILIES.index(f)))
    columns = _columns_for(features.matrix, rows, allowed, t.min_feature_df, t.max_features)
    clf = _fit(best, features.matrix[rows][:, columns], y, seed)
    name_rule = (fit_name_rule([features.architectures[r] for r in rows], labels)
                 if name in NAME_MATCH_FIELDS else None)
    return FieldModel(name, best, columns, clf, name_rule, len(rows), validation,
                      round(time.perf_counter() - started, 3))


def train_fields(work: Path, settings: Settings, seed: int = 0) -> dict[str, Any]:
    """Stage 3: token bags, then one classifier per field with enough labels.

    Writes ``features.npz`` and ``features.pkl`` (the token matrix, its ids, vocabulary and
    architecture names: what the impute stage scores) and ``field_models.pkl``.

    Returns:
        ``items`` (labelled models trained on, all fields), per field the family, training
        models, classes, vocabulary size and validation figures; the fields skipped.
    """
    features = token_matrix(work)
    sparse.save_npz(work / "features.npz", features.matrix, compressed=False)
    with open(work / "features.pkl", "wb") as fh:
        pickle.dump({"ids": features.ids, "vocabulary": features.vocabulary,
                     "architectures": features.architectures}, fh)
    position = {model_id: i for i, model_id in enumerate(features.ids)}
    declared: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for model_id, name, value in _rows(work / "model_fields.parquet",
                                       ["model_id", "field", "declared_value"]):
        if value is not None and _trim(value) and value not in EXCLUDED_LABELS.get(name, ()):
            declared[name].append((position[model_id], value))
    fitted: dict[str, FieldModel] = {}
    skipped: dict[str, str] = {}
    for name in settings.train.fields:
        labelled = declared.get(name, [])
        if len(labelled) < settings.train.min_labels:
            skipped[name] = f"{len(labelled)} labelled models, fewer than train.min_labels"
            continue
        fitted[name] = fit_field(name, features, np.array([r for r, _ in labelled]),
                                 [v for _, v in labelled], settings, seed)
    with open(work / "field_models.pkl", "wb") as fh:
        pickle.dump(fitted, fh)
    return {"items": sum(f.n_train for f in fitted.values()), "unit": "labels",
            "tokens": features.matrix.nnz, "vocabulary": len(features.vocabulary),
            "fields": {name: {"family": f.family, "n_train": f.n_train,
                              "classes": len(f.classifier.classes_),
                              "vocabulary": len(f.columns), "fit_s": f.seconds,
                              "validation": f.validation,
                              "accuracy": f.validation[f.family]["accuracy"]}
                       for name, f in fitted.items()},
            "skipped": skipped}


# ------------------------------------------------------------------ 4. impute

def impute_fields(work: Path, settings: Settings) -> dict[str, Any]:
    """Stage 4: score every missing value; keep those at or above the field's threshold.

    Reads ``features.npz``/``features.pkl``, ``field_models.pkl``, ``model_fields`` and
    ``model_parents``; writes ``imputed.parquet`` (``model_id, field, imputed_value,
    imputed_confidence``; the value is null below the threshold, the confidence is kept).

    Returns:
        ``items`` (rows scored, all fields) and per field ``scored``, ``imputed``,
        ``below_threshold`` and the threshold.
    """
    matrix = sparse.load_npz(work / "features.npz").tocsr()
    with open(work / "features.pkl", "rb") as fh:
        stored = pickle.load(fh)
    with open(work / "field_models.pkl", "rb") as fh:
        fitted: dict[str, FieldModel] = pickle.load(fh)
    position = {model_id: i for i, model_id in enumerate(stored["ids"])}
    missing: dict[str, list[str]] = defaultdict(list)
    declared: dict[str, set[str]] = defaultdict(set)
    for model_id, name, value in _rows(work / "model_fields.parquet",
                                       ["model_id", "field", "declared_value"]):
        if value is None:
            missing[name].append(model_id)
        elif _trim(value) and value not in EXCLUDED_LABELS.get(name, ()):
            declared[name].add(model_id)
    parents: dict[str, set[str]] = defaultdict(set)
    children: dict[str, set[str]] = defaultdict(set)
    for c, p in _rows(work / "model_parents.parquet", ["model_id", "parent_id"]):
        if c != p:
            parents[c].add(p)
            children[p].add(c)
    missing["reuse_method"] = [m for m in missing["reuse_method"] if m in parents]
    # Per field, the parents with a child that declares it: a missing model's sibling
    # declares the field exactly when one of its parents is there (the model itself does
    # not declare it), without building each model's sibling set (a base model's
    # thousands of children would each list all the others).
    declaring_parents = {name: {p for m in ids for p in parents.get(m, ())}
                         for name, ids in declared.items()}

    def in_undeclared_family(model_id: str, name: str) -> bool:
        """Lineage, and no parent, child or sibling declaring the field (impute.undeclared_family_threshold)."""
        up, down = parents.get(model_id, set()), children.get(model_id, set())
        if not (up or down):
            return False
        known = declared.get(name, set())
        return not ((up | down) & known or up & declaring_parents.get(name, set()))

    out = _TableWriter(work / "imputed.parquet", pa.schema([
        ("model_id", pa.string()), ("field", pa.string()), ("imputed_value", pa.string()),
        ("imputed_confidence", pa.float64())]))
    figures: dict[str, dict[str, Any]] = {}
    # A model without a config.json, or in a family that declares nothing, may need a
    # higher threshold (impute.configless_threshold, impute.undeclared_family_threshold).
    config_columns = [i for i, token in enumerate(stored["vocabulary"]) if names_config(token)]
    with_config = np.asarray(matrix[:, config_columns].sum(axis=1)).ravel() > 0
    for name, model in fitted.items():
        threshold = settings.impute.threshold(name)
        configless = settings.impute.threshold(name, configless=True)
        todo = missing.get(name, [])
        rows = np.array([position[m] for m in todo], dtype=np.intp)
        labels, confidence = (model.predict(matrix[rows][:, model.columns],
                                            [stored["architectures"][r] for r in rows])
                              if len(rows) else ([], []))
        imputed = 0
        for row, model_id, label, conf in zip(rows, todo, labels, confidence):
            bar = settings.impute.threshold(name, configless=not with_config[row],
                                            undeclared_family=in_undeclared_family(model_id, name))
            usable = bool(label != POOLED_CLASS and conf >= bar)
            imputed += usable
            out.add(model_id, name, label if usable else None, float(conf))
        figures[name] = {"scored": len(todo), "imputed": imputed,
                         "below_threshold": len(todo) - imputed, "threshold": threshold,
                         "configless_threshold": configless}
    out.close()
    return {"items": sum(f["scored"] for f in figures.values()), "unit": "rows", "fields": figures}


# ------------------------------------------------------------------ 5. lineage

@dataclass
class _Chain:
    path: list[str]
    edges: list[tuple[str | None, str | None]]  # (declared relation, relation with imputed)
    truncated: bool


def root_to_leaf_paths(graph: nx.DiGraph, max_depth: int, max_fanout: int) -> Iterator[_Chain]:
    """Every root-to-leaf path of a child -> parent graph, root first (graph.py's rules).

    A root has a child and no parent; a path ends at a leaf (no child), or truncated: after
    ``max_depth`` edges, at a node with more than ``max_fanout`` children, or at a node all
    of whose children are already on the path.
    """
    roots = [n for n in graph if graph.in_degree(n) and not graph.out_degree(n)]
    for root in roots:
        stack = [(root, [root], [])]
        while stack:
            node, path, edges = stack.pop()
            kids = graph.pred[node]
            if not kids:
                yield _Chain(path, edges, False)
                continue
            if len(path) - 1 >= max_depth or len(kids) > max_fanout:
                yield _Chain(path, edges, True)
                continue
            onward = [(kid, data) for kid, data in kids.items() if kid not in path]
            if not onward:
                yield _Chain(path, edges, True)
            for kid, data in onward:
                stack.append((kid, path + [kid], edges + [(data["declared"], data["relation"])]))


@dataclass
class LineageGraph:
    """The lineage stage's inputs, read once.

    Attributes:
        graph: child -> parent edges (self-loops dropped) with ``declared`` (the declared
            relation, else the child's declared reuse method) and ``relation`` (that, else
            the imputed one); every model is a node, edges or not.
        external: parents that are not models of ``hub_models``.
        self_loops: declared (model, itself) rows dropped.
        licences: per variant (``declared``, ``with_imputed``), model -> licence id.
    """

    graph: nx.DiGraph
    external: set[str]
    self_loops: int
    licences: dict[str, dict[str, str]]


def read_lineage_graph(work: Path) -> LineageGraph:
    """Build the graph from ``hub_models``, ``model_parents``, ``model_fields``, ``imputed``."""
    (ids,) = _columns(work / "hub_models.parquet", ["id"])
    declared: dict[str, dict[str, str]] = defaultdict(dict)
    for model_id, name, value in _rows(work / "model_fields.parquet",
                                       ["model_id", "field", "declared_value"]):
        if value is not None and name in ("license", "reuse_method"):
            declared[name][model_id] = value
    imputed: dict[str, dict[str, str]] = defaultdict(dict)
    for model_id, name, value in _rows(work / "imputed.parquet",
                                       ["model_id", "field", "imputed_value"]):
        if value is not None:
            imputed[name][model_id] = value
    graph = nx.DiGraph()
    graph.add_nodes_from(ids)
    self_loops = 0
    for child, parent, relation in _rows(work / "model_parents.parquet",
                                         ["model_id", "parent_id", "relation"]):
        if child == parent:
            self_loops += 1
        elif not graph.has_edge(child, parent):
            known = relation or declared["reuse_method"].get(child)
            graph.add_edge(child, parent, declared=known,
                           relation=known or imputed["reuse_method"].get(child))
    known_ids = set(ids)
    return LineageGraph(graph, {n for n in graph if n not in known_ids}, self_loops,
                        {"declared": declared["license"],
                         "with_imputed": {**imputed["license"], **declared["license"]}})


def write_edges(lineage: LineageGraph, work: Path) -> int:
    """``lineage_edges.parquet``: child, parent, relation, its source, external parent."""
    rows = _TableWriter(work / "lineage_edges.parquet", pa.schema([
        ("child", pa.string()), ("parent", pa.string()), ("relation", pa.string()),
        ("relation_source", pa.string()), ("parent_external", pa.bool_())]))
    for child, parent, data in lineage.graph.edges(data=True):
        source = "declared" if data["declared"] else ("imputed" if data["relation"] else None)
        rows.add(child, parent, data["relation"], source, parent in lineage.external)
    return rows.close()


def components(lineage: LineageGraph, work: Path) -> dict[str, Any]:
    """Connected components (edges undirected) -> ``lineage_components.parquet``, each
    named by its smallest member; and the directed cycles (strongly connected components
    of more than one node)."""
    rows = _TableWriter(work / "lineage_components.parquet", pa.schema([
        ("model_id", pa.string()), ("component_id", pa.string()),
        ("component_size", pa.int64()), ("external", pa.bool_())]))
    sizes: list[int] = []
    isolated = 0
    for members in nx.weakly_connected_components(lineage.graph):
        smallest = min(members)
        sizes.append(len(members))
        isolated += len(members) == 1 and smallest not in lineage.external
        for node in members:
            rows.add(node, smallest, len(members), node in lineage.external)
    rows.close()
    cycles = [c for c in nx.strongly_connected_components(lineage.graph) if len(c) > 1]
    return {"components": sum(1 for s in sizes if s > 1),
            "largest_component": max((s for s in sizes if s > 1), default=0),
            "isolated_models": isolated,
            "cycles": {"nodes_on_cycles": sum(len(c) for c in cycles), "count": len(cycles)}}


def license_conflicts(lineage: LineageGraph, rules: Any, work: Path
                      ) -> dict[str, set[tuple[str, str]]]:
    """Per variant the (child, parent) edges whose licences the rules call a conflict;
    written to ``license_conflicts.parquet``."""
    verdict = functools.lru_cache(maxsize=None)(lambda p, c: rules.check(p, c).verdict)
    found: dict[str, set[tuple[str, str]]] = {v: set() for v in VARIANTS}
    rows = _TableWriter(work / "license_conflicts.parquet",
                        _strings("variant", "child", "parent", "child_license", "parent_license"))
    for variant in VARIANTS:
        lic = lineage.licences[variant]
        for child, parent in lineage.graph.edges():
            if verdict(lic.get(parent), lic.get(child)) == "conflict":
                found[variant].add((child, parent))
                rows.add(variant, child, parent, lic.get(child), lic.get(parent))
    rows.close()
    return found


_CHAIN_SCHEMA = pa.schema([
    ("variant", pa.string()), ("root", pa.string()), ("leaf", pa.string()),
    ("path", pa.list_(pa.string())), ("depth", pa.int32()), ("relations", pa.list_(pa.string())),
    ("pattern", pa.string()), ("licenses", pa.list_(pa.string())),
    ("license_pattern", pa.string()), ("truncated", pa.bool_()),
])


def chains(lineage: LineageGraph, conflicts: dict[str, set[tuple[str, str]]],
           max_depth: int, max_fanout: int, work: Path) -> dict[str, Any]:
    """Every root-to-leaf path, per variant its relations and licences ->
    ``lineage_chains.parquet``; the counts of complete chains and patterns."""
    rows = _TableWriter(work / "lineage_chains.parquet", _CHAIN_SCHEMA)
    paths = 0
    complete = {v: 0 for v in VARIANTS}
    licence_complete = {v: 0 for v in VARIANTS}
    incompatible = {v: 0 for v in VARIANTS}
    patterns: dict[str, set[str]] = {v: set() for v in VARIANTS}
    with _gc_paused():
        for chain in root_to_leaf_paths(lineage.graph, max_depth, max_fanout):
            paths += 1
            for i, variant in enumerate(VARIANTS):
                relations = [edge[i] for edge in chain.edges]
                licences = [lineage.licences[variant].get(node) for node in chain.path]
                pattern = _SEP.join(relations) if None not in relations else None
                licence_pattern = _SEP.join(licences) if None not in licences else None
                if pattern is not None:
                    complete[variant] += 1
                    patterns[variant].add(pattern)
                if licence_pattern is not None:
                    licence_complete[variant] += 1
                    steps = zip(chain.path[1:], chain.path[:-1])  # (child, parent)
                    incompatible[variant] += any(s in conflicts[variant] for s in steps)
                rows.add(variant, chain.path[0], chain.path[-1], chain.path, len(chain.path) - 1,
                         relations, pattern, licences, licence_pattern, chain.truncated)
    rows.close()
    new = patterns["with_imputed"] - patterns["declared"]
    return {
        "paths": paths,
        "chains": {"declared": complete["declared"], "with_imputed": complete["with_imputed"],
                   "expansion_pct": _pct_gain(complete["declared"], complete["with_imputed"])},
        "reuse_patterns": {"declared": len(patterns["declared"]),
                           "with_imputed": len(patterns["with_imputed"]),
                           "new": len(new), "new_examples": sorted(new)[:20]},
        "license_chains": {"declared": licence_complete["declared"],
                           "with_imputed": licence_complete["with_imputed"],
                           "expansion_pct": _pct_gain(licence_complete["declared"],
                                                      licence_complete["with_imputed"])},
        "incompatible_share": {v: (round(incompatible[v] / licence_complete[v], 4)
                                   if licence_complete[v] else None) for v in VARIANTS},
    }


def build_lineage(work: Path, settings: Settings) -> dict[str, Any]:
    """Stage 5: edges, components, cycles, licence conflicts and chains.

    Reads ``hub_models`` (ids), ``model_parents``, ``model_fields`` and ``imputed``; writes
    ``lineage_edges``, ``lineage_components``, ``license_conflicts`` and ``lineage_chains``
    (one row per path and variant).

    Returns:
        The report figures, named as the project's lineage report names them.
    """
    limits = settings.lineage
    rules = load_license_rules(settings.conf_file(limits.licenses_file))
    lineage = read_lineage_graph(work)
    edges = write_edges(lineage, work)
    figures = components(lineage, work)
    conflicts = license_conflicts(lineage, rules, work)
    figures.update(chains(lineage, conflicts, limits.max_depth, limits.max_fanout, work))
    return {"items": edges, "unit": "edges", "edges": edges, "self_loops": lineage.self_loops,
            **figures, "license_conflicts": {v: len(conflicts[v]) for v in VARIANTS}}


def _pct_gain(before: int, after: int) -> float | None:
    return round(100.0 * (after - before) / before, 2) if before else None


# ------------------------------------------------------------------ the run

def run_peer(snapshot_path: str | os.PathLike[str], work_dir: str | os.PathLike[str],
             settings: Settings, *, blas_threads: int | None = 1,
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the five stages on a snapshot file, each timed on its own.

    Args:
        snapshot_path: a snapshot file (JSON Lines, ``.gz`` too), e.g. from
            :func:`write_snapshot`.
        work_dir: folder for the stages' Parquet files (created; files are overwritten).
        settings: the project's settings (``flatten``, ``train``, ``impute``, ``lineage``).
        blas_threads: BLAS threads for the fits (None: the library's default, one per
            core). One by default: the peer is one process on one core, and a
            multi-threaded OpenBLAS on a busy machine spins (L-BFGS took 10x longer on
            two loaded cores).
        progress: where the one line per stage goes.

    Returns:
        ``{"stages": {stage: {"seconds", "peak_rss_mb", "items", "unit", ...figures}},
        "seconds", "peak_rss_mb", "figures"}``; ``figures`` gathers what the project's
        report can be compared with (components, paths, chains, accuracies, imputed counts).

    Examples:
        >>> report = run_peer("/tmp/hub.jsonl", "/tmp/peer", load_settings())   # doctest: +SKIP
        >>> report["stages"]["lineage"]["paths"]                                # doctest: +SKIP
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Callable[[], dict[str, Any]]] = {
        "ingest": lambda: ingest_snapshot(snapshot_path, work),
        "flatten": lambda: flatten_models(work, settings),
        "train": lambda: train_fields(work, settings, seed=0),
        "impute": lambda: impute_fields(work, settings),
        "lineage": lambda: build_lineage(work, settings),
    }
    stages: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        started = time.perf_counter()
        with threadpool_limits(blas_threads):
            figures = steps[name]()
        seconds = round(time.perf_counter() - started, 3)
        stages[name] = {"seconds": seconds, "peak_rss_mb": peak_rss_mb(), **figures}
        progress(f"peer {name}: {seconds:.2f} s, {figures['items']} {figures['unit']}")
    train, impute, lineage = stages["train"], stages["impute"], stages["lineage"]
    keep = ("edges", "self_loops", "components", "largest_component", "isolated_models", "cycles",
            "paths", "chains", "license_chains", "license_conflicts", "incompatible_share")
    return {
        "stages": stages,
        "seconds": round(sum(s["seconds"] for s in stages.values()), 3),
        "peak_rss_mb": peak_rss_mb(),
        "figures": {
            **{k: lineage[k] for k in keep},
            "validation_accuracy": {f: v["accuracy"] for f, v in train["fields"].items()},
            "imputed": {f: v["imputed"] for f, v in impute["fields"].items()},
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", help="snapshot file (JSON Lines, .gz too)")
    source.add_argument("--models", type=int, help="generate a Hub of this many models first")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated Hub")
    parser.add_argument("--work", required=True, help="folder for the stages' Parquet files")
    parser.add_argument("--out", help="JSON report (default: <work>/peer.json)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads for the fits (0: one per core)")
    args = parser.parse_args()

    settings = load_settings()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    snapshot = args.snapshot
    generated: dict[str, Any] = {}
    if snapshot is None:
        snapshot = str(work / f"hub-{args.models}-seed{args.seed}.jsonl")
        started = time.perf_counter()
        write_snapshot(snapshot, args.models, args.seed, settings.synthetic.block_size)
        generated = {"models": args.models, "seed": args.seed,
                     "block_size": settings.synthetic.block_size,
                     "seconds": round(time.perf_counter() - started, 3)}
        print(f"peer generate: {generated['seconds']:.2f} s, {args.models} models -> {snapshot}")
    report = run_peer(snapshot, work, settings, blas_threads=args.blas_threads or None)
    out = Path(args.out) if args.out else work / "peer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"snapshot": str(snapshot), "generated": generated,
                               "cpus": os.cpu_count(), **report}, indent=2, default=str))
    print(f"peer total: {report['seconds']:.2f} s, peak RSS {report['peak_rss_mb']:.0f} MB; "
          f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
