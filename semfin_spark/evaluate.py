"""The evaluate stage: SemFin's classifiers against two baselines, on a held-out split.

For each field, the labelled models (models that declare it, :func:`~semfin_spark.classifier.labels`)
are split into a training and a test side; the test side's labels are hidden and
predicted by three methods, each allowed to see training labels only:

* ``semfin``: the field's classifier (:func:`~semfin_spark.classifier.fit_field`) fitted on the
  training side, applied to the test models' tokens. A prediction of the pooled class
  (``__other__``) counts as no prediction.
* ``hub_avg``: the most frequent training value of the field over the whole hub
  (ties: the smallest value); it predicts for every model.
* ``graph_avg``: the most frequent training value among the model's lineage neighbours
  (its parents and children in ``model_parents``); when none of them has one, the most
  frequent training value in its connected lineage component; no prediction for a model
  whose component holds no training label (an isolated model has none). Ties: the
  smallest value.

Splits (``--split``), deterministic for a seed (a hash of the id and the seed, whatever
the row order):

* ``random``: each labelled model is a test model with probability ``test_fraction``.
* ``component``: whole lineage components (``model_parents`` edges, external parents
  included, isolated models as their own component) go to one side, so no test model has
  a training model in its lineage. The realised test share is reported per field.

Figures per method: ``accuracy`` (a missing prediction is wrong), ``macro_f1`` (F1
averaged over the classes present in the test labels; a missing prediction is a miss for
its true class), ``coverage`` (share of test models with a prediction). ``isolated``
repeats ``semfin``'s accuracy and ``graph_avg``'s coverage for test models without any
lineage edge. A field with fewer than ``train.min_labels`` training models, or no test
model, is reported with its counts and a ``skipped`` reason, without ``methods``.

Implementation details:
    Everything is DataFrame work on the executors; the driver collects, per field and
    method, the confusion counts (one row per (true, predicted) pair) and the one most
    frequent training value. Components come from the graph seam
    (:func:`semfin_spark.graph.connected_components`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Iterator

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.features import by_model, field_tokens, has_config, model_features, without_config
from semfin_spark.neighbourhood import (RELATED_COL, VOTE_COL, lineage_pairs, neighbour_votes,
                                        related_models, undeclared_family, with_vote)
from semfin_spark.schemas import HUB_MODELS, MODEL_PARENTS
from semfin_spark.session import cut_lineage, write_text
from semfin_spark.settings import FIELDS, Settings
from semfin_spark.classifier import (POOLED_CLASS, Metrics, _r, confidence_bar, fit_field, held_out,
                                     labels, metrics_from_confusion, score, sized, split_flag)

SPLITS = ("random", "component")
"""Values of ``--split``."""

METHODS = ("semfin", "hub_avg", "graph_avg")
"""The three prediction methods, in report order."""


class EvaluateError(ValueError):
    """An evaluation was asked for with an unknown split, field or fraction."""


def evaluate(spark: SparkSession, store: DeltaStore, settings: Settings, *,
             fields: tuple[str, ...] = FIELDS, split: str = "random",
             test_fraction: float = 0.2, seed: int = 0, train_sizes: tuple[int, ...] = (),
             progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure ``semfin``, ``hub_avg`` and ``graph_avg`` on a held-out split of the warehouse.

    Args:
        spark: the session.
        store: the warehouse (flatten tables: ``model_fields``, ``model_parents``, the
            feature tables, ``hub_models``).
        settings: ``train`` settings (families, pooling, ``min_labels``).
        fields: the fields to evaluate.
        split: ``random`` or ``component``.
        test_fraction: share of labelled models (random) or of components (component) on
            the test side, in (0, 1).
        seed: seeds the split and the classifiers' validation hold-out.
        train_sizes: for a learning curve, also fit and measure each field on a seeded
            subsample of about this many training models (sizes from the training side's
            up are skipped); the field's ``learning_curve`` lists each, then the full side.
        progress: where progress lines go.

    Returns:
        The report, JSON-ready::

            {"split": "random", "seed": 0, "test_fraction": 0.2,
             "fields": {"<field>": {"n_train", "n_test", "n_classes",
                 "methods": {"semfin"|"hub_avg"|"graph_avg": {"accuracy", "macro_f1", "coverage"}},
                 "isolated": {"n_test", "semfin_accuracy", "graph_avg_coverage"},
                 "configless": {"n_test", "semfin_accuracy", "classifier_accuracy",
                                "graph_avg_accuracy", "imputed_coverage", "imputed_precision",
                                "calibration"},
                 "imputed": {"coverage", "precision", "n"},
                 "undeclared_family": {"n_test", "semfin_accuracy", "imputed_coverage",
                                       "imputed_precision", "calibration"},
                 "neighbour_vote", "configless_vote", "calibration",
                 "family", "n_fit", "validation", "pooled_classes", "test_share",
                 "learning_curve": [{"n_train", "n_test", "family",
                                     "semfin", "hub_avg", "graph_avg"}]}}}

        Same warehouse, arguments and seed: the same report.

    Raises:
        EvaluateError: unknown split or field, or a fraction outside (0, 1).

    Examples:
        >>> report = evaluate(spark, store, settings, fields=("pipeline_tag",))   # doctest: +SKIP
        >>> report["fields"]["pipeline_tag"]["methods"]["semfin"]["accuracy"]     # doctest: +SKIP
        0.97
    """
    _check(fields, split, test_fraction, train_sizes)
    report: dict[str, Any] = {"split": split, "seed": seed, "test_fraction": test_fraction,
                              "fields": {}}
    train_sizes = tuple(sorted(set(train_sizes)))
    if train_sizes:
        report["train_sizes"] = list(train_sizes)
    cached: list[DataFrame] = []

    def keep(df: DataFrame) -> DataFrame:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(df)
        return df

    try:
        graph = _lineage(spark, store, settings)
        nodes = keep(graph["nodes"])
        neighbours = keep(graph["neighbours"])
        if split == "component":
            sides = nodes.select("model_id", split_flag("component", seed, test_fraction).alias("is_test"))
        else:
            sides = nodes.select("model_id", split_flag("model_id", seed, test_fraction).alias("is_test"))
        # Cut from its plan: every field's frames are built on it.
        sides = cut_lineage(sides.join(nodes.select("model_id", "component", "isolated"), "model_id"))
        features = keep(by_model(model_features(store)))
        models = features.count()
        pairs = keep(graph["pairs"])

        def measure(name: str, lab: DataFrame, point: str = "") -> dict[str, Any]:
            data = field_tokens(features.join(lab, "model_id"), name)
            # Only the training side's labels are known: a test model's label reaches no
            # one's vote, its own included. The validation models, which choose when the
            # vote replaces an answer, stand to the rest of the training side as the test
            # models to the training side: their labels are hidden from the training
            # side's votes too (with them, the trees' licence vote won on validation and
            # lost 4.5 points on the test models). Computed with train.neighbour_vote off
            # too (the fit then ignores it): a test model without a vote but with lineage
            # is in a family that declares nothing, and imputation's bar says so.
            known = lab.where(~F.col("is_test")).select("model_id", "label")
            # Cut from its plan: persisted, its deep plan was planned again with every
            # frame the field builds on it (the trees' evaluate took 6 s more a field).
            data = with_vote(data, cut_lineage(_split_votes(pairs, known, seed)))
            # Sized as train sizes its fields' rows (the bags' shuffle partitions would make
            # every pass over a small Hub's field 64 tasks of a few rows).
            data = sized(data, models).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                return _evaluate_field(spark, settings, name, data, neighbours, seed, progress, point)
            finally:
                data.unpersist()

        for name in fields:
            lab = keep(labels(store, name).join(sides, "model_id"))
            out = report["fields"][name] = measure(name, lab)
            if train_sizes and "methods" in out:
                out["learning_curve"] = _learning_curve(name, lab, out, train_sizes, seed, measure)
    finally:
        # Dependents first: uncaching a frame makes Spark rebuild every cached frame
        # built on it (measured: 80 jobs and 11 s in impute before this order).
        for df in reversed(cached):
            df.unpersist()
    return report


