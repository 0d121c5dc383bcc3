"""The train stage: one Spark ML classifier per field, tracked and registered in MLflow.

For each field of ``train.fields`` with at least ``train.min_labels`` labelled models,
:func:`train_fields` fits the field's classifier (:mod:`semfin_spark.classifier`), and
:func:`train` logs and registers them in one MLflow run (:mod:`semfin_spark.registry`).
A training whose inputs and settings are unchanged is not repeated, and a standing one is
kept until it is ``train.retrain_after_days`` old or the labels changed by more than
``train.retrain_label_change`` (:func:`train`).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping

from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from semfin_spark import schemas
from semfin_spark.classifier import FieldModel, declared_labels, fit_field, labels, sized
from semfin_spark.delta import DeltaStore, table_versions
from semfin_spark.registry import TrainResult, log_training, newest_training, registered_result
from semfin_spark.schemas import MODEL_FIELDS, MODEL_PARENTS, MODEL_TOKENS
from semfin_spark.settings import Settings


SCHEDULE_SETTINGS = ("retrain_after_days", "retrain_label_change")
"""``train`` settings that say when to train, not how: not part of a training's fingerprint."""

INPUT_TABLES = (MODEL_TOKENS, MODEL_FIELDS, MODEL_PARENTS)
"""Tables a training reads; their Delta versions tag the MLflow run."""


def train(spark: SparkSession, store: DeltaStore, settings: Settings, *,
          progress: Callable[[str], None] = print, seed: int = 0,
          force: bool = False) -> TrainResult:
    """Train every field with enough labels on the whole warehouse, log and register.

    :func:`train_fields` then :func:`log_training`; ``semfin train`` calls this. When the
    last finished training ran on the same Delta versions of the input tables with the same
    settings and seed (its :func:`training_fingerprint`) and its registered versions still
    exist, nothing is trained again: a re-run (a second nightly on unchanged data) registers
    no duplicate version. ``force`` trains anyway.

    Args:
        spark: the session.
        store: the warehouse (reads the flatten tables).
        settings: ``train`` (fields, families, pooling), ``mlflow`` (experiment) and
            ``settings.tracking_uri``.
        progress: where progress lines go.
        seed: seeds the validation hold-out.
        force: train even when the inputs are unchanged.

    Returns:
        A :class:`TrainResult`: the run id, per trained field the winning family and the
        registered model version, per skipped field why; ``unchanged`` when an earlier
        run was reused (``registered`` then names its versions and ``fields`` is empty).

    Raises:
        TrainError: an unknown classifier family.
        MlflowException: the tracking store cannot be reached.

    Examples:
        >>> result = train(spark, store, settings)              # doctest: +SKIP
        >>> result.fields["license"].registered_model, result.fields["license"].version  # doctest: +SKIP
        ('semfin-license', '1')
    """
    started = time.time()
    versions = table_versions(store, INPUT_TABLES)
    # Data versions, not versions: the nightly's OPTIMIZE commits change no row.
    fingerprint = training_fingerprint(settings, seed, {
        **{t.name: store.data_version(t) for t in INPUT_TABLES if t.name != MODEL_FIELDS.name},
        "labels": label_checksum(store)})
    if not force:
        earlier = _earlier_training(settings, fingerprint)
        if earlier is not None:
            progress(f"train: inputs and settings unchanged since run {earlier.run_id}; "
                     "its registered models stand (force to retrain)")
            earlier.seconds = round(time.time() - started, 3)
            return earlier
        standing, why = _standing_training(store, settings, seed)
        progress(f"train: {why}")
        if standing is not None:
            standing.seconds = round(time.time() - started, 3)
            return standing
    fitted, skipped = train_fields(spark, store, settings, progress=progress, seed=seed)
    result = log_training(fitted, skipped, settings, delta_versions=versions, seed=seed,
                          progress=progress, fingerprint=fingerprint,
                          settings_fingerprint=training_fingerprint(settings, seed, {}))
    result.seconds = round(time.time() - started, 3)
    return result


def label_checksum(store: DeltaStore) -> str:
    """A checksum of every declared value in ``model_fields`` (count and sum of row hashes).

    ``model_fields`` gets a new Delta version each time the impute stage writes, which
    changes no label; training depends on the declared values only, so this, not the
    table's version, says whether the labels changed.
    """
    row = (store.read(MODEL_FIELDS).where(F.col("declared_value").isNotNull())
           .agg(F.count("*").alias("n"),
                F.sum(F.xxhash64("model_id", "field", "declared_value").cast("decimal(38,0)")).alias("h"))
           .first())
    return f"{row['n']}:{row['h']}"


