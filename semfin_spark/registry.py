"""The MLflow side of training: one run per training, its reports, the registered models.

:func:`log_training` logs ONE MLflow run (experiment
``mlflow.experiment`` at ``settings.tracking_uri``): parameters, per-field metrics, per
field a confusion matrix (CSV and JSON) and a per-class report (JSON) on the validation
models, the Delta version of every input table as tags ``delta_version.<table>``, and each
field's ``PipelineModel`` logged with the Spark flavour and registered as
``<train.registered_model_prefix><field>`` (``semfin-license``, ...).

:func:`tracking` points MLflow at a tracking URI for a block;
:func:`resolve_model` and :func:`load_field_model` find and load a registered version for
impute; :func:`safe_uri` is a tracking URI with its credentials redacted.

Implementation details:
    Pip requirements are passed to MLflow explicitly (:func:`pip_requirements`), so
    logging a model never re-loads it to infer them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

from semfin_spark import schemas
from semfin_spark.classifier import (
    LR_MAX_ITER, LR_REG_PARAM, NB_SMOOTHING, POOLED_CLASS, PREDICTION_COL, RF_DEPTH, RF_TREES,
    VALIDATION_FRACTION, FieldModel, Metrics,
)
from semfin_spark.settings import Settings


@dataclass
class FieldTraining:
    """What training one field produced (JSON-ready: the CLI prints it)."""

    family: str
    registered_model: str
    version: str | None
    n_train: int
    n_classes: int
    classes: list[str]
    pooled: dict[str, int]
    vocabulary_size: int
    validation: dict[str, dict[str, float]]
    seconds: float
    log_seconds: float = 0.0


@dataclass
class TrainResult:
    """What ``semfin train`` did: the MLflow run, each trained field, each skipped one."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    fields: dict[str, FieldTraining] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    delta_versions: dict[str, int | None] = field(default_factory=dict)
    seconds: float = 0.0
    unchanged: bool = False
    registered: dict[str, str] = field(default_factory=dict)


def pip_requirements() -> list[str]:
    """The pinned requirements logged with every model (given, never inferred: inference
    re-loads the model in a subprocess and takes seconds)."""
    from importlib.metadata import version

    return [f"pyspark=={version('pyspark')}", f"mlflow=={version('mlflow')}"]


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """Point MLflow's tracking and registry at ``uri`` for the block, then restore."""
    import mlflow

    previous_tracking = mlflow.get_tracking_uri() if _tracking_set() else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_tracking or "")
        mlflow.set_registry_uri(previous_tracking or "")


