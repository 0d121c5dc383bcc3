"""The flatten stage: config.json to key/value rows, and the declared metadata tables.

For every model to (re)process, ``hub_models`` becomes:

* ``config_features``: the model's config flattened by :func:`flatten_config`, one row per
  (model, key path): the full ``config_json`` when it was crawled, else the Hub's summary
  ``config`` (``source`` tells which);
* ``flatten_rejects``: configs that could not be flattened, whole or in part, one row per
  (model, source, reason);
* ``model_tags``, ``model_files``, ``model_fields``, ``model_parents``: the declared
  metadata, built by :mod:`semfin_spark.declared`;
* ``flatten_state``: the ``change_key`` (sha and a hash of the inputs) each model was flattened at.

How a config is flattened (:func:`flatten_config`):
    * Nested objects become dotted paths: ``key`` has no list positions
      (``text_config.hidden_size``, ``layers.type``); ``key_path`` has them
      (``layers[2].type``) and is unique per model; ``position`` is the index in the
      innermost enclosing list (null outside lists).
    * A list of scalars gives one row per element under the list's key; lists of objects
      and nested lists recurse. An empty object or list gives one row with ``value_type``
      ``object``/``list`` and a null value, so the key is not lost. An empty top-level
      object gives no row.
    * ``value`` is text: strings as they are, ``true``/``false``/``null``, integers in
      decimal, floats as Python's shortest round-trip spelling (``1e-05``, ``0.02``,
      ``1.0``). ``value_num`` is the number (bool as 0/1) or null. Integers beyond 64
      bits are read as floats (orjson's reading); one beyond a double's range keeps its
      digits with a null ``value_num`` (and ``non_finite_number``).
    * Keys containing dots or brackets are kept verbatim (``{"a.b": 1}`` gives key
      ``a.b``). Should two paths then spell the same ``key_path`` (``{"a.b": 1, "a": {"b":
      2}}``), the first in document order is kept and ``key_collision`` is recorded.

Reject reasons (``flatten_rejects.reason``); "whole" means the config gives no row, "part"
means its rows are kept and the reject says what was lost or suspect:
    * ``too_large`` (whole): more than ``flatten.max_config_bytes`` UTF-8 bytes; not parsed.
    * ``binary`` (whole): a NUL character, or unparsable text of which over 10% is control
      characters or U+FFFD replacement characters.
    * ``invalid_json`` (whole): neither orjson nor the json module can parse it.
    * ``not_an_object`` (whole): valid JSON whose top level is not an object.
    * ``too_deep`` (whole): nesting deeper than ``flatten.max_depth`` (the top-level
      object is depth 1; each nested object or list adds 1).
    * ``invalid_utf8`` (part): bytes that are not UTF-8 (decoded with U+FFFD replacement),
      U+FFFD characters in text (what Spark makes of bad bytes) or lone surrogates.
    * ``non_finite_number`` (part): ``NaN``, ``Infinity``, ``-Infinity`` or a number
      overflowing a double; kept as a ``float`` row with that spelling and a null
      ``value_num``.
    * ``duplicate_key`` (part): an object repeats a key; the last value wins, as in most
      JSON readers.
    * ``too_many_keys`` (part): more than ``flatten.max_keys`` rows; the first
      ``max_keys`` in document order are kept.
    * ``list_too_long`` (part): a list longer than ``flatten.max_list_items``; its first
      ``max_list_items`` elements are kept.
    * ``key_collision`` (part): see above.

    Strings longer than ``flatten.max_string_chars`` are cut and end with
    ``…[truncated N chars]`` (``truncated`` is true); that is not a reject.

Incremental runs: a model is reprocessed when it is new or its ``change_key`` differs from
``flatten_state``'s (``full=True``: every model). For each output table the rows of the
reprocessed models are replaced in one Delta commit (:meth:`DeltaStore.replace_keys`), and
``flatten_state`` is written last: a run killed half-way leaves every table at a whole
version, and the next run reprocesses the same models and converges. Models that left
``hub_models`` have their rows removed the same way. ``model_fields`` rows of reprocessed
models are replaced whole: their imputed columns are dropped, since the model changed and
the impute stage redoes them.

Implementation details:
    The driver reads ``hub_models`` and ``flatten_state`` lazily, decides which models to
    reprocess with a join, and commits one Delta version per table. The executors do the
    work: :func:`flatten_batches` runs in ``mapInArrow`` over Arrow batches of (id, sha,
    config_json, config), calls :func:`flatten_config` per config and emits feature and
    reject rows in one schema (:data:`FLATTENED_SCHEMA`, ``kind`` tells them apart). The
    feature rows go straight into ``config_features`` (nothing cached: the counts are
    observed while writing); only when that pass saw rejects are the configs parsed again
    for them. The declared tables are built with DataFrame functions. Only counts reach
    the driver.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

import orjson
from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from semfin_spark import schemas
from semfin_spark.delta import DeltaStore
from semfin_spark.schemas import (
    CONFIG_FEATURES, FLATTEN_REJECTS, FLATTEN_STATE, HUB_MODELS, IMPUTE_COLUMNS, MODEL_FIELDS, MODEL_FILES,
    MODEL_PARENTS, MODEL_TAGS, MODEL_TOKENS, Table,
)
from semfin_spark.features import token_bags
from semfin_spark.settings import FlattenSettings, Settings

ROW_COLUMNS = ("key", "key_path", "position", "value", "value_type", "value_num", "truncated")
"""The fields of each row tuple of :attr:`FlattenResult.rows`, in order."""

TRUNCATION_MARKER = "…[truncated {} chars]"
"""Appended to a string cut at ``flatten.max_string_chars``; ``{}`` is the number cut."""

WHOLE_REJECTS = frozenset({"too_large", "binary", "invalid_json", "not_an_object", "too_deep"})
"""Reasons after which a config gives no row at all."""

SOURCE_FULL, SOURCE_SUMMARY = "config_json", "config_summary"

_BINARY_SHARE = 0.10
_BINARY_SAMPLE = 4096
_DETAIL_MAX = 500
_OUTPUT_ROWS = 65_536


class FlattenReject(NamedTuple):
    """Why a config was rejected, whole or in part (``reason`` as in ``flatten_rejects``)."""

    reason: str
    detail: str


@dataclass
class FlattenResult:
    """The rows of one flattened config and what was rejected.

    Attributes:
        rows: one tuple per key path, fields as :data:`ROW_COLUMNS`, in document order.
        rejects: at most one :class:`FlattenReject` per reason.
    """

    rows: list[tuple[Any, ...]]
    rejects: list[FlattenReject] = field(default_factory=list)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The rows as dicts keyed by :data:`ROW_COLUMNS` (for tests and notebooks)."""
        return [dict(zip(ROW_COLUMNS, row)) for row in self.rows]

    @property
    def reasons(self) -> list[str]:
        """The reject reasons, in the order they were found."""
        return [r.reason for r in self.rejects]


