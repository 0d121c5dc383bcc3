"""The impute stage: fill missing fields with the registered classifiers, never overwriting.

For each field, the registered model ``semfin-<field>`` (its latest version, or the one
asked for) scores every ``model_fields`` row of that field without a declared value. The
prediction and its probability go into ``imputed_value`` / ``imputed_confidence`` with the
model's name, version and MLflow run id, and ``value`` / ``value_source`` become the
imputed value and ``imputed``. Below the field's threshold (``impute.confidence_threshold``
in ``conf/semfin.yaml``; raised to ``impute.configless_threshold`` for a model without a
config.json, and to ``impute.undeclared_family_threshold`` for a model with lineage none of
whose relatives declares the field) the value stays empty and the confidence is kept, so an
analyst can see how close it came. Rows with a declared value are never read for writing,
so they cannot be changed.

Incremental: a row is rescored only when its model's tokens or its relatives' vote changed
(``features_hash``: a SHA-256 of the field, its leakage rule, a hash of the model's token
bag and the relatives' vote) or when another model version imputed it; ``full=True``
(``semfin impute --full``) rescores every missing value. A second run with nothing
changed writes nothing and adds no table version.

Reuse method is a property of an edge's child: it is imputed only for models that declare
a parent (a model without one has no reuse method to fill).

Implementation details:
    Finding the changed rows is a narrow join: each model's token bag is hashed once per
    run (not once per field), and only the rows to rescore are joined with their tokens.
    A field's tokens are a function of the model's bag and the field's leakage rule
    (:func:`~semfin_spark.features.field_tokens`), so the bag's hash, the field and a
    hash of its rule stand for them. Each field's model is loaded once on the driver
    (``mlflow.spark.load_model``: Spark ML's own JSON and Parquet, nothing unpickled) and
    applied as a Spark ML transform on the executors, to the tokens of
    :mod:`semfin_spark.features`. The rows to rescore of all fields are merged into
    ``model_fields`` in ONE Delta commit, so a run killed half-way leaves the previous
    version. Only per-field counts reach the driver.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.features import LEAKAGE_RULES, field_tokens, has_config, model_features
from semfin_spark.schemas import IMPUTE_COLUMNS, MODEL_FIELDS, MODEL_PARENTS
from semfin_spark.session import cut_lineage
from semfin_spark.settings import FIELDS, Settings
from semfin_spark.classifier import POOLED_CLASS, confidence_bar, declared_labels, score
from semfin_spark.neighbourhood import (RELATED_COL, VOTE_COL, field_vote, lineage_pairs, neighbour_votes,
                                        related_models, undeclared_family, with_vote)
from semfin_spark.registry import RegistryError, StaleModelError, load_field_model, resolve_model

_IMPUTED_COLUMNS = (*IMPUTE_COLUMNS, "value", "value_source")

WITH_CONFIG_COL = "_with_config"
"""Whether the model's bag names a config.json (:func:`~semfin_spark.features.has_config`)."""


BROADCAST_IDS = 200_000
"""Up to this many rows to rescore, a field's token bags are picked by a broadcast of their
ids (a few MB) instead of a shuffle of every model's tokens."""


class ImputeError(RuntimeError):
    """No registered model to impute with, or the model cannot be loaded."""


@dataclass
class FieldImputation:
    """What imputing one field did (JSON-ready: the CLI prints it).

    Attributes:
        threshold: the confidence an imputed value needs; ``configless_threshold`` for a
            model without a config.json, ``undeclared_family_threshold`` for a model with
            lineage none of whose relatives declares the field (the highest that applies).
        missing: rows of the field without a declared value (the candidates).
        scored: rows rescored this run (changed features or another model version).
        imputed: of those, rows whose confidence reached the threshold.
        below_threshold: of those, rows left empty (confidence kept).
    """

    field: str
    model: str
    version: str
    run_id: str
    threshold: float
    configless_threshold: float
    undeclared_family_threshold: float
    missing: int = 0
    scored: int = 0
    imputed: int = 0
    below_threshold: int = 0


@dataclass
class ImputeResult:
    """Per field what was done, and the ``model_fields`` version written (None: nothing)."""

    fields: dict[str, FieldImputation] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    table_version: int | None = None


def features_hash(tokens: str) -> Any:
    """A 64-bit hash of the token array column ``tokens`` (``model_tokens`` keeps each bag
    sorted and distinct, so equal bags hash equal), as a string."""
    return F.xxhash64(F.col(tokens)).cast("string")


