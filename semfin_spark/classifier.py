"""The field classifier: fitting, scoring and measuring one field's model (Spark ML).

For a field's labelled models (models that declare it in ``model_fields``,
:func:`labels`), :func:`fit_field` builds a
``PipelineModel`` that goes from a model's tokens (:mod:`semfin_spark.features`, with the
field's leaking tokens removed) to a label and a confidence:

    ``CountVectorizer`` (binary, ``train.min_feature_df``, ``train.max_features``)
    -> classifier (the family that won on validation) -> ``IndexToString``

The fitted model needs only ``model_id, tokens`` to score: the labels live in the
``IndexToString`` stage, whose output column is ``prediction`` (the classifier's own
index column is ``prediction_index``), and ``probability`` holds the class probabilities.

``model_type`` has one more stage, the name match of :mod:`semfin_spark.name_match`: an
architecture class name that spells a declared model type (``LEDForConditionalGeneration``
-> ``led``) predicts it, with a confidence fitted on the training models, so a type seen
once in training is still predicted; a model without an architecture is named the same way
by a word of its repo name (``tiny-random-xlnet`` -> ``xlnet``).

Rare classes: declared values with fewer than ``train.min_class_support`` training
examples are pooled into :data:`POOLED_CLASS` (``__other__``) for training, and reported
(``FieldModel.pooled``, the MLflow per-class report). The pooled class gets a threshold of
:data:`POOLED_THRESHOLD` in the fitted classifier (Spark ML predicts the largest
probability / threshold), so the model predicts the most probable *real* class while the
pooled class keeps its share of the probability mass. The confidence is the probability
of the predicted class (:func:`confidence`), not the largest probability, so a model that
looks like a rare class gets a low confidence. Only when every real class has probability
exactly 0 (naive Bayes can underflow) is ``__other__`` predicted; it is never a value to
write: the impute stage skips it and the evaluation counts it as no prediction.

A field with more labelled models than its ``train.max_training_models`` is fitted on a seeded
sample of them (:func:`capped`): each class keeps the same share of its models, but at
least :data:`CAP_MIN_PER_CLASS`, so the frequent classes are thinned and the rare ones
kept. Every L-BFGS iteration is a pass over the training vectors, so the fit's time
follows the sample, not the Hub; the class counts, pooling and the name match still count
every labelled model.

Choosing the family (``train.classifiers``): a seeded :data:`VALIDATION_FRACTION` of the
training models (by a hash of the model id, so the same models whatever the row order) is
held out; each family is fitted on the rest and scored on it; the best validation accuracy
wins, a tie goes to the lower log loss (better calibrated confidences), then to the simpler
family (:data:`FAMILIES` order); the winner is then refitted on every training model
(logistic regression from the validation fit's coefficients, :func:`_warm_start`). Past
:data:`VALIDATION_MAX_MODELS` training models the comparison runs on a seeded sample of
that size. Families:

* ``naive_bayes``: multinomial naive Bayes on the binary token vector (smoothing
  :data:`NB_SMOOTHING`).
* ``logistic_regression``: multinomial logistic regression, L2 (``regParam``
  :data:`LR_REG_PARAM`), at most :data:`LR_MAX_ITER` L-BFGS iterations, no standardisation
  (the features are 0/1), blocks of :data:`LR_BLOCK_MB`.
* ``random_forest``: :data:`RF_TREES` trees of depth :data:`RF_DEPTH`; slower, offered for
  comparison (not in the default list: it did not pay on the real data, see the README).

Train, evaluate and impute use this module; none of them reaches into another stage.

Implementation details:
    Features, vectors and model fitting run on the executors (Spark ML). The driver
    collects only per-class counts (the class list, the confusion matrix: their size grows
    with the number of classes, not of models) and the fitted coefficients, which Spark ML
    keeps on the driver anyway.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.feature import CountVectorizer, IndexToString
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.name_match import (
    MODEL_PREDICTION_COL, NAME_MATCH_FIELDS, RULE_CONFIDENCE_COL, NameMatch, fit_name_match,
)
from semfin_spark.features import has_config, without_config
from semfin_spark.neighbourhood import (
    BINS, CONFIGLESS_COL, VOTE_COL, VOTE_CONFIDENCE_COL, VOTE_PREDICTION_COL, NeighbourVote, fit_vote,
    is_vote_stage,
)
from semfin_spark.schemas import MODEL_FIELDS
from semfin_spark.settings import FIELDS, ImputeSettings, Settings, TrainSettings


CONFIG_FIELDS = ("model_type",)
"""Fields read from config.json: no model without one declares them, so every model they
are missing from carries none, unlike every validation model. Their relatives' vote gets
a second threshold for models without a config, chosen on copies of the validation models
without their config (:func:`_without_configs`)."""

POOLED_CLASS = "__other__"
"""The class that pools labels rarer than ``train.min_class_support``; never a value to write."""

FAMILIES = ("naive_bayes", "logistic_regression", "random_forest")
"""Classifier families, simplest first (a validation tie goes to the earlier one)."""

VALIDATION_FRACTION = 0.2
"""Share of the training models held out to choose the family."""

VALIDATION_SEED = 7919
"""Added to the seed for the validation hold-out (:func:`held_out`)."""

VALIDATION_MAX_MODELS = 50_000
"""Above this many training models, the families are compared on a seeded sample of this
size (split the same way); the winner is still refitted on every training model."""

EXCLUDED_LABELS: Mapping[str, tuple[str, ...]] = {"license": ("unknown",)}
"""Declared values that are not a class: ``unknown`` is a licence nothing recognised."""

CAP_MIN_PER_CLASS = 100
"""Under ``train.max_training_models``, a class keeps at least this many of its models
(all of them when it has fewer): the sample thins the frequent classes, not the rare ones."""

CAP_SEED = 1299709
"""Added to the seed for the sample of ``train.max_training_models`` (a prime, as the others)."""

TRAIN_ROWS_PER_PARTITION = 50_000
"""Upper bound of training models per partition when a field is fitted (:func:`sized`)."""

TRAIN_ROWS_PER_CORE = 5_000
"""Lower bound of training models per partition, up to one partition per core
(:func:`sized`). Fits of the licence vectors of a 20,000-model generated Hub, 50 L-BFGS
iterations in the embedded session on two cores: 1,000 models 2.5 s in one partition and
3.9 s in two, 3,000 models 3.4 s and 4.0 s, 6,000 models 4.7 s in either, 10,000 models
7.8 to 8.3 s and 6.4 s: below a few thousand rows a second task costs more than it shares."""

LOG_LOSS_FLOOR = 1e-15
"""Smallest probability of the true class counted by the validation log loss."""

POOLED_THRESHOLD = 1e12
"""Threshold of the pooled class (Spark ML predicts the class with the largest p/t)."""

LR_REG_PARAM = 0.0001

LR_MAX_ITER = 50

LR_WARM_MAX_ITER = 20
"""L-BFGS iterations of the refit on every training model, which starts from the
coefficients of the validation fit (:func:`_warm_start`) instead of from zero. Measured on
`hub2022_dev` (seed 0), the training loss after 20 warm iterations against 50 from zero:
licence 0.0662 / 0.0661, pipeline_tag 0.0445 / 0.0449, model_type 0.0519 / 0.0524; the
test accuracy within two models per field (the README, "The classifiers")."""

LR_BLOCK_MB = 8.0
"""Spark ML stacks the training vectors into blocks of this size for L-BFGS (its default,
1 MB, makes a few hundred rows a block on these sparse bags). Each block of sparse rows
costs one pass over a dense features x classes gradient, so larger blocks spend less per
iteration: with :func:`sized`'s hashed partitions, `semfin train` of a 20,000-model Hub
took 117 to 131 s instead of 135 to 144 s (the same validation figures)."""

NB_SMOOTHING = 0.1

RF_TREES = 60

RF_DEPTH = 12

PREDICTION_COL = "prediction"
"""Output column of a field model: the label (``IndexToString``)."""

_INDEX_COL, _LABEL_INDEX, _FEATURES = "prediction_index", "label_index", "features"


class TrainError(RuntimeError):
    """A field cannot be trained as asked (no labels, unknown classifier family)."""


def labels(store: DeltaStore, field: str) -> DataFrame:
    """The declared value of ``field`` for every model that declares it.

    Args:
        store: the warehouse (reads ``model_fields``).
        field: one of :data:`~semfin_spark.settings.FIELDS`.

    Returns:
        ``model_id``, ``label`` (string): one row per model with a declared value, minus
        :data:`EXCLUDED_LABELS`.

    Raises:
        ValueError: unknown field.

    Examples:
        >>> labels(store, "pipeline_tag").groupBy("label").count().show()   # doctest: +SKIP
    """
    if field not in FIELDS:
        raise ValueError(f"unknown field {field!r}; choose from {', '.join(FIELDS)}")
    return (declared_labels(store.read(MODEL_FIELDS)).where(F.col("field") == field)
            .select("model_id", "label"))


def declared_labels(model_fields: DataFrame) -> DataFrame:
    """``model_id``, ``field``, ``label``: every declared value of ``model_fields`` rows
    that is a class (not blank, not :data:`EXCLUDED_LABELS`)."""
    rows = model_fields.where(F.col("declared_value").isNotNull()
                              & (F.trim("declared_value") != ""))
    for name, excluded in EXCLUDED_LABELS.items():
        rows = rows.where(~((F.col("field") == name) & F.col("declared_value").isin(*excluded)))
    return rows.select("model_id", "field", F.col("declared_value").alias("label"))


def held_out(seed: int) -> Any:
    """A boolean column over ``model_id``: true for the training models :func:`fit_field`
    holds out for validation with this seed (:data:`VALIDATION_FRACTION` of them)."""
    return split_flag("model_id", seed + VALIDATION_SEED, VALIDATION_FRACTION)


def split_flag(column: str, seed: int, fraction: float) -> Any:
    """A boolean column: true for a seeded ``fraction`` of the values of ``column``.

    Deterministic whatever the row order or partitioning (a hash of the value and the
    seed, not ``randomSplit``): the same ids fall on the same side on every run.
    """
    return _bucket(column, seed) < F.lit(int(round(fraction * _BUCKETS)))


_BUCKETS = 1_000_000


def _bucket(column: str, seed: int) -> Any:
    """A value's seeded bucket in [0, :data:`_BUCKETS`): the hash behind every sample here."""
    return F.pmod(F.xxhash64(F.col(column).cast("string"), F.lit(int(seed))), F.lit(_BUCKETS))