# ------------------------------------------------------------------ one config

class _Stop(Exception):
    """Ends a walk early: a limit was hit."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class _NonFinite(str):
    """A number the json module read that is not a finite double, kept as its JSON text."""


class _HugeInt(str):
    """An integer the json module read that no double can hold, kept as its JSON text."""


class _Walk:
    """Rows of one parsed config, with what the duplicate-key check needs."""

    __slots__ = ("rows", "members", "odd_keys", "long_lists", "complete")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.members = 0
        self.odd_keys = False
        self.long_lists: list[tuple[str, int]] = []
        self.complete = True


def flatten_config(text: str | bytes, limits: FlattenSettings) -> FlattenResult:
    """Flatten one config.json into key-path rows; bad input gives rejects, never raises.

    Args:
        text: the config's JSON text (``bytes`` are decoded as UTF-8).
        limits: ``settings.flatten``: depth, rows, list and string lengths, size.

    Returns:
        A :class:`FlattenResult`: rows as :data:`ROW_COLUMNS` tuples and the rejects (see
        the module doc for the reasons and what each keeps).

    Examples:
        >>> limits = FlattenSettings()
        >>> r = flatten_config('{"architectures": ["BertModel"], "layer_norm_eps": 1E-5,'
        ...                    ' "text_config": {"hidden_size": 512, "tie": true}}', limits)
        >>> for row in r.rows: print(row)
        ('architectures', 'architectures[0]', 0, 'BertModel', 'string', None, False)
        ('layer_norm_eps', 'layer_norm_eps', None, '1e-05', 'float', 1e-05, False)
        ('text_config.hidden_size', 'text_config.hidden_size', None, '512', 'int', 512.0, False)
        ('text_config.tie', 'text_config.tie', None, 'true', 'bool', 1.0, False)
        >>> flatten_config('{"a": 1, "a": 2}', limits).as_dicts()[0]["value"], \\
        ...     flatten_config('{"a": 1, "a": 2}', limits).reasons
        ('2', ['duplicate_key'])
        >>> flatten_config('{"a": NaN}', limits).reasons
        ['non_finite_number']
        >>> flatten_config('[1, 2]', limits)
        FlattenResult(rows=[], rejects=[FlattenReject(reason='not_an_object', detail='top level is a list, not an object')])
    """
    rejects: dict[str, str] = {}
    if not isinstance(text, str):
        decoded = _decode_bytes(bytes(text), limits, rejects)
        if decoded is None:
            return _result([], rejects)
        text = decoded
    elif _too_large(text, limits.max_config_bytes):
        return _result([], {"too_large": _size_detail(text, limits)})
    elif "\x00" in text:
        return _result([], {"binary": "NUL character in the text"})
    elif "\ufffd" in text:
        _add(rejects, "invalid_utf8", f"{text.count(chr(0xFFFD))} U+FFFD replacement "
                                      "character(s): the bytes were not valid UTF-8")
    checked_duplicates = False
    try:
        root = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        root = _parse_slowly(text, str(exc), rejects)
        if root is None:
            return _result([], rejects)
        checked_duplicates = True
    if type(root) is not dict:
        return _result([], {"not_an_object": f"top level is {_kind(root)}, not an object"})
    walk = _Walk()
    try:
        _walk_object(root, "", "", None, 1, walk, limits)
    except _Stop as stop:
        if stop.reason in WHOLE_REJECTS:
            return _result([], {stop.reason: stop.detail})
        walk.complete = False
        _add(rejects, stop.reason, stop.detail)
    except RecursionError:
        return _result([], {"too_deep": "nesting too deep for the parser"})
    rows = walk.rows
    if len(rows) > limits.max_keys:
        walk.complete = False
        del rows[limits.max_keys:]
        rejects.setdefault("too_many_keys", _too_many_detail(limits))
    if walk.long_lists:
        walk.complete = False
        path, n = walk.long_lists[0]
        more = f" and {len(walk.long_lists) - 1} more list(s)" if len(walk.long_lists) > 1 else ""
        _add(rejects, "list_too_long", f"{path} has {n} items{more}; the first "
                                       f"{limits.max_list_items} are kept (flatten.max_list_items)")
    if not checked_duplicates and _may_have_duplicates(text, root, walk):
        duplicates = _duplicate_keys(text)
        if duplicates:
            _add(rejects, "duplicate_key", _duplicates_detail(duplicates))
    if walk.odd_keys:
        rows = _drop_collisions(rows, rejects)
    if checked_duplicates:
        rows = _without_surrogates(rows, rejects)
    return _result(rows, rejects)


def _walk_object(obj: dict, kp: str, pp: str, pos: int | None, depth: int, walk: _Walk,
                 limits: FlattenSettings) -> None:
    """Rows of an object's members. ``kp``/``pp``: key and key-path prefixes (``a.`` ...).

    Outside lists ``kp is pp``, so a member's key and key path are one string object.
    """
    if depth > limits.max_depth:
        raise _Stop("too_deep", f"nesting deeper than {limits.max_depth} (flatten.max_depth) "
                                f"at {pp[:-1] or '<top>'}")
    rows = walk.rows
    if len(rows) > limits.max_keys:
        raise _Stop("too_many_keys", _too_many_detail(limits))
    append = rows.append
    walk.members += len(obj)
    names = "".join(obj)
    if "." in names or "[" in names:
        walk.odd_keys = True
    same = kp is pp
    max_chars = limits.max_string_chars
    for k, v in obj.items():
        key = kp + k
        path = key if same else pp + k
        t = type(v)
        if t is str:
            if len(v) > max_chars:
                append((key, path, pos, _cut(v, max_chars), "string", None, True))
            else:
                append((key, path, pos, v, "string", None, False))
        elif t is int:
            append((key, path, pos, str(v), "int", float(v), False))
        elif t is float:
            append((key, path, pos, repr(v), "float", v, False))
        elif t is bool:
            append((key, path, pos, "true" if v else "false", "bool", 1.0 if v else 0.0, False))
        elif v is None:
            append((key, path, pos, "null", "null", None, False))
        elif t is dict:
            if v:
                prefix = key + "."
                _walk_object(v, prefix, prefix if same else path + ".", pos, depth + 1, walk, limits)
            else:
                append((key, path, pos, None, "object", None, False))
        elif t is list:
            _walk_list(v, key, path, pos, depth + 1, walk, limits)
        else:
            append(_other_row(v, key, path, pos))


def _walk_list(items: list, key: str, path: str, pos: int | None, depth: int, walk: _Walk,
               limits: FlattenSettings) -> None:
    """Rows of a list's elements, under the list's ``key``, positions in ``key_path``."""
    if depth > limits.max_depth:
        raise _Stop("too_deep", f"nesting deeper than {limits.max_depth} (flatten.max_depth) "
                                f"at {path}")
    rows = walk.rows
    if not items:
        rows.append((key, path, pos, None, "list", None, False))
        return
    if len(rows) > limits.max_keys:
        raise _Stop("too_many_keys", _too_many_detail(limits))
    if len(items) > limits.max_list_items:
        walk.long_lists.append((path, len(items)))
        items = items[: limits.max_list_items]
    append = rows.append
    max_chars = limits.max_string_chars
    for i, v in enumerate(items):
        p = f"{path}[{i}]"
        t = type(v)
        if t is str:
            if len(v) > max_chars:
                append((key, p, i, _cut(v, max_chars), "string", None, True))
            else:
                append((key, p, i, v, "string", None, False))
        elif t is int:
            append((key, p, i, str(v), "int", float(v), False))
        elif t is float:
            append((key, p, i, repr(v), "float", v, False))
        elif t is bool:
            append((key, p, i, "true" if v else "false", "bool", 1.0 if v else 0.0, False))
        elif v is None:
            append((key, p, i, "null", "null", None, False))
        elif t is dict:
            if v:
                _walk_object(v, key + ".", p + ".", i, depth + 1, walk, limits)
            else:
                append((key, p, i, None, "object", None, False))
        elif t is list:
            _walk_list(v, key, p, i, depth + 1, walk, limits)
        else:
            append(_other_row(v, key, p, i))


def _too_many_detail(limits: FlattenSettings) -> str:
    return (f"more than {limits.max_keys} rows; the first {limits.max_keys} in document "
            "order are kept (flatten.max_keys)")


def _cut(value: str, max_chars: int) -> str:
    return value[:max_chars] + TRUNCATION_MARKER.format(len(value) - max_chars)


def _other_row(value: Any, key: str, path: str, pos: int | None) -> tuple[Any, ...]:
    """Rows for values only the json-module fallback produces (non-finite, huge numbers)."""
    if isinstance(value, _NonFinite):
        return (key, path, pos, str(value), "float", None, False)
    if isinstance(value, _HugeInt):
        return (key, path, pos, str(value), "int", None, False)
    return (key, path, pos, str(value), "string", None, False)  # unreachable for JSON input


def _decode_bytes(raw: bytes, limits: FlattenSettings, rejects: dict[str, str]) -> str | None:
    if len(raw) > limits.max_config_bytes:
        rejects["too_large"] = (f"{len(raw)} bytes exceeds flatten.max_config_bytes="
                                f"{limits.max_config_bytes}")
        return None
    if b"\x00" in raw:
        rejects["binary"] = "NUL byte in the text"
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = raw.decode("utf-8", "replace")
        if _looks_binary(text):
            rejects["binary"] = f"not text: {exc}"[:_DETAIL_MAX]
            return None
        rejects["invalid_utf8"] = f"not valid UTF-8 ({exc}); decoded with U+FFFD replacement"[:_DETAIL_MAX]
        return text


def _too_large(text: str, max_bytes: int) -> bool:
    # A character is 1 to 4 UTF-8 bytes: encode only when the length cannot decide.
    if len(text) > max_bytes:
        return True
    if len(text) * 4 <= max_bytes:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > max_bytes


def _size_detail(text: str, limits: FlattenSettings) -> str:
    return (f"{len(text.encode('utf-8', 'surrogatepass'))} bytes exceeds "
            f"flatten.max_config_bytes={limits.max_config_bytes}")


def _looks_binary(text: str) -> bool:
    sample = text[:_BINARY_SAMPLE]
    bad = sum(1 for c in sample if c == "\ufffd" or (c < " " and c not in "\t\n\r"))
    return bad > _BINARY_SHARE * len(sample)


def _parse_slowly(text: str, orjson_error: str, rejects: dict[str, str]) -> Any:
    """The json module's reading of what orjson refused, or None (reject recorded).

    It accepts what orjson does not (NaN, Infinity, 1e400, lone surrogates) and reports
    duplicate keys on the way.
    """
    non_finite: list[str] = []
    duplicates: list[str] = []

    def constant(name: str) -> _NonFinite:
        non_finite.append(name)
        return _NonFinite(name)

    def number(spelling: str) -> float | _NonFinite:
        value = float(spelling)
        if value - value != 0:  # inf or nan
            non_finite.append(spelling)
            return _NonFinite(spelling)
        return value

    def integer(spelling: str) -> int | _HugeInt:
        # A double ends near 1.8e308; past that (and past Python's 4300-digit limit on
        # int()) the number stays text.
        if len(spelling) <= 308:
            return int(spelling)
        non_finite.append(f"{spelling[:12]}… ({len(spelling)} digits)")
        return _HugeInt(spelling)

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            duplicates.extend(_repeated(pairs))
        return obj

    try:
        root = json.loads(text, object_pairs_hook=members, parse_constant=constant,
                          parse_float=number, parse_int=integer)
    except RecursionError:
        rejects.clear()
        rejects["too_deep"] = "nesting too deep for the parser"
        return None
    except ValueError:
        rejects.clear()
        if _looks_binary(text):
            rejects["binary"] = "not text: over 10% control or replacement characters"
        else:
            rejects["invalid_json"] = orjson_error[:_DETAIL_MAX]
        return None
    if non_finite:
        shown = ", ".join(sorted(set(non_finite))[:5])
        _add(rejects, "non_finite_number",
             f"{len(non_finite)} non-finite number(s) ({shown}); kept as text, value_num null")
    if duplicates:
        _add(rejects, "duplicate_key", _duplicates_detail(duplicates))
    return root


def _may_have_duplicates(text: str, root: dict, walk: _Walk) -> bool:
    """Cheap test: False only when the text certainly has no repeated key.

    Every object member has one ``:`` in the text, so a text with as many ``:`` as the
    parsed objects have members repeats no key. Otherwise the ``:`` inside keys and
    strings are subtracted (exact when no ``\\u003a`` escape hides one).
    """
    colons = text.count(":")
    if walk.complete and colons == walk.members:
        return False
    if "\\u003" in text:
        return True
    try:
        members, string_colons = _count_members(root)
    except RecursionError:
        return True
    return colons - string_colons != members


def _count_members(value: Any) -> tuple[int, int]:
    members = colons = 0
    if type(value) is dict:
        members += len(value)
        colons += "".join(value).count(":")
        children = value.values()
    elif type(value) is list:
        children = value
    else:
        return 0, value.count(":") if type(value) is str else 0
    for child in children:
        if type(child) is str:
            colons += child.count(":")
        elif type(child) is dict or type(child) is list:
            m, c = _count_members(child)
            members += m
            colons += c
    return members, colons


def _duplicate_keys(text: str) -> list[str]:
    found: list[str] = []

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            found.extend(_repeated(pairs))
        return obj

    try:
        json.loads(text, object_pairs_hook=members, parse_constant=float)
    except (ValueError, RecursionError):
        return []
    return found


def _repeated(pairs: list[tuple[str, Any]]) -> list[str]:
    seen: set[str] = set()
    out = []
    for k, _ in pairs:
        if k in seen:
            out.append(k)
        seen.add(k)
    return out


def _duplicates_detail(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in dict.fromkeys(keys))
    return f"{len(keys)} repeated key(s): {shown}; the last value is kept"[:_DETAIL_MAX]


def _drop_collisions(rows: list[tuple[Any, ...]], rejects: dict[str, str]) -> list[tuple[Any, ...]]:
    seen: set[str] = set()
    kept = []
    lost: list[str] = []
    for row in rows:
        if row[1] in seen:
            lost.append(row[1])
            continue
        seen.add(row[1])
        kept.append(row)
    if lost:
        _add(rejects, "key_collision",
             f"{len(lost)} key path(s) spelled twice by keys containing '.' or '[' "
             f"(first: {lost[0]!r}); the first in document order is kept")
    return kept


def _without_surrogates(rows: list[tuple[Any, ...]], rejects: dict[str, str]) -> list[tuple[Any, ...]]:
    """Rows whose text can be written (lone surrogates from ``\\ud800`` escapes replaced)."""
    out = []
    bad = 0
    for row in rows:
        try:
            (row[1] + (row[3] or "")).encode("utf-8")
            out.append(row)
        except UnicodeEncodeError:
            bad += 1
            out.append(tuple(_clean(v) if isinstance(v, str) else v for v in row))
    if bad:
        _add(rejects, "invalid_utf8", f"{bad} row(s) with lone surrogates, replaced by '?'")
    return out


def _clean(value: str) -> str:
    return value.encode("utf-8", "replace").decode("utf-8")


def _add(rejects: dict[str, str], reason: str, detail: str) -> None:
    rejects[reason] = f"{rejects[reason]}; {detail}" if reason in rejects else detail


def _result(rows: list[tuple[Any, ...]], rejects: dict[str, str]) -> FlattenResult:
    return FlattenResult(rows, [FlattenReject(r, d[:_DETAIL_MAX]) for r, d in rejects.items()])


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# ------------------------------------------------------------------ executors: Arrow batches

FLATTENED_SCHEMA = T.StructType(
    [T.StructField("kind", T.StringType(), False)]
    + [T.StructField(f.name, f.dataType, True) for f in CONFIG_FEATURES.schema.fields]
    + [T.StructField(n, T.StringType(), True) for n in ("reason", "detail", "raw")]
)
"""What :func:`flatten_batches` emits: ``kind`` (``feature`` or ``reject``), the
``config_features`` columns, then ``reason``, ``detail``, ``raw`` for rejects."""

def config_source(config_json: str | None, config: str | None) -> tuple[str | None, str | None]:
    """``(text, source)``: the full config.json when crawled, else the Hub's summary.

    Examples:
        >>> config_source('{"a": 1}', '{"model_type": "x"}')
        ('{"a": 1}', 'config_json')
        >>> config_source(None, '{"model_type": "x"}')
        ('{"model_type": "x"}', 'config_summary')
        >>> config_source(None, None)
        (None, None)
    """
    if config_json is not None:
        return config_json, SOURCE_FULL
    if config is not None:
        return config, SOURCE_SUMMARY
    return None, None


def flatten_batches(batches: Iterator[Any], limits: FlattenSettings) -> Iterator[Any]:
    """``mapInArrow`` body: (id, sha, config_json, config) in, :data:`FLATTENED_SCHEMA` out.

    Args:
        batches: Arrow record batches of ``hub_models`` columns ``id``, ``sha``,
            ``config_json``, ``config``.
        limits: ``settings.flatten``.

    Yields:
        Arrow record batches: feature rows (``kind='feature'``) and reject rows
        (``kind='reject'``, ``raw`` cut at ``limits.reject_raw_max_chars``), at most about
        64k rows each.
    """
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(FLATTENED_SCHEMA)
    out = _BatchBuilder(schema, limits.reject_raw_max_chars)
    for batch in batches:
        with _gc_paused():
            ready = _flatten_batch(batch, limits, out, pa)
        yield from ready
    with _gc_paused():
        ready = list(out.flush(pa))
    yield from ready


def _flatten_batch(batch: Any, limits: FlattenSettings, out: "_BatchBuilder", pa: Any) -> list[Any]:
    ready: list[Any] = []
    columns = [batch.column(n).to_pylist() for n in ("id", "sha", "config_json", "config")]
    for model_id, sha, config_json, config in zip(*columns):
        text, source = config_source(config_json, config)
        if text is None:
            continue
        out.add(model_id, sha, source, text, flatten_config(text, limits))
        if out.size >= _OUTPUT_ROWS:
            ready.extend(out.flush(pa))
    return ready


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch is flattened.

    The rows are acyclic tuples of strings and numbers (reference counting frees them),
    but tens of thousands of them alive until a batch is built make every automatic
    collection walk them all: with the collector on, building batches took about three
    times as long.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _BatchBuilder:
    """Accumulates flattened configs and turns them into Arrow batches."""

    def __init__(self, schema: Any, raw_max_chars: int) -> None:
        self.schema, self.raw_max_chars = schema, raw_max_chars
        self._reset()

    def _reset(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        # Model id, sha and source once per config, with its row count: repeated in Arrow.
        self.ids: list[str] = []
        self.shas: list[str | None] = []
        self.sources: list[str] = []
        self.counts: list[int] = []
        self.rejects: list[tuple[str, str | None, str, str, str, str]] = []

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.rejects)

    def add(self, model_id: str, sha: str | None, source: str, text: str,
            result: FlattenResult) -> None:
        if result.rows:
            self.rows.extend(result.rows)
            self.ids.append(model_id)
            self.shas.append(sha)
            self.sources.append(source)
            self.counts.append(len(result.rows))
        for reject in result.rejects:
            self.rejects.append((model_id, sha, source, reject.reason, reject.detail,
                                 text[: self.raw_max_chars]))

    def flush(self, pa: Any) -> Iterator[Any]:
        import numpy as np

        if self.rows:
            n = len(self.rows)
            cols = {name: pa.array(values, self.schema.field(name).type)
                    for name, values in zip(ROW_COLUMNS, zip(*self.rows))}
            owner = pa.array(np.repeat(np.arange(len(self.counts)), self.counts))
            for name, values in (("model_id", self.ids), ("sha", self.shas),
                                 ("source", self.sources)):
                cols[name] = pa.array(values, pa.string()).take(owner)
            cols["kind"] = pa.array(["feature"]).take(pa.array(np.zeros(n, np.int32)))
            yield self._batch(pa, cols, n)
        if self.rejects:
            n = len(self.rejects)
            cols = {name: pa.array(values, pa.string()) for name, values in
                    zip(("model_id", "sha", "source", "reason", "detail", "raw"), zip(*self.rejects))}
            cols["kind"] = pa.array(["reject"] * n, pa.string())
            yield self._batch(pa, cols, n)
        self._reset()

    def _batch(self, pa: Any, cols: dict[str, Any], n: int) -> Any:
        return pa.RecordBatch.from_arrays(
            [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in self.schema],
            schema=self.schema)


def flatten_models(models: DataFrame, limits: FlattenSettings) -> DataFrame:
    """Flatten the configs of ``hub_models`` rows on the executors.

    Args:
        models: a DataFrame with ``id``, ``sha``, ``config_json``, ``config``.
        limits: ``settings.flatten``.

    Returns:
        A lazy DataFrame of :data:`FLATTENED_SCHEMA` (features and rejects; split on
        ``kind``). Models with neither config give no row.

    Examples:
        >>> flat = flatten_models(store.read(HUB_MODELS), settings.flatten)  # doctest: +SKIP
        >>> flat.where("kind = 'feature'").count()                           # doctest: +SKIP
    """
    return (models.select("id", "sha", "config_json", "config")
            .mapInArrow(lambda it: flatten_batches(it, limits), FLATTENED_SCHEMA))


# ------------------------------------------------------------------ the stage

@dataclass
class FlattenSummary:
    """What a flatten run did, as printed by ``semfin flatten``.

    Attributes:
        models: models in ``hub_models``.
        reprocessed: models flattened in this run (new, changed, or all with ``full``).
        unchanged: models left as they were.
        removed: models that left ``hub_models``; their rows were deleted.
        feature_rows: ``config_features`` rows written for the reprocessed models.
        rejects: ``flatten_rejects`` rows written.
        tags, files, fields, parents: rows written to the declared tables.
        token_bags: ``model_tokens`` rows written (one per reprocessed model).
        rejects_by_reason: reject rows per reason, this run.
        versions: each table's Delta version after the run (unchanged when nothing was
            reprocessed).
    """

    models: int = 0
    reprocessed: int = 0
    unchanged: int = 0
    removed: int = 0
    feature_rows: int = 0
    rejects: int = 0
    tags: int = 0
    files: int = 0
    fields: int = 0
    parents: int = 0
    token_bags: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int | None] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"flatten: {self.models} models, {self.reprocessed} reprocessed, "
                f"{self.unchanged} unchanged, {self.removed} removed; {self.feature_rows} "
                f"feature rows, {self.rejects} rejects, {self.tags} tags, {self.files} files, "
                f"{self.fields} fields, {self.parents} parents, {self.token_bags} token bags")


OUTPUT_TABLES: tuple[Table, ...] = (CONFIG_FEATURES, FLATTEN_REJECTS, MODEL_TAGS, MODEL_FILES,
                                    MODEL_FIELDS, MODEL_PARENTS, MODEL_TOKENS, FLATTEN_STATE)
"""The tables flatten writes, in commit order: ``flatten_state`` last."""


FLATTEN_INPUTS: tuple[str, ...] = ("sha", "config_json", "config", "tags", "siblings",
                                   "card_data", "pipeline_tag", "library_name", "gguf",
                                   "safetensors", "transformers_info")
"""The ``hub_models`` columns flatten's tables are built from (downloads and likes are not)."""


