"""What the lineage says about a field: the vote of a model's relatives, and when to heed it.

SemFin's fingerprint is what a repo carries. Where a model has relatives in the lineage
graph (``model_parents``), their known values of the field are evidence too: a fine-tune
usually keeps its base's task and licence. The evidence is combined as a stacked model:

* :func:`neighbour_vote`: the relatives' vote, the most frequent known value among the
  model's parents and children, else among its siblings (the other children of its
  parents). Ties go to the smallest value. An isolated model, or one whose relatives know
  nothing, has no vote and keeps the fingerprint alone.
* :class:`NeighbourVote`: fitted on the classifier's validation models
  (:mod:`semfin_spark.classifier`), a confidence below which the vote replaces the
  classifier's answer, and the confidence of a replaced answer (the vote's smoothed
  precision on the validation models it replaced). The threshold is the most accurate on
  the validation models among those whose gain is significant: of the replaced models
  where exactly one of the two is right, the vote must win by at least
  :data:`SIGNIFICANCE_Z` standard deviations (a one-sided sign test, as McNemar's). None
  significant: threshold 0, the vote never replaces. The vote is the last stage of the
  field's ``PipelineModel``, so a registered model carries it.

Measured on ``hub2025_trees`` (random split, seed 0) before this module: feeding the
relatives' values to the classifier as extra tokens gained nothing (pipeline_tag 0.835 ->
0.831, licence unchanged): where the fingerprint is weak, the relatives' tokens are
outweighed by noise, while a vote that takes over below a confidence lifts both.

Leakage: only the values in ``known`` are read, and the caller decides what is known.
:mod:`semfin_spark.evaluate` passes the training side's labels only, so a test model's
label reaches no one's vote, and hides the validation models' labels from the training
side's votes, so the threshold is chosen under the test's conditions; train and impute
pass every declared value, the conditions of the models impute fills. A model's own
value never reaches its own vote: self-loops are dropped and a model is not its own
sibling.

Implementation details:
    DataFrame joins and aggregations on the executors. Siblings are counted per parent
    (``parent, value -> count``) and joined back, minus the model's own contribution, so
    a base model with 100,000 fine-tunes costs 100,000 rows, not 10^10 pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.ml.feature import SQLTransformer
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

VOTE_COL = "neighbour_vote"
"""The relatives' vote, an input column of a field model (null: no vote)."""

VOTE_PREDICTION_COL = "vote_prediction"
"""The vote where it replaces the classifier's answer (null elsewhere)."""

VOTE_CONFIDENCE_COL = "vote_confidence"
"""The confidence of a replaced answer (null elsewhere)."""

CONFIGLESS_COL = "configless"
"""True for a model whose bag names no config.json (:func:`~semfin_spark.features.has_config`
false): the vote stage reads it to apply the configless models' own threshold."""

STAGE_MARKER = "/* semfin:neighbour-vote */"
"""Marks the vote stage's SQL, so :func:`~semfin_spark.classifier.score` can find it."""

SIGNIFICANCE_Z = 1.645
"""A threshold's gain must reach this many standard deviations of the sign test (one-sided 95%)."""

PRIOR_MODELS = 2.0
"""Smoothing of the vote's precision: as if this many more replaced models were half right."""


def lineage_pairs(model_parents: DataFrame) -> DataFrame:
    """``child, parent``: the distinct edges of ``model_parents``, self-loops removed."""
    return (model_parents.where(F.col("model_id") != F.col("parent_id"))
            .select(F.col("model_id").alias("child"), F.col("parent_id").alias("parent"))
            .distinct())


RELATED_COL = "related"
"""Whether the model has lineage: a parent or a child other than itself (:func:`related_models`)."""


def related_models(pairs: DataFrame) -> DataFrame:
    """``model_id``, :data:`RELATED_COL` (true): every model with a parent or a child in
    ``pairs`` (:func:`lineage_pairs`); a model that is not there has no lineage."""
    return (pairs.select(F.col("child").alias("model_id"))
            .union(pairs.select(F.col("parent").alias("model_id")))
            .distinct().withColumn(RELATED_COL, F.lit(True)))


def undeclared_family(related: Column) -> Column:
    """True for a model with lineage (``related``) none of whose relatives declares the
    field: it has no vote (:data:`VOTE_COL` null). Its whole family is unlabelled, so its
    answer is the fingerprint's alone, on tokens its family shares with labelled families
    of other licences, types and tasks: evaluate's component split measures these answers,
    and they are far less often right than their confidence says (the README's
    "Calibration"). An isolated model is not one: its answers are calibrated like the
    random split's."""
    return F.coalesce(related, F.lit(False)) & F.col(VOTE_COL).isNull()