CURVE_SEED = 15485863
"""Added to the seed for the learning curve's training subsamples (a prime, as the others)."""


def _learning_curve(name: str, lab: DataFrame, full: dict[str, Any], sizes: tuple[int, ...],
                    seed: int, measure: Callable[..., dict[str, Any]]) -> list[dict[str, Any]]:
    """The field's figures with a seeded subsample of about ``size`` training models, for
    each of ``sizes`` (ascending) below the training side, then with the whole training
    side: one row each.

    The test side is the full evaluation's; only the training side shrinks, and with it
    the labels the relatives' vote and Graph Avg may use. The samples are nested (the same
    hash, a larger fraction), so a larger size only adds training models.
    """
    n_train = full["n_train"]
    rows = []
    for size in sizes:
        if size >= n_train:
            continue
        kept = F.col("is_test") | split_flag("model_id", seed + CURVE_SEED, size / n_train)
        point = measure(name, lab.where(kept), f" with {size} training models")
        if "methods" in point:
            rows.append(_curve_row(point))
    rows.append(_curve_row(full))
    return rows


def _curve_row(result: dict[str, Any]) -> dict[str, Any]:
    return {"n_train": result["n_train"], "n_test": result["n_test"], "family": result["family"],
            **{method: figures["accuracy"] for method, figures in result["methods"].items()}}