def training_fingerprint(settings: Settings, seed: int, inputs: Mapping[str, Any]) -> str:
    """SHA-256 of what a training depends on: the train settings (not the schedule), the
    seed, the state of its inputs (Delta versions of the feature tables,
    :func:`label_checksum`), the package version and the format of the token bags
    (:data:`~semfin_spark.schemas.FLATTEN_FORMAT`, so a training on bags of another format
    never stands). Tag ``semfin.fingerprint`` of a run; with no inputs, tag
    ``semfin.settings``: the same training on other data."""
    import dataclasses
    import hashlib

    from semfin_spark import __version__

    trained_by = {k: v for k, v in dataclasses.asdict(settings.train).items()
                  if k not in SCHEDULE_SETTINGS}
    payload = {"train": trained_by, "seed": seed, "inputs": dict(sorted(inputs.items())),
               "semfin": __version__, "flatten_format": schemas.FLATTEN_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _earlier_training(settings: Settings, fingerprint: str) -> "TrainResult | None":
    """The newest finished training with this fingerprint whose registered model
    versions all still exist, as a :class:`TrainResult` with ``unchanged`` set."""
    found = newest_training(settings, "semfin.fingerprint", fingerprint)
    return registered_result(*found, settings) if found else None


def _standing_training(store: DeltaStore, settings: Settings,
                       seed: int) -> tuple["TrainResult | None", str]:
    """The schedule: the newest training with these settings, if it still stands, and why.

    It stands while it is younger than ``train.retrain_after_days`` and no field's declared
    values changed by more than ``train.retrain_label_change`` of those it was trained on
    (:func:`label_changes` against the ``model_fields`` version it read), and no field it
    skipped has since reached ``train.min_labels``.
    """
    t = settings.train
    if t.retrain_after_days == 0:
        return None, "retraining (train.retrain_after_days is 0)"
    found = newest_training(settings, "semfin.settings", training_fingerprint(settings, seed, {}))
    if found is None:
        return None, "training: no earlier training with these settings"
    client, run = found
    age_days = (time.time() * 1000 - run.info.start_time) / 86_400_000
    if age_days >= t.retrain_after_days:
        return None, (f"retraining: run {run.info.run_id} is {age_days:.1f} days old "
                      f"(train.retrain_after_days={t.retrain_after_days:g})")
    standing = registered_result(client, run, settings)
    if standing is None:
        return None, f"retraining: a registered model of run {run.info.run_id} is gone"
    version = standing.delta_versions.get(MODEL_FIELDS.name)
    try:
        changes = label_changes(store, version)
    except Exception as err:  # noqa: BLE001 - an old version vacuumed away: retrain
        return None, f"retraining: model_fields version {version} cannot be read ({type(err).__name__})"
    trained = {name[len(t.registered_model_prefix):] for name in standing.registered}
    for name in t.fields:
        c = changes.get(name, {"then": 0, "now": 0, "changed": 0})
        share = c["changed"] / max(c["then"], 1)
        if name in trained and share > t.retrain_label_change:
            return None, (f"retraining: {c['changed']} of {c['then']} {name} labels changed since "
                          f"run {run.info.run_id} ({share:.1%} > train.retrain_label_change="
                          f"{t.retrain_label_change:g})")
        if name not in trained and c["now"] >= t.min_labels:
            return None, f"retraining: {name} now has {c['now']} labels (train.min_labels={t.min_labels})"
    biggest = max((c["changed"] / max(c["then"], 1) for c in changes.values()), default=0.0)
    return standing, (f"run {run.info.run_id} stands: {age_days:.1f} days old, at most "
                      f"{biggest:.2%} of a field's labels changed (retrain after "
                      f"{t.retrain_after_days:g} days or {t.retrain_label_change:.0%}; force to retrain)")


def label_changes(store: DeltaStore, version: int | None) -> dict[str, dict[str, int]]:
    """Per field, the labels at ``model_fields`` version ``version`` (``then``), now
    (``now``), and the models whose label was added, changed or removed (``changed``).

    One full outer join of the two versions' declared labels on the executors; the driver
    receives one row per field.
    """
    then = declared_labels(store.read(MODEL_FIELDS, version=version)).withColumnRenamed("label", "_then")
    now = declared_labels(store.read(MODEL_FIELDS)).withColumnRenamed("label", "_now")
    rows = (then.join(now, ["model_id", "field"], "full_outer").groupBy("field")
            .agg(F.count("_then").alias("then"), F.count("_now").alias("now"),
                 F.count(F.when(~F.col("_then").eqNullSafe(F.col("_now")), 1)).alias("changed"))
            .collect())
    return {r["field"]: {"then": r["then"], "now": r["now"], "changed": r["changed"]} for r in rows}


def train_fields(spark: SparkSession, store: DeltaStore, settings: Settings, *,
                 progress: Callable[[str], None] = print,
                 seed: int = 0) -> tuple[dict[str, FieldModel], dict[str, str]]:
    """Fit the classifier of every field of ``train.fields`` on every labelled model.

    Args:
        spark, store, settings, progress, seed: as :func:`train`.

    Returns:
        ``(fitted, skipped)``: the :class:`FieldModel` of each field with at least
        ``train.min_labels`` labelled models, and for each other field why it was skipped.

    Implementation details:
        The features are computed once and persisted for all fields; each field's fit runs
        on the executors (:func:`fit_field`). With ``train.neighbour_vote``, each labelled
        model also gets its relatives' vote from every other declared value
        (:mod:`semfin_spark.neighbourhood`).
    """
    from semfin_spark.features import by_model, field_tokens, model_features
    from semfin_spark.neighbourhood import field_vote, lineage_pairs, neighbour_votes, with_vote
    from semfin_spark.session import cut_lineage

    features = by_model(model_features(store)).persist(StorageLevel.MEMORY_AND_DISK)
    cached = [features]
    models = features.count()
    votes = None
    if settings.train.neighbour_vote:
        # Every field's vote in one plan, computed once for all the fields.
        known = (declared_labels(store.read(MODEL_FIELDS))
                 .where(F.col("field").isin(*settings.train.fields)))
        # Cut from its plan, not persisted: every frame built on a persisted plan is planned
        # with it again, and this one is deep. Evaluate's votes, cut the same way, took 6 s
        # a field off the trees' evaluate; here the trees' train took 48.4 and 49.5 s
        # against 49.6 and 52.9 s persisted.
        votes = cut_lineage(neighbour_votes(lineage_pairs(store.read(MODEL_PARENTS)), known))
    fitted: dict[str, FieldModel] = {}
    skipped: dict[str, str] = {}
    try:
        for name in settings.train.fields:
            # Joined first, then filtered: only the labelled models' bags lose the field's
            # leaking tokens (a higher-order function, evaluated token by token).
            data = field_tokens(features.join(labels(store, name), "model_id"), name)
            if votes is not None:
                data = with_vote(data, field_vote(votes, name))
            # Sized for the fit before it is persisted: in the bags' shuffle partitions
            # (64 by default) every pass over a small Hub's field before the fit (its count,
            # its class counts, the fit's own repartition) ran 64 tasks of a few rows.
            data = sized(data, models).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                n = data.count()
                if n < settings.train.min_labels:
                    skipped[name] = (f"{n} labelled models, fewer than "
                                     f"train.min_labels={settings.train.min_labels}")
                    progress(f"train {name}: skipped ({skipped[name]})")
                    continue
                # A field's fits take minutes on a large Hub: say which one is running.
                progress(f"train {name}: fitting on {n} labelled models "
                         f"({', '.join(settings.train.classifiers)})")
                fm = fit_field(spark, data, name, settings, seed=seed)
                fitted[name] = fm
                sample = f" (fitted on a sample of {fm.n_fit})" if fm.n_fit < fm.n_train else ""
                progress(f"train {name}: {fm.family} on {fm.n_train} models{sample}, "
                         f"{len(fm.classes)} classes ({len(fm.pooled)} pooled), validation accuracy "
                         + ", ".join(f"{f} {v['accuracy']:.4f}" for f, v in fm.validation.items())
                         + f" ({fm.seconds:.1f} s)")
            finally:
                data.unpersist()
    finally:
        # Dependents first: uncaching a frame makes Spark rebuild the frames cached on it.
        for df in reversed(cached):
            df.unpersist()
    return fitted, skipped