def _majority(counts: DataFrame) -> DataFrame:
    """``model_id, field, value, n`` -> per model and field the value with the largest
    ``n`` > 0 (ties: the smallest value): ``model_id, field, vote``."""
    rank = F.row_number().over(Window.partitionBy("model_id", "field")
                               .orderBy(F.desc("n"), F.asc("value")))
    return (counts.where(F.col("n") > 0).withColumn("_rank", rank).where("_rank = 1")
            .select("model_id", "field", F.col("value").alias("vote")))


def neighbour_vote(pairs: DataFrame, known: DataFrame) -> DataFrame:
    """The relatives' vote of every model that has one, for one field.

    Args:
        pairs: ``child, parent`` (:func:`lineage_pairs`).
        known: ``model_id, label``: the values that may be read (one per model).

    Returns:
        ``model_id``, :data:`VOTE_COL`: one row per model with a vote.

    Examples:
        >>> pairs = spark.createDataFrame([("ft", "base"), ("q", "base")], "child string, parent string")  # doctest: +SKIP
        >>> known = spark.createDataFrame([("base", "mit"), ("q", "apache-2.0")], "model_id string, label string")  # doctest: +SKIP
        >>> sorted(map(tuple, neighbour_vote(pairs, known).collect()))  # doctest: +SKIP
        [('base', 'apache-2.0'), ('ft', 'mit'), ('q', 'mit')]
    """
    return (neighbour_votes(pairs, known.select("model_id", F.lit("").alias("field"), "label"))
            .drop("field"))


def neighbour_votes(pairs: DataFrame, known: DataFrame) -> DataFrame:
    """:func:`neighbour_vote` of every field at once: one plan (one pass over the edges)
    for the night, not one per field.

    Args:
        pairs: ``child, parent`` (:func:`lineage_pairs`).
        known: ``model_id, field, label``: the values that may be read (one per model and
            field).

    Returns:
        ``model_id``, ``field``, :data:`VOTE_COL`: one row per model and field with a vote.
    """
    value = known.select(F.col("model_id").alias("_id"), "field", F.col("label").alias("value"))
    up = (pairs.join(value, pairs["parent"] == value["_id"])
          .select(F.col("child").alias("model_id"), "field", "value"))
    down = (pairs.join(value, pairs["child"] == value["_id"])
            .select(F.col("parent").alias("model_id"), "field", "value"))
    near = _majority(up.unionByName(down).groupBy("model_id", "field", "value")
                     .agg(F.count("*").alias("n")))
    # Siblings: per parent its children's values, joined back to each child minus itself.
    per_parent = (down.groupBy(F.col("model_id").alias("parent"), "field", "value")
                  .agg(F.count("*").alias("n")))
    own = value.select(F.col("_id").alias("child"), "field", F.col("value").alias("_own"))
    siblings = _majority(
        pairs.join(per_parent, "parent").join(own, ["child", "field"], "left")
        .select(F.col("child").alias("model_id"), "field", "value",
                (F.col("n") - F.when(F.col("_own") == F.col("value"), 1).otherwise(0)).alias("n"))
        .groupBy("model_id", "field", "value").agg(F.sum("n").alias("n")))
    return (near.withColumnRenamed("vote", "_near")
            .join(siblings.withColumnRenamed("vote", "_siblings"), ["model_id", "field"], "full_outer")
            .select("model_id", "field", F.coalesce("_near", "_siblings").alias(VOTE_COL)))


def field_vote(votes: DataFrame, field: str) -> DataFrame:
    """``model_id``, :data:`VOTE_COL`: one field's rows of :func:`neighbour_votes`."""
    return votes.where(F.col("field") == field).select("model_id", VOTE_COL)


def with_vote(df: DataFrame, votes: DataFrame) -> DataFrame:
    """``df`` (with ``model_id``) with :data:`VOTE_COL` from ``votes`` (null: no vote)."""
    return df.drop(VOTE_COL).join(votes, "model_id", "left")