def _check(fields: tuple[str, ...], split: str, test_fraction: float,
           train_sizes: tuple[int, ...] = ()) -> None:
    if split not in SPLITS:
        raise EvaluateError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise EvaluateError(f"unknown field(s) {unknown}; choose from {', '.join(FIELDS)}")
    if not 0.0 < test_fraction < 1.0:
        raise EvaluateError(f"test fraction must be between 0 and 1 (exclusive), not {test_fraction}")
    bad = [n for n in train_sizes if n < 1]
    if bad:
        raise EvaluateError(f"training sizes must be positive numbers of models, not {bad}")


def _lineage(spark: SparkSession, store: DeltaStore, settings: Settings) -> dict[str, DataFrame]:
    """Nodes (``model_id, component, isolated``) of every hub model, the undirected
    neighbour pairs (``model_id, neighbour``) of the lineage graph, self-loops removed, and
    its edges (``child, parent``: :func:`~semfin_spark.neighbourhood.lineage_pairs`)."""
    from semfin_spark.graph import connected_components

    ids = store.read(HUB_MODELS).select(F.col("id").alias("id"))
    pairs = lineage_pairs(store.read(MODEL_PARENTS))
    edges = pairs.select(F.col("child").alias("src"), F.col("parent").alias("dst"))
    components = connected_components(spark, edges, ids, backend=settings.graph.backend,
                                      local_max_edges=settings.graph.local_max_edges)
    neighbours = (edges.select(F.col("src").alias("model_id"), F.col("dst").alias("neighbour"))
                  .union(edges.select(F.col("dst").alias("model_id"), F.col("src").alias("neighbour")))
                  .distinct())
    nodes = (ids.withColumnRenamed("id", "model_id")
             .join(components.withColumnRenamed("id", "model_id"), "model_id", "left")
             .join(related_models(pairs), "model_id", "left")
             .select("model_id", F.coalesce("component", "model_id").alias("component"),
                     F.col(RELATED_COL).isNull().alias("isolated")))
    return {"nodes": nodes, "neighbours": neighbours, "pairs": pairs}


def _most_frequent(df: DataFrame, key: str) -> DataFrame:
    """Per ``key``, the most frequent ``label`` (ties: the smallest): ``key, prediction``."""
    counts = df.groupBy(key, "label").count()
    rank = F.row_number().over(Window.partitionBy(key).orderBy(F.desc("count"), F.asc("label")))
    return counts.withColumn("_rank", rank).where("_rank = 1").select(key, F.col("label").alias("prediction"))


