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

The stage is a Spark ML ``SQLTransformer`` inside the field's ``PipelineModel``, so the
model logged to MLflow carries the rule and the label table, and loads back as any
Spark model. The classifier's own answer stays in the ``model_prediction`` column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from pyspark.ml.feature import SQLTransformer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

NAME_MATCH_FIELDS = ("model_type",)
"""Fields whose classifier is followed by the name match."""

ARCHITECTURE_PREFIX = "architecture:"
"""The token :mod:`semfin_spark.features` makes of a config's architecture class."""

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


@dataclass(frozen=True)
class NameMatch:
    """The fitted rule: normalised architecture name -> (label, confidence)."""

    labels: Mapping[str, str]
    confidence: Mapping[str, float]
    precision: float
    """Precision of every name together on the training models (nan without evidence)."""

    def stage(self) -> SQLTransformer:
        """The rule as a ``SQLTransformer``: ``model_prediction`` -> ``prediction``,
        ``rule_confidence``."""
        def literal_map(values: Mapping[str, str]) -> str:
            return "map(" + ", ".join(f"'{k}', {v}" for k, v in sorted(values.items())) + ")"

        names = literal_map({k: f"'{v}'" for k, v in self.labels.items()})
        confidences = literal_map({k: f"CAST({v!r} AS DOUBLE)" for k, v in self.confidence.items()})
        start = len(ARCHITECTURE_PREFIX) + 1
        match = (f"get(filter(transform(filter(tokens, t -> startswith(t, '{ARCHITECTURE_PREFIX}')), "
                 f"t -> regexp_replace(substr(t, {start}), '[^a-z0-9]', '')), "
                 f"n -> map_contains_key(_names, n)), 0)")
        return SQLTransformer(statement=(
            f"SELECT *, coalesce(try_element_at(_names, _name), {MODEL_PREDICTION_COL}) AS prediction, "
            f"try_element_at(_confidences, _name) AS {RULE_CONFIDENCE_COL} "
            f"FROM (SELECT *, {match} AS _name "
            f"FROM (SELECT *, {names} AS _names, {confidences} AS _confidences FROM __THIS__))"))


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
    names = (data.select("label", F.explode(F.array_distinct(F.transform(
                F.filter("tokens", lambda t: t.startswith(ARCHITECTURE_PREFIX)),
                lambda t: _normalised(F.substring(t, len(ARCHITECTURE_PREFIX) + 1, 1_000))))).alias("name"))
             .where(F.col("name").isin(*by_name))
             .groupBy("name", "label").count().collect())
    seen: dict[str, int] = {}
    right: dict[str, int] = {}
    for r in names:
        seen[r["name"]] = seen.get(r["name"], 0) + r["count"]
        if by_name[r["name"]] == r["label"]:
            right[r["name"]] = right.get(r["name"], 0) + r["count"]
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
    return NameMatch(labels=labels, confidence=confidence, precision=precision) if labels else None