@dataclass
class Metrics:
    """Classification figures of predictions against true labels.

    ``accuracy`` counts a missing prediction as wrong; ``coverage`` is the share with a
    prediction; ``macro_f1`` averages F1 over the classes present in the true labels.
    ``confusion`` is ``{true: {predicted: count}}`` (a missing prediction is ``None``),
    ``per_class`` is ``{class: {precision, recall, f1, support}}``.
    """

    n: int = 0
    accuracy: float = 0.0
    macro_f1: float = 0.0
    coverage: float = 0.0
    confusion: dict[str, dict[str | None, int]] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "coverage": self.coverage}


def metrics_from_confusion(cells: Mapping[tuple[str, str | None], int]) -> Metrics:
    """:class:`Metrics` from ``{(true, predicted): count}`` (predicted None: no prediction).

    Examples:
        >>> metrics_from_confusion({("a", "a"): 1, ("a", None): 1, ("b", "a"): 1}).summary()
        {'accuracy': 0.333333, 'macro_f1': 0.25, 'coverage': 0.666667}
    """
    n = sum(cells.values())
    if n == 0:
        return Metrics()
    correct = sum(c for (t, p), c in cells.items() if p is not None and t == p)
    covered = sum(c for (t, p), c in cells.items() if p is not None)
    classes = sorted({t for t, _ in cells})
    per_class: dict[str, dict[str, float]] = {}
    for cls in classes:
        tp = cells.get((cls, cls), 0)
        support = sum(c for (t, _), c in cells.items() if t == cls)
        predicted = sum(c for (_, p), c in cells.items() if p == cls)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (support + predicted) if support + predicted else 0.0
        per_class[cls] = {"precision": _r(precision), "recall": _r(recall), "f1": _r(f1),
                          "support": support}
    confusion: dict[str, dict[str | None, int]] = {}
    for (t, p), c in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        confusion.setdefault(t, {})[p] = c
    macro = sum(v["f1"] for v in per_class.values()) / len(per_class)
    return Metrics(n=n, accuracy=_r(correct / n), macro_f1=_r(macro), coverage=_r(covered / n),
                   confusion=confusion, per_class=per_class)