def graph_avg(test: DataFrame, train: DataFrame, neighbours: DataFrame) -> DataFrame:
    """The ``graph_avg`` prediction of each test model.

    Args:
        test: ``model_id``, ``component`` of the models to predict.
        train: ``model_id``, ``component``, ``label``: the known (training) labels.
        neighbours: ``model_id``, ``neighbour``: lineage pairs, both directions.

    Returns:
        ``model_id``, ``prediction`` (null: no neighbour or component member with a
        training label).
    """
    known = train.select(F.col("model_id").alias("neighbour"), "label")
    by_neighbours = _most_frequent(
        neighbours.join(test.select("model_id"), "model_id", "left_semi").join(known, "neighbour"),
        "model_id").withColumnRenamed("prediction", "_near")
    by_component = _most_frequent(train.select("component", "label"), "component") \
        .withColumnRenamed("prediction", "_component")
    return (test.join(by_neighbours, "model_id", "left")
            .join(by_component, "component", "left")
            .select("model_id", F.coalesce("_near", "_component").alias("prediction")))


def hub_avg(train: DataFrame) -> str | None:
    """The most frequent training label (ties: the smallest), or None without labels."""
    row = (train.groupBy("label").count()
           .orderBy(F.desc("count"), F.asc("label")).limit(1).collect())
    return row[0]["label"] if row else None


def _split_votes(pairs: DataFrame, known: DataFrame, seed: int) -> DataFrame:
    """``model_id, neighbour_vote`` for evaluation: a test model's vote from every training
    label (``known``), a training model's from the training labels outside the validation
    hold-out that :func:`~semfin_spark.classifier.fit_field` makes with ``seed``. A training
    model's vote is read only for the validation models (the fits do not read it)."""
    # Both sets of votes in one plan: the field column of neighbour_votes tells them
    # apart, true for the training side's.
    both = (known.select("model_id", F.lit(False).alias("field"), "label")
            .unionByName(known.where(~held_out(seed)).select("model_id", F.lit(True).alias("field"),
                                                              "label")))
    is_training = known.select("model_id", F.lit(True).alias("_training"))
    return (neighbour_votes(pairs, both).join(is_training, "model_id", "left")
            .where(F.col("field") == F.coalesce("_training", F.lit(False)))
            .select("model_id", VOTE_COL))