def change_key() -> Any:
    """The column that says a model changed: ``<sha>:<hash of every flatten input>:f<format>``.

    Keyed on what flatten reads, not on the sha alone: a config.json fetched on a later
    crawl for the same commit, or a Hub-side field change without a commit (a new
    ``pipeline_tag``), must reach the tables too. Downloads and likes, which change every
    day, are not inputs and reprocess nothing. The last part is
    :data:`~semfin_spark.schemas.FLATTEN_FORMAT`: a release that flattens differently
    reprocesses every model once.
    """
    digest = F.lpad(F.hex(F.xxhash64(*[F.col(c) for c in FLATTEN_INPUTS])), 16, "0")
    return F.concat_ws(":", F.coalesce(F.col("sha"), F.lit("")), digest, F.lit(f"f{schemas.FLATTEN_FORMAT}"))


def flatten(spark: SparkSession, store: DeltaStore, settings: Settings, *,
            progress: Callable[[str], None] = print, full: bool = False) -> FlattenSummary:
    """Flatten the configs and declared metadata of new and changed models.

    Args:
        spark: the session.
        store: the warehouse's Delta store (reads ``hub_models`` and ``flatten_state``).
        settings: ``settings.flatten`` limits.
        progress: where progress lines go (one per table).
        full: reprocess every model, not only new and changed ones.

    Returns:
        A :class:`FlattenSummary` with the counts and table versions.

    Raises:
        DeltaError: a table cannot be read or written.

    Examples:
        >>> flatten(spark, store, settings).reprocessed        # doctest: +SKIP
        1983
        >>> flatten(spark, store, settings).reprocessed        # doctest: +SKIP
        0

    Implementation details:
        The driver joins ``hub_models`` with ``flatten_state`` to find the models to
        reprocess, persists them (without the ``raw`` column) and their flattened configs,
        and commits one Delta version per table with only counts collected. The configs
        are parsed on the executors (:func:`flatten_models`); the declared tables are
        DataFrame expressions (:mod:`semfin_spark.declared`).
    """
    from semfin_spark import declared

    del spark  # the store's session does the work; kept for the stage signature
    missing = [t.name for t in OUTPUT_TABLES if not store.exists(t)]
    if missing and not full and store.exists(FLATTEN_STATE):
        # The state says "done" for rows a lost table no longer holds: rebuild them all.
        progress(f"flatten: {', '.join(missing)} missing from the warehouse; reprocessing "
                 "every model")
        full = True
    now = F.lit(dt.datetime.now(dt.timezone.utc)).cast("timestamp")
    hub = store.read(HUB_MODELS).drop("raw")
    state = store.read(FLATTEN_STATE).select("model_id", F.col("change_key").alias("_done"))
    current = hub.select(F.col("id").alias("model_id"), change_key().alias("change_key"))
    # One narrow join says what each model is: in the Hub and to redo, in the Hub and
    # done, or gone from the Hub (a hub model's change_key is never null: it falls back
    # to the record_hash); one job persists it and counts all three.
    status = (F.when(F.col("change_key").isNull() & F.col("_done").isNotNull(), F.lit("gone"))
              .when(F.lit(full) | ~F.col("change_key").eqNullSafe(F.col("_done")), F.lit("todo"))
              .otherwise(F.lit("done")))
    plan = (current.join(state, "model_id", "full_outer")
            .select("model_id", "change_key", status.alias("_status"))
            .persist(StorageLevel.MEMORY_AND_DISK))
    todo = plan.where(F.col("_status") == "todo").select("model_id", "change_key")
    gone = plan.where(F.col("_status") == "gone").select("model_id")
    cached: list[DataFrame] = [plan]
    try:
        counts = {r["_status"]: r["count"] for r in plan.groupBy("_status").count().collect()}
        summary = FlattenSummary(models=counts.get("todo", 0) + counts.get("done", 0),
                                 reprocessed=counts.get("todo", 0), removed=counts.get("gone", 0))
        summary.unchanged = summary.models - summary.reprocessed
        progress(f"flatten: {summary.models} models, {summary.reprocessed} to reprocess, "
                 f"{summary.unchanged} unchanged, {summary.removed} removed"
                 f"{' (full)' if full else ''}")
        if summary.reprocessed == 0 and summary.removed == 0:
            summary.versions = {t.name: store.version(t) for t in OUTPUT_TABLES}
            progress(summary.summary())
            return summary
        keys = todo.select("model_id").unionByName(gone)
        # Not cached: each consumer reads only the columns it needs from the Parquet files
        # (the flatten pass reads config.json, the tag builder reads tags), which measured
        # faster than caching whole records once.
        models = _to_reprocess(hub, todo, summary)
        # One pass writes the features (counted while writing, by _replace); the rejects are
        # counted on the way, so nothing is cached. Rejects are rare: only when some were seen are the configs
        # parsed again to keep them (cheaper than caching millions of feature rows).
        kinds = Observation()
        flat = flatten_models(models, settings.flatten).observe(
            kinds, F.count(F.when(F.col("kind") == "reject", 1)).alias("rejects"))
        summary.feature_rows = _replace(
            store, CONFIG_FEATURES, flat.where("kind = 'feature'").select(*CONFIG_FEATURES.columns),
            keys, summary, progress)
        rejected = flatten_models(models, settings.flatten).where("kind = 'reject'")
        if not kinds.get["rejects"]:
            rejected = rejected.limit(0)
        rejected = _cache(rejected.select("model_id", "sha", "source", "reason", "detail", "raw",
                                          now.alias("rejected_at")), cached)
        summary.rejects_by_reason = {r["reason"]: r["count"]
                                     for r in rejected.groupBy("reason").count().collect()}
        summary.rejects = _replace(store, FLATTEN_REJECTS, rejected, keys, summary, progress)
        for table, build, attr in ((MODEL_TAGS, declared.model_tags, "tags"),
                                   (MODEL_FILES, declared.model_files, "files"),
                                   (MODEL_FIELDS, declared.model_fields, "fields"),
                                   (MODEL_PARENTS, declared.model_parents, "parents")):
            rows = build(models)
            if table is MODEL_FIELDS:
                rows = _keeping_imputed(store, rows, todo, summary)
            setattr(summary, attr, _replace(store, table, rows, keys, summary, progress))
        # The token bags of the reprocessed models, from the rows just written: train,
        # evaluate and impute read this one table.
        summary.token_bags = _replace(store, MODEL_TOKENS, _token_bags(store, models, todo, summary),
                                      keys, summary, progress)
        done = todo.select("model_id", "change_key", now.alias("flattened_at"))
        _replace(store, FLATTEN_STATE, done, keys, summary, progress)
        progress(summary.summary())
        return summary
    finally:
        # Dependents first: uncaching a frame makes Spark rebuild every cached frame
        # built on it (measured: 80 jobs and 11 s in impute before this order).
        for df in reversed(cached):
            df.unpersist()


