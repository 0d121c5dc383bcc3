"""The fingerprint: each model as a bag of tokens, and the tokens each field may not see.

:func:`model_features` turns what a repo carries into one array of tokens per model:

* ``config_key:<key>``: a key path of its config (``config_features.key``, list positions
  left out, all-digit path segments written ``#`` so ``id2label.0`` and ``id2label.7``
  are one key);
* ``config:<key>=<value>``: the key with its value, for strings (lower-cased, first
  :data:`MAX_VALUE_CHARS` characters), booleans, nulls and integers from -16 to 16;
  other numbers are bucketed on a log scale, ``config:<key>~2^<e>`` with
  ``e = floor(log2(|x|))`` (``-2^<e>`` for negatives), so ``hidden_size`` 768 is ``~2^9``
  and ``layer_norm_eps`` 1e-5 is ``~2^-17``;
* ``architecture:<name>`` and ``architecture_head:<head>``: a transformers class name in
  ``architectures`` split by :data:`ARCHITECTURE_PATTERN`
  (``XLMRobertaForTokenClassification`` -> ``architecture:xlmroberta``,
  ``architecture_head:fortokenclassification``), so a head seen with one architecture
  tells the task of another, and an architecture seen with one head tells the type of
  another;
* ``tag:<kind>:<value>``: each tag with its ``model_tags.kind`` (lower-cased value).
  Two kinds are made here: ``base_model:<relation>:<parent>`` tags give
  ``tag:base_model_relation:<relation>`` (and ``tag:base_model:<parent>``, as a plain
  ``base_model:<parent>`` tag does), and a tag equal to the model's declared
  ``model_type`` becomes ``tag:model_type:<value>``, so the leakage rules can find both;
* ``file:<path>`` (lower-cased, digit runs written ``#``: ``pytorch_model-#-of-#.bin``),
  ``file_ext:<extension>`` and ``file_kind:<kind>`` for each repo file;
* ``author:<owner>`` and ``name:<word>`` for the words of the repo name (split on
  anything but letters and digits; words of one character dropped), plus each word
  without its trailing digits (``mbart50`` also gives ``name:mbart``).

The model card (``hub_models.card_data``) gives no token: what a card says about the
five fields *is* the declared value. :data:`LEAKAGE_RULES` still lists the card's keys,
so a card token added later is dropped for its field without another change.

:func:`field_tokens` applies :data:`LEAKAGE_RULES`: for each field, every token that
encodes that field directly is removed before the field's classifier sees it (in training,
evaluation and imputation alike, so the three see the same features).

The bags are computed once per changed model, by flatten (:func:`token_bags` on the rows
it just wrote), and kept in ``model_tokens``; train, evaluate and impute read that table
(:func:`model_features`), not the four it is built from.

Implementation details:
    Everything is Spark built-in functions: one token column per source table, a union,
    and one ``groupBy(model_id)`` with ``collect_set``. Nothing is collected; the executors
    do all the work. Models without any config, tag or file still get their author and
    name tokens (the rows start from ``hub_models``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.schemas import (
    CONFIG_FEATURES, HUB_MODELS, MODEL_FIELDS, MODEL_FILES, MODEL_TAGS, MODEL_TOKENS,
)
from semfin_spark.settings import FIELDS

MAX_VALUE_CHARS = 64
"""String values longer than this are cut to their first characters in a token."""

EXACT_INT_LIMIT = 16
"""Integers with an absolute value up to this keep their value; larger ones are bucketed."""

ARCHITECTURE_PATTERN = (r"^(?:TF|Flax)?([A-Z0-9][A-Za-z0-9_]*?)"
                        r"(For[A-Z][A-Za-z0-9]*|WithLMHeadModel|LMHeadModel|MTModel|Model|LMHead)?$")
"""A transformers class name split into its architecture and its head:
``XLMRobertaForTokenClassification`` -> ``XLMRoberta`` + ``ForTokenClassification``,
``GPT2LMHeadModel`` -> ``GPT2`` + ``LMHeadModel`` (``TF``/``Flax`` prefixes dropped)."""

FEATURE_COLUMNS = ("model_id", "tokens")
"""Columns of :func:`model_features` and :func:`field_tokens`."""

CONFIG_TOKEN_PREFIXES = ("config_key:", "config:", "architecture:", "architecture_head:",
                         "tag:model_type:")
"""Tokens only a config.json gives (the type tag is the config's ``model_type`` too)."""

CONFIG_FILE_TOKEN = "file:config.json"
"""The config file's own token."""

ARCHITECTURE_TOKEN_PREFIX = "architecture:"
"""The prefix of a config's architecture token (only a config.json names one)."""


@dataclass(frozen=True)
class LeakageRule:
    """Tokens that encode a field directly, removed before that field's classifier.

    Attributes:
        field: one of :data:`~semfin_spark.settings.FIELDS`.
        prefixes: a token starting with any of these is dropped.
        exact: a token equal to any of these is dropped.
        reason: what these tokens are, for the README and the MLflow run.
    """

    field: str
    prefixes: tuple[str, ...]
    exact: tuple[str, ...]
    reason: str

    def leaks(self, token: str) -> bool:
        """True when ``token`` must not reach this field's classifier.

        Examples:
            >>> LEAKAGE_RULES["license"].leaks("tag:license:mit")
            True
            >>> LEAKAGE_RULES["license"].leaks("tag:language:en")
            False
        """
        return token in self.exact or token.startswith(self.prefixes)


LEAKAGE_RULES: dict[str, LeakageRule] = {
    "license": LeakageRule(
        "license", ("tag:license:", "card:license"), (),
        "`license:*` tags, and the card's licence (`license`, `license_name`, `license_link`)"),
    "pipeline_tag": LeakageRule(
        "pipeline_tag", ("tag:task:", "card:pipeline_tag"), (),
        "every task tag (the Hub copies the pipeline tag among the tags; legacy "
        "`conversational` included), and the card's `pipeline_tag`"),
    "library_name": LeakageRule(
        "library_name", ("tag:library:", "card:library_name"), (),
        "every library and framework tag (the Hub copies the library among the tags), and "
        "the card's `library_name`"),
    "model_type": LeakageRule(
        "model_type", ("config:model_type=", "config:model_type~", "tag:model_type:"),
        ("config_key:model_type",),
        "the config's top-level `model_type` (key and value), and the tag equal to it"),
    "reuse_method": LeakageRule(
        "reuse_method", ("tag:base_model_relation:", "card:base_model_relation"), (),
        "the relation of `base_model:<relation>:<parent>` tags, and the card's "
        "`base_model_relation`"),
}
"""The one place that says which tokens each field may not see (listed in the README)."""

if set(LEAKAGE_RULES) != set(FIELDS):  # settings.FIELDS is the one list of fields
    raise RuntimeError(f"features.py has leakage rules for {sorted(LEAKAGE_RULES)}, "
                       f"settings.FIELDS is {FIELDS}")


def _digit_segments(key: Column) -> Column:
    """``id2label.0.name`` -> ``id2label.#.name``: list-like object keys become one key."""
    return F.regexp_replace(key, r"(^|\.)[0-9]+(?=\.|$)", "$1#")


def _number_token(num: Column, value_type: Column) -> Column:
    """``=<n>`` for small integers, else ``~2^<e>`` / ``~-2^<e>`` (log2 bucket), ``=0`` for 0."""
    exponent = F.floor(F.log2(F.abs(num))).cast("int").cast("string")
    small_int = (value_type == "int") & (F.abs(num) <= EXACT_INT_LIMIT)
    return (F.when(small_int, F.concat(F.lit("="), num.cast("long").cast("string")))
            .when(num == 0, F.lit("=0"))
            .when(num > 0, F.concat(F.lit("~2^"), exponent))
            .otherwise(F.concat(F.lit("~-2^"), exponent)))


def _token_rows(rows: DataFrame, model_id: Column, tokens: Column) -> DataFrame:
    """``model_id``, ``token``: one row per non-null element of each row's ``tokens`` array.

    Exploded, then the nulls dropped: ``F.filter``, a higher-order function, is evaluated
    interpreted, row by row; on 7.3 million config rows (300,000 models) it doubled the
    cost of the config tokens (30 s against 16 s)."""
    return (rows.select(model_id.alias("model_id"), F.explode(tokens).alias("token"))
            .where(F.col("token").isNotNull()))


def _config_tokens(config: DataFrame) -> DataFrame:
    key = _digit_segments(F.lower(F.col("key")))
    value = F.lower(F.trim(F.col("value")))
    numeric = F.col("value_type").isin("int", "float") & F.col("value_num").isNotNull()
    suffix = (F.when(numeric, _number_token(F.col("value_num"), F.col("value_type")))
              .when(F.col("value_type").isin("object", "list"), F.lit(None))
              .when(F.col("value").isNull(), F.lit("=null"))
              .otherwise(F.concat(F.lit("="), F.substring(value, 1, MAX_VALUE_CHARS))))
    arch = F.regexp_extract(F.col("value"), ARCHITECTURE_PATTERN, 1)
    head = F.regexp_extract(F.col("value"), ARCHITECTURE_PATTERN, 2)
    is_arch = (F.lower(F.col("key")) == "architectures") & (arch != "")
    tokens = F.array(F.concat(F.lit("config_key:"), key),
                     F.concat(F.lit("config:"), key, suffix),
                     F.when(is_arch, F.concat(F.lit(ARCHITECTURE_TOKEN_PREFIX), F.lower(arch))),
                     F.when(is_arch & (head != ""), F.concat(F.lit("architecture_head:"), F.lower(head))))
    return _token_rows(config.where(F.col("key").isNotNull()), F.col("model_id"), tokens)


def _tag_tokens(tags: DataFrame, model_types: DataFrame) -> DataFrame:
    value = F.lower(F.trim(F.col("value")))
    kind = F.lower(F.coalesce(F.col("kind"), F.lit("other")))
    own_type = F.col("_model_type").isNotNull() & (F.lower(F.trim(F.col("tag"))) == F.col("_model_type"))
    relation = F.lower(F.col("relation"))
    tokens = F.array(
        F.when(own_type, F.concat(F.lit("tag:model_type:"), value))
        .otherwise(F.concat(F.lit("tag:"), kind, F.lit(":"), value)),
        F.when(relation.isNotNull(), F.concat(F.lit("tag:base_model_relation:"), relation)),
    )
    return _token_rows(tags.join(model_types, "model_id", "left"), F.col("model_id"), tokens)


def _file_tokens(files: DataFrame) -> DataFrame:
    path = F.regexp_replace(F.lower(F.trim(F.col("path"))), r"[0-9]+", "#")
    tokens = F.array(F.concat(F.lit("file:"), path),
                     F.concat(F.lit("file_ext:"), F.lower(F.col("extension"))),
                     F.concat(F.lit("file_kind:"), F.lower(F.col("kind"))))
    return _token_rows(files, F.col("model_id"), tokens)


def _repo_tokens(hub: DataFrame) -> DataFrame:
    has_owner = F.instr(F.col("id"), "/") > 0
    owner = F.when(has_owner, F.lower(F.substring_index(F.col("id"), "/", 1)))
    name = F.lower(F.substring_index(F.col("id"), "/", -1))
    words = F.filter(F.split(name, "[^a-z0-9]+"), lambda w: F.length(w) > 1)
    # "mbart50", "wav2vec2": the word without its trailing digits too ("mbart", "wav2vec").
    stems = F.filter(F.transform(words, lambda w: F.regexp_replace(w, "[0-9]+$", "")),
                     lambda w: F.length(w) > 1)
    tokens = F.concat(F.array(F.concat(F.lit("author:"), owner)),
                      F.transform(F.array_distinct(F.concat(words, stems)),
                                  lambda w: F.concat(F.lit("name:"), w)))
    return _token_rows(hub, F.col("id"), tokens)


def model_features(store: DeltaStore) -> DataFrame:
    """Every flattened model with its fingerprint tokens (all fields' features).

    Args:
        store: the warehouse; reads ``model_tokens``, which flatten keeps. A warehouse
            flattened before that table existed is read the old way, from the tables it
            is built from (:func:`token_bags`), until its next flatten writes it.

    Returns:
        ``model_id`` (string), ``tokens`` (array<string>, sorted, distinct): one row per
        model of ``hub_models`` as of the last flatten. These tokens still include the
        leaking ones: use :func:`field_tokens` before any classifier.

    Examples:
        >>> row = model_features(store).where("model_id = 'gpt2'").first()   # doctest: +SKIP
        >>> [t for t in row.tokens if t.startswith("config")][:3]           # doctest: +SKIP
        ['config:architectures=gpt2lmheadmodel', 'config:model_type=gpt2', 'config_key:architectures']
    """
    if store.exists(MODEL_TOKENS):
        return store.read(MODEL_TOKENS).select("model_id", "tokens")
    return token_bags(store.read(HUB_MODELS).select("id"), store.read(CONFIG_FEATURES),
                      store.read(MODEL_TAGS), store.read(MODEL_FILES), store.read(MODEL_FIELDS))


def by_model(features: DataFrame) -> DataFrame:
    """``features`` hash-partitioned by ``model_id`` into ``spark.sql.shuffle.partitions``
    partitions, to persist once per stage: every field's labels then join the token bags
    by shuffling only themselves, to the bags' partitions, where a join with
    unpartitioned bags shuffled every bag again for each field (300,000 models: about
    300 MB and 5 s a field in train). Train and evaluate use it; impute, which joins only
    the few bags a night rescores, gained nothing measurable and does not."""
    partitions = int(features.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return features.repartition(partitions, "model_id")


def token_bags(hub: DataFrame, config: DataFrame, tags: DataFrame, files: DataFrame,
               fields: DataFrame) -> DataFrame:
    """The token bag of every model of ``hub``, from its rows of the flatten tables.

    Args:
        hub: ``id``: the models (``hub_models`` rows).
        config, tags, files, fields: their rows of ``config_features``, ``model_tags``,
            ``model_files`` and ``model_fields`` (the declared ``model_type`` marks its tag).
            Rows of other models are ignored.

    Returns:
        ``model_id``, ``tokens`` (sorted, distinct; empty when no source gave a token):
        one row per model of ``hub``.

    Implementation details:
        One shuffle: the token rows of the four sources are unioned and grouped by
        ``model_id``. The driver only builds the plan.
    """
    model_types = (fields.where((F.col("field") == "model_type") & F.col("declared_value").isNotNull())
                   .select("model_id", F.lower(F.trim("declared_value")).alias("_model_type")))
    rows = (_repo_tokens(hub)
            .unionByName(_config_tokens(config))
            .unionByName(_tag_tokens(tags, model_types))
            .unionByName(_file_tokens(files)))
    # sort_array, not array_sort: the latter is a higher-order function (a comparator
    # lambda, evaluated interpreted); the order of the (non-null) tokens is the same.
    grouped = rows.groupBy("model_id").agg(F.sort_array(F.collect_set("token")).alias("tokens"))
    # Start from hub: a model is there even if no source gave it a token, and tokens of
    # rows whose model is not in hub are dropped.
    return (hub.select(F.col("id").alias("model_id"))
            .join(grouped, "model_id", "left")
            .select("model_id", F.coalesce("tokens", F.array().cast("array<string>")).alias("tokens")))


def leakage_filter(field: str) -> Callable[[Column], Column]:
    """The rule of ``field`` as a predicate for ``F.filter``: true for a token it may see.

    Raises:
        ValueError: ``field`` is not one of :data:`~semfin_spark.settings.FIELDS`.
    """
    rule = _rule(field)

    def keep(token: Column) -> Column:
        leaks = F.lit(False)
        for prefix in rule.prefixes:
            leaks = leaks | token.startswith(prefix)
        if rule.exact:
            leaks = leaks | token.isin(*rule.exact)
        return ~leaks

    return keep


def field_tokens(features: DataFrame, field: str) -> DataFrame:
    """The tokens ``field``'s classifier may see: ``features`` without that field's leaks.

    Args:
        features: ``model_id``, ``tokens`` (as from :func:`model_features`); other columns
            are kept.
        field: one of :data:`~semfin_spark.settings.FIELDS`.

    Returns:
        The same rows, ``tokens`` without every token :data:`LEAKAGE_RULES` names for
        ``field``.

    Raises:
        ValueError: unknown field.

    Examples:
        >>> df = spark.createDataFrame([("a/b", ["tag:license:mit", "tag:language:en"])],
        ...                            "model_id string, tokens array<string>")  # doctest: +SKIP
        >>> field_tokens(df, "license").first().tokens                            # doctest: +SKIP
        ['tag:language:en']
    """
    keep = leakage_filter(field)
    return features.withColumn("tokens", F.filter("tokens", keep))


def has_config(tokens: Column) -> Column:
    """True for a bag of a model that carries a config.json: its file, or (when the files
    are not known) an architecture, which only a config.json names. Adapters, GGUF repos
    and diffusers pipelines usually carry none. Config keys alone do not tell: the Hub's
    summary of a repo without one still has ``tokenizer_config`` or ``diffusers`` keys.

    Examples:
        >>> df = spark.createDataFrame([(["file:config.json"],), (["architecture:bert"],),
        ...                             (["config_key:tokenizer_config.eos_token", "file:adapter_config.json"],)],
        ...                            "tokens array<string>")                   # doctest: +SKIP
        >>> [r[0] for r in df.select(has_config(F.col("tokens"))).collect()]      # doctest: +SKIP
        [True, True, False]
    """
    return F.exists(tokens, lambda t: (t == CONFIG_FILE_TOKEN) | t.startswith(ARCHITECTURE_TOKEN_PREFIX))


def names_config(token: str) -> bool:
    """Whether one token says the model carries a config.json: the pure-Python twin of
    :func:`has_config` (true for a bag when any of its tokens is), for code outside Spark.

    Examples:
        >>> [names_config(t) for t in ("file:config.json", "architecture:bert", "config_key:x")]
        [True, True, False]
    """
    return token == CONFIG_FILE_TOKEN or token.startswith(ARCHITECTURE_TOKEN_PREFIX)


def without_config(tokens: Column) -> Column:
    """The bag as if the model had no config.json: without :data:`CONFIG_TOKEN_PREFIXES`
    tokens and :data:`CONFIG_FILE_TOKEN`. Validation uses it to see how a field is
    answered for models that carry no config (:mod:`semfin_spark.classifier`)."""
    def kept(t: Column) -> Column:
        drop = t == CONFIG_FILE_TOKEN
        for prefix in CONFIG_TOKEN_PREFIXES:
            drop = drop | t.startswith(prefix)
        return ~drop

    return F.filter(tokens, kept)


def _rule(field: str) -> LeakageRule:
    try:
        return LEAKAGE_RULES[field]
    except KeyError:
        raise ValueError(f"unknown field {field!r}; choose from {', '.join(FIELDS)}") from None


def leakage_table() -> str:
    """The leakage rules as a Markdown table (the README's list is this text)."""
    lines = ["| field | tokens dropped | what they are |", "|---|---|---|"]
    for rule in LEAKAGE_RULES.values():
        dropped = ", ".join([f"`{p}*`" for p in rule.prefixes] + [f"`{e}`" for e in rule.exact])
        lines.append(f"| `{rule.field}` | {dropped} | {rule.reason} |")
    return "\n".join(lines)