def _evaluate_field(spark: SparkSession, settings: Settings, name: str, data: DataFrame,
                    neighbours: DataFrame, seed: int, progress: Callable[[str], None],
                    point: str = "") -> dict[str, Any]:
    counts = {r["is_test"]: (r["n"], r["classes"]) for r in data.groupBy("is_test").agg(
        F.count("*").alias("n"), F.countDistinct("label").alias("classes")).collect()}
    n_train, n_classes = counts.get(False, (0, 0))
    n_test = counts.get(True, (0, 0))[0]
    out: dict[str, Any] = {"n_train": n_train, "n_test": n_test, "n_classes": n_classes}
    total = n_train + n_test
    out["test_share"] = round(n_test / total, 6) if total else 0.0
    if n_train < settings.train.min_labels or n_test == 0:
        out["skipped"] = (f"{n_train} training models, fewer than train.min_labels="
                          f"{settings.train.min_labels}" if n_train < settings.train.min_labels
                          else "no test model")
        progress(f"evaluate {name}{point}: skipped ({out['skipped']})")
        return out
    train = data.where(~F.col("is_test"))
    test = data.where(F.col("is_test"))
    started = time.time()
    vote = [VOTE_COL] if settings.train.neighbour_vote else []
    fm = fit_field(spark, train.select("model_id", "tokens", "label", *vote), name, settings, seed=seed)
    scored_semfin = score(fm, test.select("model_id", "tokens", *vote)).select(
        "model_id", F.when(F.col("prediction") != POOLED_CLASS, F.col("prediction")).alias("prediction"),
        "confidence")
    semfin = scored_semfin.select("model_id", "prediction")
    most = hub_avg(train)
    graph = graph_avg(test.select("model_id", "component"), train.select("model_id", "component", "label"),
                      neighbours)
    truth = test.select("model_id", "label", "isolated")
    predictions = {"semfin": semfin,
                   "hub_avg": truth.select("model_id", F.lit(most).cast("string").alias("prediction")),
                   "graph_avg": graph}
    scored = None
    for method in METHODS:
        rows = truth.join(predictions[method], "model_id", "left").select(
            F.lit(method).alias("method"), "isolated", "label", "prediction")
        scored = rows if scored is None else scored.unionByName(rows)
    # One aggregation for every method, all and isolated test models alike.
    cells: dict[tuple[str, bool], dict[tuple[str, str | None], int]] = {}
    for r in scored.groupBy("method", "isolated", "label", "prediction").count().collect():
        cells.setdefault((r["method"], r["isolated"]), {})[(r["label"], r["prediction"])] = r["count"]

    def figures(method: str, only_isolated: bool) -> Metrics:
        merged: dict[tuple[str, str | None], int] = {}
        for isolated in ((True,) if only_isolated else (True, False)):
            for cell, n in cells.get((method, isolated), {}).items():
                merged[cell] = merged.get(cell, 0) + n
        return metrics_from_confusion(merged)

    methods = {method: figures(method, False).summary() for method in METHODS}
    iso_semfin, iso_graph = figures("semfin", True), figures("graph_avg", True)
    n_isolated = iso_semfin.n
    out.update({
        "methods": methods,
        "isolated": {"n_test": n_isolated, "semfin_accuracy": iso_semfin.accuracy,
                     "graph_avg_coverage": iso_graph.coverage},
        "family": fm.family,
        "n_fit": fm.n_fit,
        "validation": fm.validation,
        "n_classes_trained": len(fm.classes),
        "pooled_classes": fm.pooled,
        "neighbour_vote": _vote_report(fm.vote),
        "configless_vote": _vote_report(fm.configless_vote),
    })
    if not point:  # a learning curve's point reports its accuracies only
        out["configless"] = _configless(fm, test, graph, settings, name)
        out.update(_imputed(test, scored_semfin, settings, name))
    out["calibration"] = calibration(truth.join(scored_semfin, "model_id", "left"))
    progress(f"evaluate {name}{point}: {n_train} train / {n_test} test, {fm.family}; "
             + ", ".join(f"{m} {v['accuracy']:.4f} (coverage {v['coverage']:.2f})"
                         for m, v in methods.items())
             + f"; ECE {out['calibration']['ece']:.3f}, 95% precision from confidence "
             + f"{out['calibration']['recommended_threshold']}"
             + (f"; imputed at the default thresholds: {out['imputed']['n']} "
                f"({out['imputed']['coverage']:.2f} of the test models), precision "
                + (f"{out['imputed']['precision']:.3f}" if out['imputed']['precision'] is not None else "-")
                if "imputed" in out else "")
             + ("; without config: " + ", ".join(f"{k.removesuffix('_accuracy')} {v}"
                                                 for k, v in out["configless"].items()
                                                 if k != "calibration")
                if "configless" in out else "")
             + f" ({time.time() - started:.1f} s)")
    return out


def _vote_report(vote: Any) -> dict[str, Any] | None:
    return {"threshold": vote.threshold, "confidence": vote.confidence, **vote.validation} if vote else None


def _in_family() -> Any:
    """For a test model (``isolated``, :data:`VOTE_COL`): whether it is in a family whose
    relatives declare nothing (:func:`~semfin_spark.neighbourhood.undeclared_family`); on
    the test side, only the training side's labels count as declared."""
    return undeclared_family(~F.col("isolated"))


def _tally(rows: DataFrame, *columns: str) -> Callable[..., int]:
    """``rows`` counted by ``columns`` in one aggregation; the function returned sums the
    counts whose values match its keyword arguments (a column not named: any value)."""
    counts = {tuple(r[c] for c in columns): r["_n"]
              for r in rows.groupBy(*columns).agg(F.count("*").alias("_n")).collect()}

    def count(**where: Any) -> int:
        return sum(n for key, n in counts.items()
                   if all(key[columns.index(c)] == v for c, v in where.items()))
    return count