BROADCAST_IDS = 2_000_000
"""Up to this many models to reprocess, their ids are broadcast to pick their hub rows;
past it, a shuffle join (the driver never holds more ids than this)."""


def _to_reprocess(hub: DataFrame, todo: DataFrame, summary: FlattenSummary) -> DataFrame:
    """The ``hub_models`` rows of the models in ``todo``, without shuffling wide rows.

    Every model (a first or ``--full`` run): ``hub`` as it is. Otherwise a semi join, with
    the (narrow) ids broadcast when there are at most :data:`BROADCAST_IDS`: a shuffle
    join would move each model's whole record, config.json text included.
    """
    if summary.reprocessed == summary.models:
        return hub
    ids = todo.select(F.col("model_id").alias("id"))
    return hub.join(F.broadcast(ids) if summary.reprocessed <= BROADCAST_IDS else ids, "id",
                    "left_semi")


def _keeping_imputed(store: DeltaStore, rows: DataFrame, todo: DataFrame | None = None,
                     summary: FlattenSummary | None = None) -> DataFrame:
    """Flatten's ``model_fields`` rows (declared columns, impute's null) with impute's
    columns of the stored row kept where nothing is declared.

    Each column group has one writer: flatten the declared values, impute its own
    (:data:`~semfin_spark.schemas.IMPUTE_COLUMNS`). A model reprocessed because of a new
    commit keeps its imputed values; impute rescores it only if its features or its
    relatives' vote changed (the kept ``features_hash`` says). A value now declared clears
    the imputed one. ``todo`` and ``summary``: the reprocessed models, whose stored rows
    alone are read (all of them when every model is reprocessed or none is given)."""
    if not store.exists(MODEL_FIELDS):
        return rows
    stored = store.read(MODEL_FIELDS)
    if todo is not None and summary is not None:
        stored = _of_reprocessed(stored, todo, summary)
    stored = stored.select(
        "model_id", "field", *[F.col(c).alias(f"_kept_{c}") for c in IMPUTE_COLUMNS])
    keep = F.col("declared_value").isNull()
    imputed = F.when(keep, F.col("_kept_imputed_value"))
    out = []
    for c in MODEL_FIELDS.columns:
        if c in IMPUTE_COLUMNS:
            out.append(F.when(keep, F.col(f"_kept_{c}")).alias(c))
        elif c == "value":
            out.append(F.coalesce(F.col("declared_value"), imputed).alias(c))
        elif c == "value_source":
            out.append(F.when(~keep, F.lit("declared")).when(imputed.isNotNull(), F.lit("imputed")).alias(c))
        else:
            out.append(F.col(c))
    return rows.join(stored, ["model_id", "field"], "left").select(*out)