def field_hash(field_name: str, bag_hash: str = "_bag", vote: str = VOTE_COL) -> Any:
    """What a field's classifier sees, as a hash: the model's token-bag hash (column
    ``bag_hash``, :func:`features_hash` of its whole bag), the field and its leakage rule
    (a changed rule rescores the field) and the relatives' vote (column ``vote``). Null
    where the model has no token bag."""
    rule = LEAKAGE_RULES[field_name]
    rule_digest = hashlib.sha256(repr((rule.prefixes, rule.exact)).encode("utf-8")).hexdigest()
    seen = F.concat_ws("\u0001", F.lit(field_name), F.lit(rule_digest), F.col(bag_hash),
                       F.concat(F.lit("\u0002vote="), F.col(vote)))
    return F.when(F.col(bag_hash).isNotNull(), F.sha2(seen, 256))


def impute(spark: SparkSession, store: DeltaStore, settings: Settings, *,
           fields: tuple[str, ...] = FIELDS, model_version: str | None = None, full: bool = False,
           progress: Callable[[str], None] = print) -> ImputeResult:
    """Impute every missing value of ``fields`` into ``model_fields``, in one commit.

    Args:
        spark: the session.
        store: the warehouse; ``model_fields`` and the feature tables (``semfin flatten``).
        settings: thresholds (``impute.confidence_threshold``), tracking URI, prefix.
        fields: which fields to impute; a field without a registered model is skipped
            and reported, the others go on.
        model_version: a registered version to use for every field (default: each
            field's latest).
        full: rescore every missing value, not only changed ones.
        progress: where progress lines go.

    Returns:
        An :class:`ImputeResult`: per field the model used and the counts; the fields
        skipped and why; the ``model_fields`` version written.

    Raises:
        ImputeError: ``model_version`` was given and does not exist, no field at all
            has a registered model, or a registered model was trained on token bags of
            another flatten format (:class:`~semfin_spark.registry.StaleModelError`).

    Examples:
        >>> result = impute(spark, store, settings)                     # doctest: +SKIP
        >>> result.fields["license"].imputed                            # doctest: +SKIP
        1234
    """
    result = ImputeResult()
    models: dict[str, tuple[str, str, str]] = {}
    for name in fields:
        try:
            models[name] = resolve_model(settings, name, model_version)
        except RegistryError as exc:
            if model_version or isinstance(exc, StaleModelError):
                raise ImputeError(str(exc)) from None
            result.skipped[name] = str(exc)
            progress(f"impute {name}: skipped ({exc})")
    if not models:
        raise ImputeError("no registered model for any of " + ", ".join(fields)
                          + ": run `semfin train` first")

    features = model_features(store).persist(StorageLevel.MEMORY_AND_DISK)
    pairs = lineage_pairs(store.read(MODEL_PARENTS))
    bags = features.select("model_id", features_hash("tokens").alias("_bag"),
                           has_config(F.col("tokens")).alias(WITH_CONFIG_COL)) \
        .join(related_models(pairs), "model_id", "left") \
        .persist(StorageLevel.MEMORY_AND_DISK)
    # The relatives' vote of every field in one plan, from every declared value (a model
    # imputed here declares none, so it is never its own evidence).
    known = declared_labels(store.read(MODEL_FIELDS)).where(F.col("field").isin(*models))
    votes = neighbour_votes(pairs, known).persist(StorageLevel.MEMORY_AND_DISK)
    cached: list[DataFrame] = [features, bags, votes]
    try:
        updates = []
        for name, (model_name, version, run_id) in models.items():
            threshold = settings.impute.threshold(name)
            configless = settings.impute.threshold(name, configless=True)
            family = settings.impute.threshold(name, undeclared_family=True)
            outcome = FieldImputation(name, model_name, version, run_id, threshold, configless, family)
            bar = _bar(settings, name)
            result.fields[name] = outcome
            rows = _candidates(store, name)
            # The hash covers the vote, so a relative's changed value rescores the model.
            seen = with_vote(bags, field_vote(votes, name))
            todo = rows.join(seen.withColumn("_hash", field_hash(name)).drop("_bag"), "model_id", "left")
            if not full:
                todo = todo.where(F.col("features_hash").isNull()
                                  | ~F.col("features_hash").eqNullSafe(F.col("_hash"))
                                  | ~F.col("imputed_model").eqNullSafe(F.lit(model_name))
                                  | ~F.col("imputed_model_version").eqNullSafe(F.lit(version))
                                  # a raised threshold: values it no longer allows are emptied
                                  | (F.col("imputed_value").isNotNull()
                                     & (F.col("imputed_confidence") < bar)))
            todo = todo.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(todo)
            outcome.missing = rows.count()
            outcome.scored = todo.count()
            if not outcome.scored:
                progress(f"impute {name}: nothing changed since {model_name} v{version}")
                continue
            try:
                model = load_field_model(settings, model_name, version)
            except RegistryError as exc:
                raise ImputeError(str(exc)) from None
            # Only the rows to rescore meet their tokens: a few, in a nightly, so their ids
            # are broadcast and no model's tokens are shuffled.
            bag = features
            if outcome.scored <= BROADCAST_IDS:
                bag = features.join(F.broadcast(todo.select("model_id")), "model_id", "left_semi")
            tokens = todo.join(field_tokens(bag, name), "model_id", "left")
            # Cut from its plan (not persisted), so releasing todo below leaves it whole:
            # Spark rebuilds any cached plan that depends on one being uncached.
            scored = cut_lineage(_scored_rows(tokens, model, bar, model_name, version, run_id))
            counts = scored.agg(F.count("imputed_value").alias("imputed")).first()
            todo.unpersist()  # scored holds what is left to write, without the tokens
            outcome.imputed = int(counts["imputed"])
            outcome.below_threshold = outcome.scored - outcome.imputed
            progress(f"impute {name}: {outcome.scored} of {outcome.missing} missing scored with "
                     f"{model_name} v{version}: {outcome.imputed} imputed, "
                     f"{outcome.below_threshold} below {threshold}"
                     + (f" ({_bar_text(configless)} without a config.json)" if configless > threshold else "")
                     + (f" ({_bar_text(family)} in a family that declares none)" if family > threshold else ""))
            updates.append(scored)
        if updates:
            merged = updates[0]
            for extra in updates[1:]:
                merged = merged.unionByName(extra)
            written = store.upsert(MODEL_FIELDS, merged, operation="IMPUTE", metadata={
                "models": ",".join(f"{m}/{v}" for m, v, _ in models.values())})
            result.table_version = written.version
    finally:
        # Dependents first: uncaching a frame makes Spark rebuild every cached frame
        # built on it (measured: 80 jobs and 11 s here before this order).
        for df in reversed(cached):
            df.unpersist()
    return result