def _r(x: float) -> float:
    return round(float(x), 6)


@dataclass
class FieldModel:
    """A fitted field classifier and how it was chosen.

    Attributes:
        field: the field it predicts.
        family: the classifier family that won on validation.
        model: the ``PipelineModel`` (tokens -> ``prediction``, ``probability``).
        classes: the class labels in index order (:data:`POOLED_CLASS` among them when
            rare classes were pooled).
        class_counts: training models per declared value (before pooling).
        pooled: the declared values pooled into :data:`POOLED_CLASS`, with their counts.
        n_train: labelled training models.
        n_fit: the models the classifier was fitted on (``n_train``, or its sample under
            ``train.max_training_models``).
        validation: per family tried, ``{accuracy, macro_f1, n}`` on the validation models.
        validation_metrics: the winner's full :class:`Metrics` on the validation models
            (confusion matrix, per-class report).
        seconds: wall time of the fit, validation included.
        name_match: the fitted name-match rule (:mod:`semfin_spark.name_match`), a
            stage of ``model``, for the fields of ``NAME_MATCH_FIELDS``; else None.
        vote: when the relatives' vote replaces the classifier's answer
            (:mod:`semfin_spark.neighbourhood`), the last stage of ``model``; None when
            the training data had no vote column or no validation model had a vote.
        configless_vote: for a field of :data:`CONFIG_FIELDS`, the vote for models
            without a config.json (:func:`~semfin_spark.features.has_config`: adapters,
            GGUF repos), fitted on the validation models with their config tokens removed
            (:func:`_without_configs`); None: every model follows ``vote``.
    """

    field: str
    family: str
    model: PipelineModel
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    pooled: dict[str, int]
    n_train: int
    validation: dict[str, dict[str, float]]
    validation_metrics: Metrics
    seconds: float
    name_match: NameMatch | None = None
    vote: NeighbourVote | None = None
    n_fit: int = 0
    configless_vote: NeighbourVote | None = None

    @property
    def vocabulary(self) -> list[str]:
        """The tokens the classifier sees (the ``CountVectorizer`` vocabulary)."""
        return vocabulary(self.model)


def vocabulary(model: PipelineModel) -> list[str]:
    """The token vocabulary of a field's ``PipelineModel``."""
    from pyspark.ml.feature import CountVectorizerModel

    for stage in model.stages:
        if isinstance(stage, CountVectorizerModel):
            return list(stage.vocabulary)
    raise TrainError("the model has no CountVectorizer stage")


