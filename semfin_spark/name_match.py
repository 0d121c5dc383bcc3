"""Name match: a model type read off the config's architecture class name.

transformers names its classes ``<ModelType>For<Head>`` (``LEDForConditionalGeneration``,
``ViTMAEForPreTraining``, ``BlenderbotSmallForConditionalGeneration``), and the config's
``architectures`` list is not a leak for ``model_type`` (the leakage rules drop only the
config's ``model_type`` key and the tag equal to it). A classifier learns that evidence for
frequent types, but cannot predict a type it saw once or twice (pooled, or below the
vocabulary's document frequency); on the real 2022 sample most of its ``model_type``
errors were such types whose architecture spells their name (``led``, ``vilt``,
``squeezebert``, ``m2m_100``, ...).

So a field of :data:`NAME_MATCH_FIELDS` gets, after its classifier, one more stage: when an
``architecture:<name>`` token, with everything but letters and digits removed, equals a
label declared in training (normalised the same way: ``vit_mae`` -> ``vitmae``), that label
is the prediction. The rule is fitted on the training models, not assumed:

* a name is used only if, among the training models with that architecture, the named
  label is at least :data:`MIN_PRECISION` of them (``Phi`` architectures labelled
  ``phi-msft`` keep the classifier's answer);
* its confidence is that precision, smoothed towards the precision of all names together
  with the weight of :data:`PRIOR_MODELS` models (a name seen in no training architecture
  gets the overall precision: 0.998 on the real 2022 sample).

A model whose config names no architecture (a tiny test model, an adapter, a config the Hub
did not summarise) has only its repo name to go by: ``akreal/tiny-random-xlnet``. For those
models only, a word of the repo name (a ``name:<word>`` token, normalised the same way) that
equals a declared label is the prediction, when exactly one such label is named (a name
that says ``roberta`` and ``bert`` says neither). It is fitted the same way, on the
training models without an architecture, with its own overall precision as the prior.
An architecture always comes first.

The stage is a Spark ML ``SQLTransformer`` inside the field's ``PipelineModel``, so the
model logged to MLflow carries the rule and the label table, and loads back as any
Spark model. The classifier's own answer stays in the ``model_prediction`` column.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping

from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

NAME_MATCH_FIELDS = ("model_type",)
"""Fields whose classifier is followed by the name match."""

ARCHITECTURE_PREFIX = "architecture:"
"""The token :mod:`semfin_spark.features` makes of a config's architecture class."""

NAME_WORD_PREFIX = "name:"
"""The token :mod:`semfin_spark.features` makes of each word of the repo name."""

MODEL_PREDICTION_COL = "model_prediction"
"""The classifier's own prediction in a name-match pipeline (``prediction`` is the final one)."""

RULE_CONFIDENCE_COL = "rule_confidence"
"""Confidence of a name-match prediction; null where the classifier answered."""

MIN_PRECISION = 0.5
PRIOR_MODELS = 2.0

_SAFE_LABEL = re.compile(r"^[A-Za-z0-9_.\- ]{1,100}$")


def normalise(name: str) -> str:
    """Lower case, letters and digits only: ``vit_mae`` -> ``vitmae``.

    Examples:
        >>> normalise("xlm-prophetnet"), normalise("M2M_100")
        ('xlmprophetnet', 'm2m100')
    """
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _normalised(column: F.Column) -> F.Column:
    return F.regexp_replace(F.lower(column), "[^a-z0-9]", "")


def _keys(tokens: F.Column, prefix: str) -> F.Column:
    """The normalised names of the tokens of ``tokens`` that start with ``prefix``."""
    return F.array_distinct(F.transform(F.filter(tokens, lambda t: t.startswith(prefix)),
                                        lambda t: _normalised(F.substring(t, len(prefix) + 1, 1_000))))