@dataclass(frozen=True)
class NeighbourVote:
    """When the relatives' vote replaces the classifier's answer.

    Attributes:
        threshold: the vote replaces answers with a confidence below this (0: never).
        confidence: the confidence of a replaced answer.
        validation: what the choice saw: validation ``n``, models with a vote
            (``with_vote``), accuracy of the classifier alone and with the vote
            (``accuracy_alone``, ``accuracy``), models replaced (``replaced``) and of
            those, the ones only the vote got right (``won``) or only the classifier
            (``lost``).
    """

    threshold: float
    confidence: float
    validation: dict[str, float]

    def stage(self, configless: NeighbourVote | None = None) -> SQLTransformer:
        """The vote as a ``SQLTransformer`` over a scored frame with a ``confidence``
        column: adds :data:`VOTE_PREDICTION_COL` and :data:`VOTE_CONFIDENCE_COL`.

        With ``configless``, a model whose :data:`CONFIGLESS_COL` is true is answered by
        that vote's threshold and confidence instead (the frame must have the column).
        """
        threshold = _double(self.threshold)
        conf = _double(self.confidence)
        if configless is not None:
            threshold = (f"CASE WHEN {CONFIGLESS_COL} THEN {_double(configless.threshold)} "
                         f"ELSE {threshold} END")
            conf = f"CASE WHEN {CONFIGLESS_COL} THEN {_double(configless.confidence)} ELSE {conf} END"
        replaced = f"{VOTE_COL} IS NOT NULL AND confidence < {threshold}"
        return SQLTransformer(statement=(
            f"SELECT {STAGE_MARKER} *, CASE WHEN {replaced} THEN {VOTE_COL} END AS {VOTE_PREDICTION_COL}, "
            f"CASE WHEN {replaced} THEN {conf} END AS {VOTE_CONFIDENCE_COL} FROM __THIS__"))


def _double(x: float) -> str:
    return f"CAST({float(x)!r} AS DOUBLE)"


def is_vote_stage(stage: object) -> bool:
    """True for the stage :meth:`NeighbourVote.stage` makes."""
    return isinstance(stage, SQLTransformer) and STAGE_MARKER in (stage.getStatement() or "")


BINS = 20
"""Confidence bins the threshold is chosen from (edges 0, 0.05, ..., 1, and above 1)."""


def fit_vote(cells: dict[tuple[int, bool, bool, bool], int]) -> NeighbourVote | None:
    """Choose the threshold from validation counts.

    Args:
        cells: ``{(bin, has_vote, classifier_right, vote_right): models}`` where ``bin`` is
            ``floor(confidence * BINS)`` capped at ``BINS - 1``.

    Returns:
        The :class:`NeighbourVote` with the most accurate threshold whose gain is
        significant (ties: the lowest, so the classifier keeps what the vote does not
        win), threshold 0 when none is; None when no validation model has a vote.

    Examples:
        >>> vote = fit_vote({(3, True, False, True): 6, (3, True, True, False): 1, (19, True, True, False): 5})
        >>> vote.threshold, vote.validation["accuracy_alone"], vote.validation["accuracy"]
        (0.2, 0.5, 0.916667)
        >>> fit_vote({(3, True, False, True): 2, (3, True, True, False): 1, (19, True, True, True): 5}).threshold
        0.0
    """
    n = sum(cells.values())
    with_vote_n = sum(c for (_, has, _, _), c in cells.items() if has)
    if not n or not with_vote_n:
        return None
    alone = sum(c for (_, _, right, _), c in cells.items() if right)
    best: tuple[int, int] = (alone, 0)   # (right answers, edge index): edge 0 replaces nothing
    for edge in range(1, BINS + 2):      # edge BINS + 1: every vote replaces
        swapped = [(clf, vote, c) for (b, has, clf, vote), c in cells.items() if has and b < edge]
        won = sum(c for clf, vote, c in swapped if vote and not clf)
        lost = sum(c for clf, vote, c in swapped if clf and not vote)
        significant = won - lost >= SIGNIFICANCE_Z * math.sqrt(won + lost) and won > lost
        if significant and alone + won - lost > best[0]:
            best = (alone + won - lost, edge)
    right, edge = best
    replaced = {k: c for k, c in cells.items() if k[1] and k[0] < edge}
    won = sum(c for (_, _, clf, vote), c in replaced.items() if vote and not clf)
    lost = sum(c for (_, _, clf, vote), c in replaced.items() if clf and not vote)
    n_replaced = sum(replaced.values())
    vote_right = sum(c for (_, _, _, v), c in replaced.items() if v)
    overall = sum(c for (_, has, _, v), c in cells.items() if has and v) / with_vote_n
    confidence = (vote_right + PRIOR_MODELS * overall) / (n_replaced + PRIOR_MODELS)
    threshold = min(edge / BINS, 1.0) if edge <= BINS else 1.000001
    return NeighbourVote(
        threshold=round(threshold, 6), confidence=round(confidence, 6),
        validation={"n": n, "with_vote": with_vote_n, "replaced": n_replaced, "won": won, "lost": lost,
                    "accuracy_alone": round(alone / n, 6), "accuracy": round(right / n, 6)})