def _estimator(family: str, seed: int) -> Any:
    from pyspark.ml.classification import LogisticRegression, NaiveBayes, RandomForestClassifier

    common = dict(featuresCol=_FEATURES, labelCol=_LABEL_INDEX, predictionCol=_INDEX_COL,
                  probabilityCol="probability", rawPredictionCol="raw_prediction")
    if family == "naive_bayes":
        return NaiveBayes(modelType="multinomial", smoothing=NB_SMOOTHING, **common)
    if family == "logistic_regression":
        return LogisticRegression(family="multinomial", maxIter=LR_MAX_ITER, regParam=LR_REG_PARAM,
                                  elasticNetParam=0.0, standardization=False,
                                  maxBlockSizeInMB=LR_BLOCK_MB, **common)
    if family == "random_forest":
        return RandomForestClassifier(numTrees=RF_TREES, maxDepth=RF_DEPTH, seed=seed,
                                      featureSubsetStrategy="sqrt", subsamplingRate=0.8, **common)
    raise TrainError(f"unknown classifier family {family!r}; choose from {', '.join(FAMILIES)}")


def _vectorizer(settings: TrainSettings) -> CountVectorizer:
    return CountVectorizer(inputCol="tokens", outputCol=_FEATURES, binary=True,
                           minDF=float(settings.min_feature_df), vocabSize=settings.max_features)


def _class_index(classes: Sequence[str], pooled: Mapping[str, int]) -> Any:
    """label -> index (double) as a literal map; pooled labels go to POOLED_CLASS's index."""
    index = {c: float(i) for i, c in enumerate(classes)}
    for label in pooled:
        index[label] = index[POOLED_CLASS]
    pairs = [x for item in sorted(index.items()) for x in (F.lit(item[0]), F.lit(item[1]))]
    # Nominal metadata, as StringIndexer writes it: the number of classes is then the
    # length of the class list, not the largest index that happens to be in the data.
    attrs = {"ml_attr": {"type": "nominal", "name": _LABEL_INDEX, "vals": list(classes)}}
    return F.element_at(F.create_map(*pairs), F.col("label")).alias(_LABEL_INDEX, metadata=attrs)


def _never_pooled(classifier: Any, classes: Sequence[str]) -> Any:
    """The fitted classifier with the pooled class's threshold so high it never wins.

    The pooled class keeps its share of the probability (so the confidence of a model
    that looks rare stays low), but the prediction is the most probable real class.
    """
    if POOLED_CLASS in classes and len(classes) > 1:
        classifier.setThresholds([POOLED_THRESHOLD if c == POOLED_CLASS else 1.0 for c in classes])
    return classifier


@dataclass(frozen=True)
class _Fitted:
    """A family's classifier as fitted on the validation's fit side, with the vectorizer and
    the classes its coefficients are indexed by: where the refit starts (:func:`_warm_start`)."""

    classifier: Any
    vectorizer: Any
    classes: tuple[str, ...]


def _compare_families(fit_part: DataFrame, val_part: DataFrame, families: Sequence[str],
                      classes: Sequence[str], pooled: Mapping[str, int], t: TrainSettings,
                      seed: int, name_match: bool = False, with_vote: bool = False,
                      configless: bool = False,
                      ) -> tuple[dict[str, dict[str, float]], dict[str, Metrics], dict[str, Any], dict[str, _Fitted]]:
    """Fit each family on ``fit_part``, score it on ``val_part``: per family the summary
    figures, the full :class:`Metrics`, (``with_vote``: ``val_part`` has
    :data:`~semfin_spark.neighbourhood.VOTE_COL`) the counts the vote is fitted on
    (:func:`~semfin_spark.neighbourhood.fit_vote`), and (``configless``) those of the
    validation models' copies without a config (:func:`_without_configs`), and the fitted
    classifier (:class:`_Fitted`).

    The fit side is indexed with the classes it holds, not all of ``classes``: Spark ML's
    naive Bayes numbers the classes it sees 0..k-1, so a class whose every model fell on
    the validation side would shift every later index and mislabel predictions. The
    validation side keeps its declared labels, pooled ones too: a pooled model counts as
    an error unless the name match (``name_match``, fitted on ``fit_part``) gets it.
    """
    truth = (F.when(F.col("label").isin(*pooled), F.lit(POOLED_CLASS)).otherwise(F.col("label"))
             if pooled else F.col("label"))
    present = {r[0] for r in fit_part.select(truth.alias("c")).distinct().collect()}
    fit_classes = [c for c in classes if c in present]
    true_index = _class_index(fit_classes, pooled if POOLED_CLASS in present else {})
    indexed = fit_part.withColumn(_LABEL_INDEX, true_index)
    vectors = _vectorizer(t).fit(indexed)
    fit_vec = vectors.transform(indexed).persist(StorageLevel.MEMORY_AND_DISK)
    val_vec = vectors.transform(_without_configs(val_part) if with_vote and configless else val_part) \
        .persist(StorageLevel.MEMORY_AND_DISK)
    rule = fit_name_match(fit_part) if name_match else None
    to_label = IndexToString(inputCol=_INDEX_COL, labels=fit_classes,
                             outputCol=MODEL_PREDICTION_COL if rule else PREDICTION_COL)
    validation: dict[str, dict[str, float]] = {}
    metrics: dict[str, Metrics] = {}
    vote_cells: dict[str, Any] = {}
    fitted: dict[str, _Fitted] = {}
    try:
        # Validated even when there is one family: its figures are logged.
        for family in families:
            clf = _never_pooled(_estimator(family, seed).fit(fit_vec), fit_classes)
            fitted[family] = _Fitted(clf, vectors, tuple(fit_classes))
            scored = to_label.transform(clf.transform(val_vec))
            if rule:
                scored = rule.stage().transform(scored)
            confusion, cells, log_loss = _validation_counts(scored, true_index, with_vote)
            m = metrics[family] = metrics_from_confusion(confusion)
            if with_vote:
                vote_cells[family] = cells
            validation[family] = {"accuracy": m.accuracy, "macro_f1": m.macro_f1, "n": m.n,
                                  "log_loss": log_loss}
    finally:
        fit_vec.unpersist()
        val_vec.unpersist()
    return validation, metrics, vote_cells, fitted