def _share(part: int, whole: int) -> float | None:
    """``part / whole`` rounded for the report; None when ``whole`` is 0."""
    return _r(part / whole) if whole else None


def _imputed(test: DataFrame, scored: DataFrame, settings: Settings, name: str) -> dict[str, Any]:
    """What impute would write for the test models, and how often it would be right.

    ``imputed``: of the test models, the share whose answer reaches the bar impute sets for
    it (``coverage``: the field's threshold, raised for a model without a config.json or
    in a family that declares nothing, :func:`~semfin_spark.classifier.confidence_bar`)
    and the share of those right (``precision``, None without any): the figure the
    thresholds must hold at 95 %. ``undeclared_family``: the test models with lineage
    and no vote (on the component split, nearly all of them): their ``n_test``, the
    accuracy of ``semfin`` on them, what would be imputed (``imputed_coverage``,
    ``imputed_precision``) and their ``calibration``, from which
    ``impute.undeclared_family_threshold`` is chosen.
    """
    family = _in_family()
    bar = confidence_bar(settings.impute, name, has_config(F.col("tokens")), family)
    rows = (test.select("model_id", "label", family.alias("family"), bar.alias("_bar"))
            .join(scored, "model_id", "left")
            .select("family", "label", "prediction", "confidence",
                    F.coalesce(F.col("prediction") == F.col("label"), F.lit(False)).alias("right"),
                    F.coalesce(F.col("prediction").isNotNull() & (F.col("confidence") >= F.col("_bar")),
                               F.lit(False)).alias("sure")))
    rows = cut_lineage(rows)
    count = _tally(rows, "family", "right", "sure")
    n_family = count(family=True)
    return {
        "imputed": {"coverage": _share(count(sure=True), count()),
                    "precision": _share(count(right=True, sure=True), count(sure=True)),
                    "n": count(sure=True)},
        "undeclared_family": {
            "n_test": n_family,
            "semfin_accuracy": _share(count(family=True, right=True), n_family),
            "imputed_coverage": _share(count(family=True, sure=True), n_family),
            "imputed_precision": _share(count(family=True, right=True, sure=True),
                                        count(family=True, sure=True)),
            "calibration": calibration(rows.where("family")),
        },
    }


def _configless(fm: Any, test: DataFrame, graph: DataFrame, settings: Settings,
                name: str) -> dict[str, Any]:
    """How the field is answered for models that carry no config.json, measured on the test
    models that carry one, their config tokens removed (:func:`~semfin_spark.features.without_config`):
    ``n_test`` such models, the accuracy of ``semfin`` (with its vote), of the classifier
    alone (``classifier_accuracy``, no vote) and of ``graph_avg`` (which reads no token)
    on them; and of ``semfin``'s answers that reach the bar impute sets for a model without
    a config.json (:func:`~semfin_spark.classifier.confidence_bar`: what impute would
    write), the share
    (``imputed_coverage``) and the precision (``imputed_precision``, None without any);
    ``calibration`` (:func:`calibration`) of ``semfin``'s answers.

    The test side holds few models without a config (for ``model_type`` none: the type is
    read from the config), while most models a field is missing from have none; this is
    the figure for those.
    """
    copies = (test.where(has_config(F.col("tokens")))
              .withColumn("tokens", without_config(F.col("tokens"))))
    vote = [VOTE_COL] if settings.train.neighbour_vote else []
    # Cut: the figures and the calibration below both read SemFin's answers.
    answers = {"semfin": cut_lineage(score(fm, copies.select("model_id", "tokens", *vote))),
               "classifier": score(fm, copies.select("model_id", "tokens")),
               "graph_avg": graph}
    truth = copies.select("model_id", "label",
                          confidence_bar(settings.impute, name, F.lit(False), _in_family()).alias("_bar"))
    rows = None
    for method, predicted in answers.items():
        right = F.coalesce((F.col("prediction") == F.col("label"))
                           & (F.col("prediction") != POOLED_CLASS), F.lit(False))
        sure = (F.col("confidence") >= F.col("_bar")) if method == "semfin" else F.lit(False)
        part = (truth.join(predicted, "model_id", "left")
                .select(F.lit(method).alias("method"), right.alias("right"),
                        F.coalesce(sure & (F.col("prediction") != POOLED_CLASS), F.lit(False)).alias("sure")))
        rows = part if rows is None else rows.unionByName(part)
    count = _tally(rows, "method", "right", "sure")
    n = count(method="semfin")
    out: dict[str, Any] = {"n_test": n}
    for method in answers:
        out[f"{method}_accuracy"] = _share(count(method=method, right=True), n)
    imputed = count(method="semfin", sure=True)
    out["imputed_coverage"] = _share(imputed, n)
    out["imputed_precision"] = _share(count(method="semfin", right=True, sure=True), imputed)
    semfin = answers["semfin"].select(
        "model_id", F.when(F.col("prediction") != POOLED_CLASS, F.col("prediction")).alias("prediction"),
        "confidence")
    out["calibration"] = calibration(truth.drop("_bar").join(semfin, "model_id", "left"))
    return out