def _token_bags(store: DeltaStore, models: DataFrame, todo: DataFrame,
                summary: FlattenSummary) -> DataFrame:
    """:func:`~semfin_spark.features.token_bags` of the models in ``todo`` (``models``: their
    hub rows), from their rows of the flatten tables as just written."""
    def mine(table: Table) -> DataFrame:
        return _of_reprocessed(store.read(table), todo, summary)

    return token_bags(models.select("id"), mine(CONFIG_FEATURES), mine(MODEL_TAGS),
                      mine(MODEL_FILES), mine(MODEL_FIELDS))


def _of_reprocessed(rows: DataFrame, todo: DataFrame, summary: FlattenSummary) -> DataFrame:
    """``rows`` of the models in ``todo`` (all of them when every model is reprocessed),
    their ids broadcast up to :data:`BROADCAST_IDS`."""
    if summary.reprocessed == summary.models:
        return rows
    ids = todo.select("model_id")
    return rows.join(F.broadcast(ids) if summary.reprocessed <= BROADCAST_IDS else ids,
                     "model_id", "left_semi")


def _cache(df: DataFrame, cached: list[DataFrame]) -> DataFrame:
    df = df.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(df)
    return df


_CHANGE_WITH_THE_COMMIT = (CONFIG_FEATURES, MODEL_FIELDS, FLATTEN_STATE)
"""Tables whose rows carry the model's ``sha`` or change key: a reprocessed model's rows
differ from the stored ones, so comparing them first would be wasted work
(``flatten_rejects`` carries the sha too, but is compared: it is mostly empty, and then
no MERGE runs at all)."""