def _without_configs(val_part: DataFrame) -> DataFrame:
    """The validation models, then a copy of each one that carries a config, its config
    tokens removed (:func:`~semfin_spark.features.without_config`), marked by
    :data:`~semfin_spark.neighbourhood.CONFIGLESS_COL`.

    The models a field of :data:`CONFIG_FIELDS` is missing from are not like those that
    declare it: a model lacks ``model_type`` exactly when it carries no config.json (the
    type is read from it), while every validation model carries one. Answering the copies
    tells how the classifier and the vote do without a config, and so when the vote
    should answer for an adapter or a GGUF repo.
    """
    real = val_part.withColumn(CONFIGLESS_COL, F.lit(False))
    copies = (val_part.where(has_config(F.col("tokens")))
              .withColumn("tokens", without_config(F.col("tokens")))
              .withColumn(CONFIGLESS_COL, F.lit(True)))
    return real.unionByName(copies)


def _validation_counts(scored: DataFrame, true_index: Any, with_vote: bool,
                       ) -> tuple[dict[tuple[str, str | None], int],
                                  dict[bool, dict[tuple[int, bool, bool, bool], int]], float]:
    """What a family's validation needs, from one aggregation of its scored validation side
    (the driver gets one row per confusion cell, confidence bin and vote outcome):

    * the confusion cells ``{(true, predicted): models}`` (:func:`metrics_from_confusion`)
      of the validation models (not of the copies of :func:`_without_configs`);
    * with ``with_vote``, the vote's cells ``{(confidence bin, has a vote, classifier
      right, vote right): models}`` (:func:`~semfin_spark.neighbourhood.fit_vote`):
      under ``False`` the validation models', under ``True`` the copies' (when ``scored``
      has them); else an empty dict;
    * the mean log loss, -log p(true class) with p clipped at :data:`LOG_LOSS_FLOOR` (a
      label the fit side never saw has p = 0), of the validation models; NaN without
      validation models.
    """
    p = F.element_at(vector_to_array("probability"), true_index.cast("int") + F.lit(1))
    loss = -F.log(F.greatest(F.coalesce(p, F.lit(0.0)), F.lit(LOG_LOSS_FLOOR)))
    keys = [F.col("label").alias("t"), F.col(PREDICTION_COL).alias("p")]
    if with_vote:
        conf = confidence()
        if RULE_CONFIDENCE_COL in scored.columns:
            conf = F.coalesce(F.col(RULE_CONFIDENCE_COL), conf)
        keys += [F.least(F.floor(F.coalesce(conf, F.lit(0.0)) * BINS), F.lit(BINS - 1)).cast("int").alias("b"),
                 F.col(VOTE_COL).isNotNull().alias("has"),
                 F.coalesce(F.col(VOTE_COL) == F.col("label"), F.lit(False)).alias("vote")]
    copy = F.col(CONFIGLESS_COL) if CONFIGLESS_COL in scored.columns else F.lit(False)
    rows = scored.groupBy(*keys, copy.alias("c")).agg(F.count("*").alias("n"), F.sum(loss).alias("loss")).collect()
    confusion: dict[tuple[str, str | None], int] = {}
    cells: dict[bool, dict[tuple[int, bool, bool, bool], int]] = {False: {}, True: {}} if with_vote else {}
    real = [r for r in rows if not r["c"]]
    for r in rows:
        if not r["c"]:
            confusion[(r["t"], r["p"])] = confusion.get((r["t"], r["p"]), 0) + r["n"]
        if with_vote:
            key = (r["b"], r["has"], r["p"] is not None and r["p"] == r["t"], r["vote"])
            cells[r["c"]][key] = cells[r["c"]].get(key, 0) + r["n"]
    n = sum(r["n"] for r in real)
    log_loss = _r(sum(r["loss"] for r in real) / n) if n else float("nan")
    return confusion, cells, log_loss