CALIBRATION_BINS = 20
"""Confidence bins of the reliability table (width 0.05)."""

TARGET_PRECISION = 0.95
"""The precision a default imputation threshold must keep (:func:`calibration`)."""


def calibration(scored: DataFrame, *, bins: int = CALIBRATION_BINS,
                target: float = TARGET_PRECISION) -> dict[str, Any]:
    """Whether SemFin's confidence means what it says, on the held-out test models.

    Args:
        scored: one row per test model: ``label``, ``prediction`` (null: none, as the
            pooled class), ``confidence`` (of the prediction).
        bins: equal-width confidence bins over [0, 1].
        target: the precision the recommended threshold keeps.

    Returns:
        ``{"reliability": [{"low", "high", "n", "mean_confidence", "accuracy"}, ...]`` (bins
        holding a prediction), ``"ece"`` (expected calibration error: the mean over
        predictions of |accuracy - mean confidence| of their bin), ``"thresholds":
        [{"threshold", "precision", "coverage", "n"}, ...]`` (at each bin edge from 0 to
        the top bin holding a prediction: the share correct of the predictions at or
        above it, and the share of test models they are), and
        ``"recommended_threshold"``: the lowest edge whose precision is at least
        ``target`` (None when none is).

    Examples:
        >>> calibration(scored)["recommended_threshold"]   # doctest: +SKIP
        0.55

    Implementation details:
        One aggregation on the executors; the driver gets one row per bin.
    """
    covered = F.col("prediction").isNotNull() & F.col("confidence").isNotNull()
    b = F.when(covered, F.least(F.floor(F.col("confidence") * bins), F.lit(bins - 1)).cast("int"))
    rows = (scored.groupBy(b.alias("bin"))  # bin null: no prediction, counted in the total
            .agg(F.count("*").alias("n"), F.sum("confidence").alias("conf"),
                 F.sum((F.col("prediction") == F.col("label")).cast("int")).alias("correct"))
            .collect())
    total = sum(r["n"] for r in rows)
    per_bin = {r["bin"]: (r["n"], float(r["conf"]), r["correct"]) for r in rows if r["bin"] is not None}
    predicted = sum(n for n, _, _ in per_bin.values())
    reliability, thresholds, ece = [], [], 0.0
    for i in sorted(per_bin):
        n, conf, correct = per_bin[i]
        reliability.append({"low": _r(i / bins), "high": _r((i + 1) / bins), "n": n,
                            "mean_confidence": _r(conf / n), "accuracy": _r(correct / n)})
        ece += abs(correct - conf) / predicted
    recommended = None
    for i in range(max(per_bin, default=-1), -1, -1):  # each edge, from the top populated bin
        above = [per_bin[j] for j in per_bin if j >= i]
        n = sum(x[0] for x in above)
        precision = sum(x[2] for x in above) / n
        thresholds.append({"threshold": _r(i / bins), "precision": _r(precision),
                           "coverage": _r(n / total) if total else 0.0, "n": n})
    thresholds.reverse()
    for row in thresholds:  # the lowest edge that keeps the target precision
        if row["precision"] >= target:
            recommended = row["threshold"]
            break
    return {"reliability": reliability, "ece": _r(ece), "thresholds": thresholds,
            "recommended_threshold": recommended, "target_precision": target}