@dataclass(frozen=True)
class NameMatch:
    """The fitted rule: normalised architecture name -> (label, confidence), and for
    models without an architecture, normalised repo-name word -> (label, confidence)."""

    labels: Mapping[str, str]
    confidence: Mapping[str, float]
    precision: float
    """Precision of every name together on the training models (nan without evidence)."""
    word_labels: Mapping[str, str] = field(default_factory=dict)
    word_confidence: Mapping[str, float] = field(default_factory=dict)
    word_precision: float = float("nan")
    """Precision of every repo-name word together, on the training models without an
    architecture (nan without evidence)."""
    word_keys: tuple[str, ...] = ()
    """Every declared label's normalised name: a name that spells two of them says
    neither, even when one is not a kept word (as the fit counted it)."""

    def stage(self) -> SQLTransformer:
        """The rule as a ``SQLTransformer``: ``model_prediction`` -> ``prediction``,
        ``rule_confidence``."""
        def literal_map(values: Mapping[str, str]) -> str:
            return "map(" + ", ".join(f"'{k}', {v}" for k, v in sorted(values.items())) + ")"

        def typed(values: Mapping[str, float]) -> str:
            return literal_map({k: f"CAST({v!r} AS DOUBLE)" for k, v in values.items()}
                               or {"": "CAST(NULL AS DOUBLE)"})

        def keys(prefix: str) -> str:
            return (f"array_distinct(transform(filter(tokens, t -> startswith(t, '{prefix}')), "
                    f"t -> regexp_replace(substr(t, {len(prefix) + 1}), '[^a-z0-9]', '')))")

        names = literal_map({k: f"'{v}'" for k, v in self.labels.items()} or {"": "CAST(NULL AS STRING)"})
        # Every declared name is a key (dropped words map to null), so "exactly one named
        # label" counts what the fit counted.
        words = literal_map({k: f"'{self.word_labels[k]}'" if k in self.word_labels else "CAST(NULL AS STRING)"
                             for k in self.word_keys} or {"": "CAST(NULL AS STRING)"})
        match = f"get(filter({keys(ARCHITECTURE_PREFIX)}, n -> map_contains_key(_names, n)), 0)"
        # A word counts only without any architecture, and only when it names one label.
        word = (f"CASE WHEN size(filter(tokens, t -> startswith(t, '{ARCHITECTURE_PREFIX}'))) = 0 "
                f"THEN filter({keys(NAME_WORD_PREFIX)}, n -> map_contains_key(_words, n)) END")
        return SQLTransformer(statement=(
            "SELECT *, coalesce(try_element_at(_names, _name), try_element_at(_words, _word), "
            f"{MODEL_PREDICTION_COL}) AS prediction, "
            "coalesce(try_element_at(_confidences, _name), try_element_at(_word_confidences, _word)) "
            f"AS {RULE_CONFIDENCE_COL} "
            f"FROM (SELECT *, {match} AS _name, "
            "CASE WHEN size(_word_keys) = 1 THEN _word_keys[0] END AS _word "
            f"FROM (SELECT *, {word} AS _word_keys "
            f"FROM (SELECT *, {names} AS _names, {typed(self.confidence)} AS _confidences, "
            f"{words} AS _words, {typed(self.word_confidence)} AS _word_confidences FROM __THIS__)))"))


def fit_name_match(data: DataFrame) -> NameMatch | None:
    """Fit the rule on labelled training models.

    Args:
        data: ``tokens``, ``label`` (the field's tokens, its declared value); every
            declared value, pooled ones too, can be named.

    Returns:
        The rule, or None when no declared value can be spelt by an architecture.

    Implementation details:
        Two aggregations on the executors: label -> models, and (normalised architecture
        name, label) -> models. The driver holds one entry per declared value and per
        architecture name seen.
    """
    class_counts = {r["label"]: r["count"] for r in data.groupBy("label").count().collect()}
    by_name: dict[str, str] = {}
    for label, _ in sorted(class_counts.items(), key=lambda kv: (-kv[1], kv[0])):
        key = normalise(label)
        if key and _SAFE_LABEL.match(label) and key not in by_name:
            by_name[key] = label
    if not by_name:
        return None
    known = F.array(*[F.lit(k) for k in sorted(by_name)])
    architectures = _keys(F.col("tokens"), ARCHITECTURE_PREFIX)
    words = F.array_intersect(_keys(F.col("tokens"), NAME_WORD_PREFIX), known)
    # One aggregation for both sources: an architecture name of any model, and the one
    # name word of a model without an architecture (as the stage reads them).
    named = data.select("label", F.explode(F.concat(
        F.transform(F.array_intersect(architectures, known), lambda k: F.struct(F.lit("a").alias("source"), k.alias("key"))),
        F.when((F.size(architectures) == 0) & (F.size(words) == 1),
               F.array(F.struct(F.lit("w").alias("source"), words[0].alias("key"))))
         .otherwise(F.array().cast("array<struct<source:string,key:string>>")))).alias("m"))
    counts = named.groupBy("m.source", "m.key", "label").count().collect()
    labels, confidence, precision = _fit(by_name, [r for r in counts if r["source"] == "a"])
    word_labels, word_confidence, word_precision = _fit(by_name, [r for r in counts if r["source"] == "w"])
    if math.isnan(word_precision):  # no training model was named so: no evidence, no rule
        word_labels, word_confidence = {}, {}
    if not labels and not word_labels:
        return None
    return NameMatch(labels=labels, confidence=confidence, precision=precision, word_labels=word_labels,
                     word_confidence=word_confidence, word_precision=word_precision,
                     word_keys=tuple(sorted(by_name)) if word_labels else ())


def _fit(by_name: Mapping[str, str], counts: list) -> tuple[dict[str, str], dict[str, float], float]:
    """Names kept (precision at least MIN_PRECISION), their smoothed confidences, and the
    precision of all names together, from ``(key, label, count)`` rows of one source."""
    seen: dict[str, int] = {}
    right: dict[str, int] = {}
    for r in counts:
        seen[r["key"]] = seen.get(r["key"], 0) + r["count"]
        if by_name[r["key"]] == r["label"]:
            right[r["key"]] = right.get(r["key"], 0) + r["count"]
    total = sum(seen.values())
    precision = sum(right.values()) / total if total else float("nan")
    prior = precision if total else MIN_PRECISION
    labels: dict[str, str] = {}
    confidence: dict[str, float] = {}
    for key, label in by_name.items():
        n, k = seen.get(key, 0), right.get(key, 0)
        if n and k / n < MIN_PRECISION:
            continue
        labels[key] = label
        confidence[key] = round((k + PRIOR_MODELS * prior) / (n + PRIOR_MODELS), 6)
    return labels, confidence, precision