def fit_field(spark: SparkSession, train_df: DataFrame, field: str, settings: Settings, *,
              seed: int = 0) -> FieldModel:
    """Fit the classifier of one field on labelled models.

    Args:
        spark: the session.
        train_df: ``model_id``, ``tokens`` (already without the field's leaking tokens:
            :func:`~semfin_spark.features.field_tokens`), ``label``, and optionally the
            relatives' vote (:data:`~semfin_spark.neighbourhood.VOTE_COL`), read for the
            validation models (:func:`held_out`) to fit when the vote replaces an answer:
            give them the votes that the models to answer will have.
        field: the field (for names and reports).
        settings: ``settings.train`` (families, pooling, vocabulary size).
        seed: seeds the validation hold-out and the random forest.

    Returns:
        A :class:`FieldModel`; its ``model`` scores a DataFrame of ``model_id, tokens``.

    Raises:
        TrainError: no labelled model, or an unknown family in ``train.classifiers``.

    Examples:
        >>> fm = fit_field(spark, train_df, "pipeline_tag", settings)    # doctest: +SKIP
        >>> fm.family, fm.validation["naive_bayes"]["accuracy"]          # doctest: +SKIP
        ('logistic_regression', 0.93)

    Implementation details:
        The driver collects the per-class counts (to pool and index the classes), then each
        family is fitted on the persisted vectors of the non-validation models; the winner
        is refitted with a vocabulary of all training models (logistic regression starts
        from the validation fit's coefficients, laid out on the driver). Everything else
        runs on the executors.
    """
    del spark  # the data's session does the work; kept for the stage signature
    started = time.time()
    t = settings.train
    families = [f for f in FAMILIES if f in t.classifiers]
    unknown = sorted(set(t.classifiers) - set(FAMILIES))
    if unknown or not families:
        raise TrainError(f"unknown classifier famil(ies) {unknown or list(t.classifiers)}; "
                         f"choose from {', '.join(FAMILIES)}")
    with_vote = t.neighbour_vote and VOTE_COL in train_df.columns
    data = (train_df.select("model_id", "tokens", "label", *([VOTE_COL] if with_vote else []))
            .where(F.col("label").isNotNull()))
    counts = {r["label"]: r["count"] for r in data.groupBy("label").count().collect()}
    if not counts:
        raise TrainError(f"no labelled model to train {field} on")
    pooled = {c: n for c, n in counts.items() if n < t.min_class_support}
    kept = {c: n for c, n in counts.items() if c not in pooled}
    if pooled:
        kept[POOLED_CLASS] = sum(pooled.values())
    classes = tuple(sorted(kept, key=lambda c: (-kept[c], c)))
    n_train = sum(counts.values())
    labelled = data
    data, n_fit = capped(data, counts, int(t.max_training_models.get(field, 0)), seed)
    data = sized(data, n_fit).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        held = held_out(seed)
        fit_part, val_part = data.where(~held), data.where(held)
        if n_fit > VALIDATION_MAX_MODELS:
            # Choosing a family needs no more than a sample; the winner is refitted on all.
            sample = split_flag("model_id", seed + 104729, VALIDATION_MAX_MODELS / n_fit)
            fit_part, val_part = fit_part.where(sample), val_part.where(sample)
        with_rule = field in NAME_MATCH_FIELDS
        validation, metrics, vote_cells, fitted = _compare_families(
            fit_part, val_part, families, classes, pooled, t, seed, name_match=with_rule,
            with_vote=with_vote, configless=field in CONFIG_FIELDS)
        # Best validation accuracy; then the lower log loss (the confidence gates imputation,
        # so the better calibrated family wins a tie); then FAMILIES order (simplest first).
        best = max(families, key=lambda f: (validation[f]["accuracy"], -validation[f]["log_loss"],
                                            -FAMILIES.index(f)))

        indexed = data.withColumn(_LABEL_INDEX, _class_index(classes, pooled))
        full_vectors = _vectorizer(t).fit(indexed)
        full_vec = full_vectors.transform(indexed).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            estimator = _estimator(best, seed)
            if best == "logistic_regression":
                estimator = _warm_start(full_vec.sparkSession, estimator, fitted[best],
                                        full_vectors.vocabulary, classes)
            clf = _never_pooled(estimator.fit(full_vec), classes)
        finally:
            full_vec.unpersist()
    finally:
        data.unpersist()
    # The name match counts names, not vectors: every labelled model, sampled or not.
    rule = fit_name_match(labelled) if with_rule else None
    stages: list[Any] = [
        full_vectors, clf,
        IndexToString(inputCol=_INDEX_COL, labels=list(classes),
                      outputCol=MODEL_PREDICTION_COL if rule else PREDICTION_COL),
    ]
    if rule:
        stages.append(rule.stage())
    # The vote is fitted on the winner's validation answers, given by a classifier fitted
    # without the validation models. The refit on every training model is stronger, so
    # the vote's gain measured here can overstate its gain on new models; the significance
    # test limits that, not removes it. The validation models' votes are the caller's:
    # evaluate computes them without the validation side's labels (held_out), as the test
    # models' without the test side's.
    vote = fit_vote(vote_cells[best][False]) if with_vote else None
    # Models without a config (for model_type: every model the field is missing from)
    # get a vote chosen on models without one: the copies of _without_configs.
    configless_vote = fit_vote(vote_cells[best][True]) if vote and field in CONFIG_FIELDS else None
    if vote:
        stages.append(vote.stage(configless_vote))
    return FieldModel(field=field, family=best, model=PipelineModel(stages=stages), classes=classes,
                      class_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
                      pooled=dict(sorted(pooled.items())), n_train=n_train,
                      validation=validation, validation_metrics=metrics[best],
                      seconds=round(time.time() - started, 3), name_match=rule, vote=vote,
                      n_fit=n_fit, configless_vote=configless_vote)