def _candidates(store: DeltaStore, field_name: str) -> DataFrame:
    """The field's rows without a declared value; for reuse_method only children."""
    rows = store.read(MODEL_FIELDS).where(
        (F.col("field") == field_name) & F.col("declared_value").isNull())
    if field_name == "reuse_method":
        children = store.read(MODEL_PARENTS).where(F.col("model_id") != F.col("parent_id"))
        rows = rows.join(children.select("model_id").distinct(), "model_id", "left_semi")
    return rows


def _bar_text(threshold: float) -> str:
    """A raised threshold as the progress line says it: above 1, no confidence reaches it.

    Examples:
        >>> _bar_text(1.01), _bar_text(0.7)
        ('never', '0.7')
    """
    return "never" if threshold > 1 else f"{threshold}"


def _bar(settings: Settings, field_name: str) -> Any:
    """The confidence a candidate row's imputed value needs (:func:`~semfin_spark.classifier.confidence_bar`),
    from its model's bag (a config.json or not; none: not) and lineage (with its vote)."""
    return confidence_bar(settings.impute, field_name, F.col(WITH_CONFIG_COL),
                          undeclared_family(F.col(RELATED_COL)))


def _scored_rows(todo: DataFrame, model: Any, bar: Any, model_name: str, version: str,
                 run_id: str) -> DataFrame:
    """``todo``'s rows with their imputed columns replaced by the model's answer, kept
    from ``bar`` (:func:`_bar`)."""
    predicted = score(model, todo.select("model_id", "tokens", VOTE_COL))
    usable = ((F.col("prediction") != F.lit(POOLED_CLASS))
              & (F.col("confidence") >= F.col("_threshold")))
    value = F.when(usable, F.col("prediction"))
    now = F.lit(dt.datetime.now(dt.timezone.utc)).cast("timestamp")
    kept = [c for c in MODEL_FIELDS.columns if c not in _IMPUTED_COLUMNS]
    return (todo.select(*kept, "_hash", bar.alias("_threshold"))
            .join(predicted, "model_id", "left")
            .select(*kept,
                    value.alias("imputed_value"),
                    F.col("confidence").alias("imputed_confidence"),
                    F.lit(model_name).alias("imputed_model"),
                    F.lit(version).alias("imputed_model_version"),
                    F.lit(run_id).alias("imputed_run_id"),
                    now.alias("imputed_at"),
                    F.col("_hash").alias("features_hash"),
                    value.alias("value"),
                    F.when(usable, F.lit("imputed")).alias("value_source")))