def _tracking_set() -> bool:
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    return is_tracking_uri_set()


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a local SQLite store (never a
    ``./mlruns`` in the working folder); a server decides for itself (None)."""
    if tracking_uri.startswith("sqlite:///"):
        db = tracking_uri[len("sqlite:///"):]
        return "file://" + os.path.join(os.path.dirname(os.path.abspath(db)), "mlartifacts")
    return None


def _experiment_id(name: str, tracking_uri: str) -> str:
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_location(tracking_uri))


def _ensure_local_store(tracking_uri: str) -> None:
    if tracking_uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(os.path.abspath(tracking_uri[len("sqlite:///"):])), exist_ok=True)


def newest_training(settings: Settings, tag: str, value: str) -> tuple[Any, Any] | None:
    """``(client, run)``: the newest finished run of the experiment whose ``tag`` is ``value``."""
    import mlflow

    uri = settings.tracking_uri
    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):
        return None
    with tracking(uri):
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment = client.get_experiment_by_name(settings.mlflow.experiment)
        if experiment is None:
            return None
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"], max_results=1)
    return (client, runs[0]) if runs else None


def registered_result(client: Any, run: Any, settings: Settings) -> "TrainResult | None":
    """A finished training run as an ``unchanged`` :class:`TrainResult`, or None when one of
    its registered model versions is gone."""
    expected = [f for f in run.data.params.get("trained_fields", "").split(",") if f]
    registered = {mv.name: str(mv.version)
                  for mv in client.search_model_versions(f"run_id = '{run.info.run_id}'")}
    names = {f"{settings.train.registered_model_prefix}{f}" for f in expected}
    if not expected or not names <= set(registered):
        return None
    return TrainResult(run_id=run.info.run_id, experiment_id=run.info.experiment_id,
                       tracking_uri=safe_uri(settings.tracking_uri), unchanged=True,
                       registered={n: registered[n] for n in sorted(names)},
                       delta_versions={k[len("delta_version."):]: int(v) if v.isdigit() else None
                                       for k, v in run.data.tags.items()
                                       if k.startswith("delta_version.")})


def log_training(fitted: Mapping[str, FieldModel], skipped: Mapping[str, str], settings: Settings,
                 *, delta_versions: Mapping[str, int | None], seed: int = 0,
                 progress: Callable[[str], None] = print, fingerprint: str = "",
                 settings_fingerprint: str = "") -> TrainResult:
    """Log ONE MLflow run for a training and register each field's model.

    Args:
        fitted: the fitted field models (:func:`train_fields`).
        skipped: fields not trained, with the reason (logged as parameters).
        settings: ``mlflow.experiment``, ``train.registered_model_prefix``,
            ``settings.tracking_uri`` (a ``sqlite:///`` store's folder is created, and a
            new experiment keeps its artifacts beside it).
        delta_versions: the input tables' Delta versions (tags ``delta_version.<table>``).
        seed: logged as a parameter.
        progress: where progress lines go.

    Returns:
        A :class:`TrainResult` (``seconds`` left at 0 for the caller).

    Implementation details:
        Driver only: small JSON/CSV artifacts, and each ``PipelineModel`` saved by Spark's
        ML writer into MLflow's temporary DFS folder (``MLFLOW_DFS_TMP``, default
        ``/tmp/mlflow``) and copied into the run's artifacts, with explicit pip
        requirements (:func:`pip_requirements`) so nothing is inferred.
    """
    import mlflow
    import mlflow.spark

    from semfin_spark.features import LEAKAGE_RULES

    uri = settings.tracking_uri
    _ensure_local_store(uri)
    result = TrainResult(run_id="", experiment_id="", tracking_uri=safe_uri(uri),
                         skipped=dict(skipped), delta_versions=dict(delta_versions))
    with tracking(uri):
        experiment_id = _experiment_id(settings.mlflow.experiment, uri)
        with mlflow.start_run(experiment_id=experiment_id, run_name="semfin-train") as run:
            result.run_id, result.experiment_id = run.info.run_id, experiment_id
            mlflow.set_tags({f"delta_version.{k}": str(v) for k, v in delta_versions.items()})
            mlflow.set_tag("semfin.stage", "train")
            mlflow.set_tag(FLATTEN_FORMAT_TAG, str(schemas.FLATTEN_FORMAT))
            if fingerprint:
                mlflow.set_tag("semfin.fingerprint", fingerprint)
            if settings_fingerprint:
                mlflow.set_tag("semfin.settings", settings_fingerprint)
            mlflow.log_params(_run_params(settings, seed, fitted, skipped))
            mlflow.log_dict({f: {"prefixes": list(r.prefixes), "exact": list(r.exact),
                                 "reason": r.reason} for f, r in LEAKAGE_RULES.items()},
                            "leakage_rules.json")
            for name, fm in fitted.items():
                mlflow.log_metrics(_field_metrics(fm))
                _log_reports(fm)
                registered = f"{settings.train.registered_model_prefix}{name}"
                logged_at = time.time()
                info = mlflow.spark.log_model(
                    fm.model, artifact_path=f"model-{name}", registered_model_name=registered,
                    pip_requirements=pip_requirements(), signature=_signature(),
                    await_registration_for=0)
                version = info.registered_model_version
                log_seconds = round(time.time() - logged_at, 3)
                result.fields[name] = FieldTraining(
                    family=fm.family, registered_model=registered,
                    version=None if version is None else str(version), n_train=fm.n_train,
                    n_classes=len(fm.classes), classes=list(fm.classes), pooled=fm.pooled,
                    vocabulary_size=len(fm.vocabulary), validation=fm.validation,
                    seconds=fm.seconds, log_seconds=log_seconds)
                result.registered[registered] = str(version)
                progress(f"train {name}: registered {registered} version {version} "
                         f"({log_seconds:.1f} s to log)")
    return result


def _run_params(settings: Settings, seed: int, fitted: Mapping[str, FieldModel],
                skipped: Mapping[str, str]) -> dict[str, Any]:
    t = settings.train
    params: dict[str, Any] = {
        "fields": ",".join(t.fields), "classifiers": ",".join(t.classifiers),
        "min_class_support": t.min_class_support, "min_labels": t.min_labels,
        "max_features": t.max_features, "min_feature_df": t.min_feature_df, "seed": seed,
        "validation_fraction": VALIDATION_FRACTION, "lr_reg_param": LR_REG_PARAM,
        "lr_max_iter": LR_MAX_ITER, "nb_smoothing": NB_SMOOTHING,
        "rf_trees": RF_TREES, "rf_depth": RF_DEPTH, "trained_fields": ",".join(fitted),
        "neighbour_vote": t.neighbour_vote,
    }
    for name, fm in fitted.items():
        params[f"{name}.family"] = fm.family
        params[f"{name}.max_training_models"] = t.max_training_models.get(name, 0)
        params[f"{name}.pooled_classes"] = len(fm.pooled)
        if fm.name_match:
            params[f"{name}.name_match_labels"] = len(fm.name_match.labels)
            params[f"{name}.name_match_words"] = len(fm.name_match.word_labels)
    for name in skipped:
        params[f"{name}.family"] = "skipped"
    return params


def _field_metrics(fm: FieldModel) -> dict[str, float]:
    out = {f"{fm.field}.n_train": float(fm.n_train), f"{fm.field}.n_fit": float(fm.n_fit),
           f"{fm.field}.n_classes": float(len(fm.classes)),
           f"{fm.field}.n_pooled": float(len(fm.pooled)),
           f"{fm.field}.vocabulary_size": float(len(fm.vocabulary)),
           f"{fm.field}.fit_seconds": fm.seconds,
           f"{fm.field}.validation_accuracy": fm.validation_metrics.accuracy,
           f"{fm.field}.validation_macro_f1": fm.validation_metrics.macro_f1}
    if fm.name_match:
        out[f"{fm.field}.name_match_precision"] = fm.name_match.precision
        if fm.name_match.word_labels:
            out[f"{fm.field}.name_match_word_precision"] = fm.name_match.word_precision
    for prefix, vote in (("vote", fm.vote), ("configless_vote", fm.configless_vote)):
        if vote:
            out[f"{fm.field}.{prefix}_threshold"] = vote.threshold
            out[f"{fm.field}.{prefix}_confidence"] = vote.confidence
            for key, value in vote.validation.items():
                out[f"{fm.field}.{prefix}_validation_{key}"] = float(value)
    for family, v in fm.validation.items():
        out[f"{fm.field}.{family}.validation_accuracy"] = v["accuracy"]
        out[f"{fm.field}.{family}.validation_macro_f1"] = v["macro_f1"]
        out[f"{fm.field}.{family}.validation_log_loss"] = v["log_loss"]
    return {k: v for k, v in out.items() if not math.isnan(v)}


def confusion_csv(metrics: Metrics) -> str:
    """The confusion matrix as CSV: a row per true class, a column per predicted class."""
    predicted = sorted({p for row in metrics.confusion.values() for p in row if p is not None})
    header = ["true\\predicted", *predicted]
    has_none = any(None in row for row in metrics.confusion.values())
    if has_none:
        header.append("(none)")
    lines = [",".join(_csv(h) for h in header)]
    for true, row in metrics.confusion.items():
        cells = [str(row.get(p, 0)) for p in predicted] + ([str(row.get(None, 0))] if has_none else [])
        lines.append(",".join([_csv(true), *cells]))
    return "\n".join(lines) + "\n"


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _log_reports(fm: FieldModel) -> None:
    import mlflow

    m = fm.validation_metrics
    folder = f"fields/{fm.field}"
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "confusion_matrix.csv"), "w", encoding="utf-8") as fh:
            fh.write(confusion_csv(m))
        with open(os.path.join(tmp, "confusion_matrix.json"), "w", encoding="utf-8") as fh:
            json.dump({t: {("(none)" if p is None else p): c for p, c in row.items()}
                       for t, row in m.confusion.items()}, fh, indent=1)
        with open(os.path.join(tmp, "classification_report.json"), "w", encoding="utf-8") as fh:
            json.dump({"field": fm.field, "family": fm.family, "n_train": fm.n_train,
                       "n_fit": fm.n_fit, "validation": {"n": m.n, **m.summary()},
                       "families": fm.validation,
                       "classes": list(fm.classes), "pooled_into": POOLED_CLASS,
                       "pooled": fm.pooled, "class_counts": fm.class_counts,
                       "per_class": m.per_class}, fh, indent=1)
        mlflow.log_artifacts(tmp, folder)


def _signature() -> Any:
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(Array("string"), "tokens")]),
                          outputs=Schema([ColSpec("string", PREDICTION_COL)]))


def safe_uri(uri: str) -> str:
    """A tracking URI without credentials (``//user:pass@`` -> ``//***@``), for logs and results."""
    import re

    return re.sub(r"//[^/@]+@", "//***@", uri)


class RegistryError(LookupError):
    """A registered model or version that does not exist or cannot be read."""


class StaleModelError(RegistryError):
    """A registered model fitted on token bags of another flatten format than this
    release's (:data:`~semfin_spark.schemas.FLATTEN_FORMAT`): its vocabulary may not match
    the bags it would score."""


FLATTEN_FORMAT_TAG = "semfin.flatten_format"
"""The run tag naming the flatten format the run's models were fitted on."""


def registered_name(settings: Settings, field_name: str) -> str:
    """``semfin-<field>`` (``train.registered_model_prefix`` + field)."""
    return f"{settings.train.registered_model_prefix}{field_name}"


def resolve_model(settings: Settings, field_name: str, version: str | None) -> tuple[str, str, str]:
    """``(name, version, run_id)`` of the registered model to use for a field.

    Args:
        settings: ``settings.tracking_uri`` and the registered-model prefix.
        field_name: the field.
        version: a registered version; the latest when None.

    Raises:
        RegistryError: no such registered model (run ``semfin train`` first) or version.
        StaleModelError: the version was trained on another flatten format (a run
            without the tag predates the format, and counts as another).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    name = registered_name(settings, field_name)
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    try:
        if version:
            mv = client.get_model_version(name, str(version))
        else:
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise RegistryError(f"no registered model {name!r} at {safe_uri(settings.tracking_uri)}: "
                                  "run `semfin train` first")
            mv = max(versions, key=lambda v: int(v.version))
        trained_on = client.get_run(mv.run_id).data.tags.get(FLATTEN_FORMAT_TAG)
    except MlflowException as exc:
        raise RegistryError(f"cannot resolve model {name!r} version {version}: {exc.message}") from None
    if trained_on != str(schemas.FLATTEN_FORMAT):
        raise StaleModelError(
            f"{name} version {mv.version} was trained on flatten format {trained_on or 'unknown'}, "
            f"this release flattens format {schemas.FLATTEN_FORMAT}: run `semfin flatten` and "
            "`semfin train` (the nightly runs both) before imputing")
    return name, str(mv.version), mv.run_id


def load_field_model(settings: Settings, name: str, version: str) -> Any:
    """The Spark ``PipelineModel`` of a registered model version.

    Raises:
        RegistryError: the model's artifacts cannot be read.
    """
    import mlflow.spark
    from mlflow.exceptions import MlflowException

    try:
        with tracking(settings.tracking_uri):
            return mlflow.spark.load_model(f"models:/{name}/{version}")
    except (MlflowException, OSError) as exc:
        raise RegistryError(f"cannot load {name} version {version}: {exc}") from None