def _warm_start(spark: SparkSession, estimator: Any, start: _Fitted, vocabulary: Sequence[str],
                classes: Sequence[str]) -> Any:
    """``estimator`` (a ``LogisticRegression``) set to start from ``start``'s coefficients,
    laid out for ``vocabulary`` and ``classes``, and to stop after :data:`LR_WARM_MAX_ITER`
    L-BFGS iterations.

    The refit on every training model learns nearly what the validation fit learnt from
    four fifths of them: from zero it needs as many iterations again, from there a few. A
    token or class the validation fit did not have starts at zero (its intercept at the
    lowest one: a class missing from four fifths of the models is rare).

    Spark ML's ``setInitialModel`` is not in its Python API; it is called on the Java
    estimator, as ``fit`` itself calls it (a classic session, not Spark Connect).
    """
    import numpy as np
    from pyspark.ml.common import _py2java
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    old = start.classifier
    old_coef, old_intercept = old.coefficientMatrix.toArray(), old.interceptVector.toArray()
    old_col = {token: i for i, token in enumerate(start.vectorizer.vocabulary)}
    old_row = {c: i for i, c in enumerate(start.classes)}
    new_cols = [i for i, token in enumerate(vocabulary) if token in old_col]
    rows = [(i, old_row[c]) for i, c in enumerate(classes) if c in old_row]
    if not rows:
        return estimator
    coef = np.zeros((len(classes), len(vocabulary)))
    intercept = np.full(len(classes), float(old_intercept.min()))
    new_rows, old_rows = zip(*rows)
    coef[np.ix_(new_rows, new_cols)] = old_coef[np.ix_(old_rows, [old_col[vocabulary[i]] for i in new_cols])]
    intercept[list(new_rows)] = old_intercept[list(old_rows)]
    sc = spark.sparkContext
    initial = sc._jvm.org.apache.spark.ml.classification.LogisticRegressionModel(
        "semfin-warm-start", _py2java(sc, DenseMatrix(len(classes), len(vocabulary), coef.ravel(order="F"))),
        _py2java(sc, DenseVector(intercept)), len(classes), True)
    estimator.setMaxIter(LR_WARM_MAX_ITER)
    estimator._java_obj.setInitialModel(initial)
    return estimator


def capped(data: DataFrame, counts: Mapping[str, int], cap: int,
           seed: int) -> tuple[DataFrame, int]:
    """``data`` (``model_id``, ``label``) sampled to about ``cap`` models, and how many it
    keeps by expectation; ``data`` itself when it has no more (or ``cap`` is 0).

    Each class keeps the share ``cap / n`` of its models, but at least
    :data:`CAP_MIN_PER_CLASS` (all of them when it has fewer): the frequent classes are
    thinned, a rare class keeps what it has. The sample is a hash of the model id and the
    seed, so the same models are kept whatever the row order, run after run.

    Examples:
        >>> counts = {"apache-2.0": 90_000, "mit": 9_000, "gpl-3.0": 150}
        >>> rates = _keep_rates(counts, 9_915)   # a tenth of 99,150
        >>> rates["apache-2.0"], rates["mit"], rates["gpl-3.0"]
        (0.1, 0.1, 0.666667)
    """
    n = sum(counts.values())
    if not cap or n <= cap:
        return data, n
    rates = _keep_rates(counts, cap)
    rate = F.element_at(F.create_map(*[F.lit(x) for c, r in sorted(rates.items())
                                      for x in (c, r)]), F.col("label"))
    kept = round(sum(rates[c] * k for c, k in counts.items()))
    keep = _bucket("model_id", seed + CAP_SEED) < F.coalesce(rate, F.lit(1.0)) * _BUCKETS
    return data.where(keep), kept


def _keep_rates(counts: Mapping[str, int], cap: int) -> dict[str, float]:
    """Per class, the share of its models :func:`capped` keeps (6 decimals)."""
    share = cap / sum(counts.values())
    return {c: round(min(1.0, max(share, CAP_MIN_PER_CLASS / k)), 6) for c, k in counts.items()}