def _replace(store: DeltaStore, table: Table, rows: DataFrame, keys: DataFrame,
             summary: FlattenSummary, progress: Callable[[str], None]) -> int:
    """Replace the rows of ``keys``' models in ``table`` by ``rows`` (one commit); returns
    how many rows the models have, counted while writing.

    Rows equal to the stored ones are not rewritten, and a table none of whose rows
    changed gets no commit (a model's new commit usually changes one or two of its
    files, not its tags, parents and declared fields), so stages downstream that compare
    versions see those tables unchanged. The tables of :data:`_CHANGE_WITH_THE_COMMIT`
    are not compared: their rows carry the commit, so they always differ."""
    written = Observation()
    rows = rows.observe(written, F.count(F.lit(1)).alias("rows"))
    if summary.reprocessed == summary.models:
        # Every model reprocessed (a first or --full run): the table is rewritten whole,
        # which also drops rows of models gone from the Hub, in one cheap WRITE commit.
        result = store.overwrite(table, rows, operation="FLATTEN")
    else:
        result = store.replace_keys(table, rows, keys, operation="FLATTEN",
                                    skip_equal=table not in _CHANGE_WITH_THE_COMMIT)
    n_rows = int(written.get["rows"] or 0)
    version = result.version if result.version is not None else store.version(table)
    summary.versions[table.name] = version
    state = "" if result.version is not None else "unchanged, "
    progress(f"flatten: {table.name}: {n_rows} rows for {summary.reprocessed} models "
             f"({state}version {version})")
    return n_rows