# ------------------------------------------------------------------ the command

@contextlib.contextmanager
def snapshot_warehouse(spark: SparkSession, settings: Settings, snapshot: str, *,
                       progress: Callable[[str], None] = print) -> Iterator[tuple[DeltaStore, Settings]]:
    """A temporary warehouse holding ``snapshot``, ingested and flattened; removed on exit.

    Args:
        spark: the session.
        settings: the settings to copy (the warehouse is replaced).
        snapshot: a snapshot path (file, folder or glob) as ``semfin ingest --source
            snapshot:PATH`` takes, with or without the ``snapshot:`` prefix.
        progress: where progress lines go.

    Yields:
        ``(store, settings)`` of the temporary warehouse.

    Raises:
        IngestError: the snapshot cannot be read.
    """
    from semfin_spark.flatten import flatten
    from semfin_spark.ingest import ingest

    source = snapshot if snapshot.startswith("snapshot:") else f"snapshot:{snapshot}"
    folder = tempfile.mkdtemp(prefix="semfin-evaluate-")
    try:
        temp_settings = settings.replace(warehouse=os.path.join(folder, "warehouse"))
        store = DeltaStore.from_settings(spark, temp_settings)
        ingested = ingest(spark, store, source, temp_settings, progress=progress)
        progress(ingested.summary())
        flatten(spark, store, temp_settings, progress=progress)
        yield store, temp_settings
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def evaluate_command(spark: SparkSession, store: DeltaStore, settings: Settings, *,
                     fields: tuple[str, ...] = FIELDS, split: str = "random",
                     test_fraction: float = 0.2, seed: int = 0, snapshot: str | None = None,
                     train_sizes: tuple[int, ...] = (),
                     progress: Callable[[str], None] = print) -> dict[str, Any]:
    """``semfin evaluate``: :func:`evaluate` on ``snapshot`` (a temporary warehouse) or,
    without one, on the warehouse of ``store``.

    Args:
        snapshot: a Hub snapshot to ingest and flatten into a temporary warehouse first.
        Others: as :func:`evaluate`.

    Returns:
        The report of :func:`evaluate`, with ``"source"`` (the snapshot or the warehouse).
        The evaluation of a warehouse is also kept in it (:func:`evaluation_path`) for
        the nightly report.
    """
    _check(fields, split, test_fraction, train_sizes)
    if snapshot:
        with snapshot_warehouse(spark, settings, snapshot, progress=progress) as (temp_store, temp_settings):
            report = evaluate(spark, temp_store, temp_settings, fields=fields, split=split,
                              test_fraction=test_fraction, seed=seed, train_sizes=train_sizes,
                              progress=progress)
        report["source"] = f"snapshot:{snapshot}" if not snapshot.startswith("snapshot:") else snapshot
    else:
        report = evaluate(spark, store, settings, fields=fields, split=split,
                          test_fraction=test_fraction, seed=seed, train_sizes=train_sizes,
                          progress=progress)
        report["source"] = f"warehouse:{settings.warehouse}"
        write_text(evaluation_path(settings.warehouse), json.dumps(report, indent=2, default=str), spark)
    return report


def evaluation_path(warehouse: str) -> str:
    """Where the last evaluation of a warehouse is kept: the nightly report
    (:mod:`semfin_spark.report`) shows it."""
    return os.path.join(warehouse, "reports", "evaluation.json")