def sized(df: DataFrame, rows: int) -> DataFrame:
    """``df`` (about ``rows`` models, or at most) in as few partitions as keep every core
    busy, placed by a hash of the model id: one per :data:`TRAIN_ROWS_PER_CORE` rows up to
    one per core, and at most :data:`TRAIN_ROWS_PER_PARTITION` rows each.

    Every L-BFGS iteration is a job over the training partitions: 64 shuffle partitions
    of a small training set made the tasks' overhead the cost of the fit, and one
    partition (what adaptive execution makes of a few MB of tokens) ran every iteration
    of a large one on one core, while a small one fits faster in one task than in two.
    Hashing the id, not coalescing, puts the same rows together whatever the upstream
    plan, on a cluster as in the embedded session (given as many cores). The caller
    persists the result: the fits read it several times.

    Examples:
        >>> _partitions(1_500, 2), _partitions(12_000, 2), _partitions(12_000, 8)
        (1, 2, 3)
        >>> _partitions(300_000, 2), _partitions(0, 2)
        (6, 1)
    """
    return df.repartition(_partitions(rows, df.sparkSession.sparkContext.defaultParallelism),
                          "model_id")


def _partitions(rows: int, cores: int) -> int:
    """Partitions for :func:`sized`: ``rows`` training models on ``cores`` cores."""
    spread = min(cores, math.ceil(rows / TRAIN_ROWS_PER_CORE))
    return max(1, spread, math.ceil(rows / TRAIN_ROWS_PER_PARTITION))


def score(model: FieldModel | PipelineModel, df: DataFrame) -> DataFrame:
    """Predict a field for the models of ``df``.

    Args:
        model: a :class:`FieldModel`, or a field's ``PipelineModel`` as loaded from MLflow
            (``mlflow.spark.load_model("models:/semfin-license/3")``).
        df: ``model_id``, ``tokens`` (the field's tokens, :func:`~semfin_spark.features.field_tokens`)
            and, for a model with a vote stage, :data:`~semfin_spark.neighbourhood.VOTE_COL`
            (:func:`~semfin_spark.neighbourhood.neighbour_vote`; missing: no model has a vote).

    Returns:
        ``model_id``, ``prediction`` (a class label; :data:`POOLED_CLASS` only in the
        underflow case of the module doc), ``confidence`` (the probability of that class,
        or the vote's confidence where the relatives' vote replaced it).

    Examples:
        >>> score(fm, field_tokens(model_features(store), "license")).show()   # doctest: +SKIP
    """
    pipeline = model.model if isinstance(model, FieldModel) else model
    stages = list(pipeline.stages)
    vote_stage = stages.pop() if stages and is_vote_stage(stages[-1]) else None
    vote = F.col(VOTE_COL) if VOTE_COL in df.columns else F.lit(None).cast("string")
    bag = F.coalesce(F.col("tokens"), F.array().cast("array<string>"))
    tokens = df.select("model_id", bag.alias("tokens"), vote.alias(VOTE_COL),
                       (~has_config(bag)).alias(CONFIGLESS_COL))
    scored = PipelineModel(stages=stages).transform(tokens) if vote_stage else pipeline.transform(tokens)
    conf = confidence()
    if RULE_CONFIDENCE_COL in scored.columns:  # a name-match pipeline (model_type)
        conf = F.coalesce(F.col(RULE_CONFIDENCE_COL), conf)
    scored = scored.select("model_id", PREDICTION_COL, conf.alias("confidence"), VOTE_COL, CONFIGLESS_COL)
    if vote_stage is None:
        return scored.drop(VOTE_COL, CONFIGLESS_COL)
    return vote_stage.transform(scored).select(
        "model_id", F.coalesce(VOTE_PREDICTION_COL, PREDICTION_COL).alias(PREDICTION_COL),
        F.coalesce(VOTE_CONFIDENCE_COL, "confidence").alias("confidence"))


def confidence_bar(impute: ImputeSettings, field: str, with_config: Any, in_undeclared_family: Any) -> Any:
    """The confidence a model's imputed value of ``field`` needs, as a column:
    :meth:`~semfin_spark.settings.ImputeSettings.threshold` for whether the model's bag
    names a config.json (``with_config``; null: it has no bag, so no config) and whether it
    is in a family whose relatives declare nothing (``in_undeclared_family``; null: no)."""
    config = F.coalesce(with_config, F.lit(False))
    family = F.coalesce(in_undeclared_family, F.lit(False))

    def bar(configless: bool, undeclared: bool) -> Any:
        return F.lit(impute.threshold(field, configless=configless, undeclared_family=undeclared))

    return (F.when(config & ~family, bar(False, False))
            .when(config, bar(False, True))
            .when(~family, bar(True, False))
            .otherwise(bar(True, True)))


def confidence() -> Any:
    """The probability of the predicted class, as a column of a scored DataFrame.

    Not the largest probability: that can be the pooled class's, which is never predicted.
    """
    index = F.col(_INDEX_COL).cast("int") + F.lit(1)
    return F.element_at(vector_to_array("probability"), index)
