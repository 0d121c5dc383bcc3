"""Train: metrics, pooling, the leakage rules on the fitted vocabularies, and the MLflow run
(one run, its tags and artifacts, every model registered, loaded back and predicting the same)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pyspark.ml.functions import vector_to_array
from pyspark.sql import functions as F

from semfin_spark.features import LEAKAGE_RULES, field_tokens, model_features
from semfin_spark.settings import FIELDS, load_settings
from semfin_spark.classifier import (
    CAP_MIN_PER_CLASS, POOLED_CLASS, capped, fit_field, held_out, labels, metrics_from_confusion,
    score, vocabulary,
)
from semfin_spark.registry import log_training, pip_requirements
from semfin_spark.schemas import FLATTEN_FORMAT
from semfin_spark.train import INPUT_TABLES, train, train_fields


def quiet(_line: str) -> None:
    pass


def with_train(settings, **changes):
    return settings.replace(train=dataclasses.replace(settings.train, **changes))


def validation_split(spark, n: int) -> tuple[list[str], list[str]]:
    """Of the ids ``m0`` .. ``m<n-1>``, those fit_field holds out for validation with seed 0,
    and the others."""
    ids = spark.createDataFrame([(f"m{i}",) for i in range(n)], "model_id string")
    flags = {r.model_id: r.held for r in ids.select("model_id", held_out(0).alias("held")).collect()}
    return [m for m, h in flags.items() if h], [m for m, h in flags.items() if not h]


# ------------------------------------------------------------------ metrics

def test_metrics_from_confusion_counts_a_missing_prediction_as_wrong():
    m = metrics_from_confusion({("a", "a"): 3, ("a", "b"): 1, ("b", "b"): 1, ("b", None): 1,
                                ("c", "a"): 2})
    assert m.n == 8 and m.accuracy == pytest.approx(4 / 8) and m.coverage == pytest.approx(7 / 8)
    # F1 a: tp 3, predicted 5, support 4 -> 6/9; b: tp 1, predicted 2, support 2 -> 1/2; c: 0
    assert m.macro_f1 == pytest.approx(round((6 / 9 + 1 / 2 + 0) / 3, 6))
    assert m.per_class["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m.confusion["b"] == {"b": 1, None: 1}


# ------------------------------------------------------------------ pooling, confidence

def test_rare_classes_are_pooled_reported_and_never_predicted(spark, settings):
    rows = ([(f"m{i}", ["tok:a", f"n{i % 3}"], "alpha") for i in range(12)]
            + [(f"p{i}", ["tok:b", f"n{i % 3}"], "beta") for i in range(12)]
            + [("r1", ["tok:a", "tok:b"], "rare-one"), ("r2", ["tok:b", "n1"], "rare-two")])
    df = spark.createDataFrame(rows, "model_id string, tokens array<string>, label string")
    settings = with_train(settings, min_class_support=3, min_feature_df=1,
                          classifiers=("naive_bayes", "logistic_regression"))
    fm = fit_field(spark, df, "library_name", settings, seed=0)
    assert set(fm.classes) == {"alpha", "beta", POOLED_CLASS}
    assert fm.pooled == {"rare-one": 1, "rare-two": 1}
    assert fm.class_counts == {"alpha": 12, "beta": 12, "rare-one": 1, "rare-two": 1}
    assert set(fm.validation) == {"naive_bayes", "logistic_regression"} and fm.family in fm.validation
    scored = fm.model.transform(df.select("model_id", "tokens"))
    out = score(fm, df).join(scored.select("model_id", vector_to_array("probability").alias("p")), "model_id")
    rows = out.collect()
    assert {r.prediction for r in rows} <= {"alpha", "beta"}
    by_id = {r.model_id: r for r in rows}
    assert by_id["m0"].prediction == "alpha" and by_id["p0"].prediction == "beta"
    for r in rows:  # the confidence is the probability of the predicted class
        assert r.confidence == pytest.approx(r.p[list(fm.classes).index(r.prediction)])


# ------------------------------------------------------------------ the real warehouse

@pytest.fixture(scope="module")
def trees(trees_warehouse):
    return trees_warehouse


@pytest.fixture(scope="module")
def trained(spark, trees, tmp_path_factory):
    """Every field of hub2025_trees trained (naive Bayes: fast) and logged to a tmp store."""
    mlflow_dir = tmp_path_factory.mktemp("mlflow")
    settings = load_settings(environ={}, overrides={
        "warehouse": trees.warehouse,
        "mlflow.tracking_uri": f"sqlite:///{mlflow_dir}/mlflow.db",
        "train.classifiers": ["naive_bayes"]})
    fitted, skipped = train_fields(spark, trees, settings, progress=quiet)
    result = log_training(fitted, skipped, settings, delta_versions={"hub_models": 0}, progress=quiet)
    return settings, fitted, result, mlflow_dir


def _load(settings, name, version):
    import mlflow
    import mlflow.spark

    from semfin_spark.registry import tracking

    with tracking(settings.tracking_uri):
        return mlflow.spark.load_model(f"models:/{name}/{version}")


def test_every_labelled_field_is_trained_and_registered(trained):
    settings, fitted, result, mlflow_dir = trained
    assert set(fitted) == set(FIELDS) and result.skipped == {}
    for name in FIELDS:
        f = result.fields[name]
        assert f.registered_model == f"semfin-{name}" and f.version == "1"
        assert f.family == "naive_bayes" and f.n_train == fitted[name].n_train
    # hub2025_trees declares one reuse method only: the field still trains, on one class
    assert result.fields["reuse_method"].classes == ["finetune"]
    # logging passes its requirements, so MLflow infers nothing (the time it takes is a
    # benchmark figure: scripts/bench.py, stage train, log_s)
    reqs = list(mlflow_dir.glob("mlartifacts/*/models/*/artifacts/requirements.txt")) \
        or list(mlflow_dir.glob("mlartifacts/**/requirements.txt"))
    assert reqs and all(sorted(p.read_text().split()) == sorted(pip_requirements()) for p in reqs)
    assert not (Path.cwd() / "mlruns").exists()


def test_one_run_with_params_metrics_tags_and_reports(trained):
    import mlflow

    settings, fitted, result, _ = trained
    client = mlflow.MlflowClient(tracking_uri=settings.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["delta_version.hub_models"] == "0"
    assert run.data.tags["semfin.flatten_format"] == str(FLATTEN_FORMAT)
    assert run.data.params["license.family"] == "naive_bayes"
    assert run.data.params["min_class_support"] == str(settings.train.min_class_support)
    for name in FIELDS:
        assert run.data.metrics[f"{name}.validation_accuracy"] == fitted[name].validation_metrics.accuracy
        assert f"{name}.n_train" in run.data.metrics
    local = Path(client.download_artifacts(result.run_id, "fields/pipeline_tag"))
    report = json.loads((local / "classification_report.json").read_text())
    assert report["pooled_into"] == POOLED_CLASS and report["pooled"] == fitted["pipeline_tag"].pooled
    assert set(report["per_class"]) <= set(fitted["pipeline_tag"].classes)
    csv = (local / "confusion_matrix.csv").read_text().splitlines()
    confusion = json.loads((local / "confusion_matrix.json").read_text())
    assert len(csv) == 1 + len(confusion)
    assert sum(sum(row.values()) for row in confusion.values()) == report["validation"]["n"]
    assert len([r for r in client.search_runs([result.experiment_id])]) == 1


def test_no_leaking_token_reaches_any_field_model(spark, trees, trained):
    """On the registered models' vocabularies: every rule drops tokens that would
    otherwise have been in the vocabulary (so the check is not vacuous)."""
    settings, fitted, result, _ = trained
    features = model_features(trees)
    for name in FIELDS:
        loaded = _load(settings, f"semfin-{name}", result.fields[name].version)
        vocab = set(vocabulary(loaded))
        assert vocab == set(fitted[name].vocabulary)
        assert not [t for t in vocab if LEAKAGE_RULES[name].leaks(t)], name
        raw = (features.join(labels(trees, name), "model_id")
               .select(F.explode("tokens").alias("t")).groupBy("t").count()
               .where(F.col("count") >= settings.train.min_feature_df).collect())
        leaking = [r.t for r in raw if LEAKAGE_RULES[name].leaks(r.t)]
        assert leaking, f"{name}: the real data has no token of its leakage rule"


def test_a_registered_model_loads_back_and_predicts_the_same(spark, trees, trained):
    from semfin_spark.neighbourhood import is_vote_stage, lineage_pairs, neighbour_vote, with_vote

    settings, fitted, result, _ = trained
    pairs = lineage_pairs(trees.read("model_parents"))
    for name in ("license", "pipeline_tag", "model_type"):  # model_type: with its name match
        loaded = _load(settings, f"semfin-{name}", result.fields[name].version)
        # the trees have lineage: every field's model ends with the relatives' vote
        assert fitted[name].vote is not None and is_vote_stage(loaded.stages[-1])
        tokens = with_vote(field_tokens(model_features(trees), name), neighbour_vote(pairs, labels(trees, name)))
        before = {r.model_id: (r.prediction, r.confidence) for r in score(fitted[name], tokens).collect()}
        after = {r.model_id: (r.prediction, r.confidence) for r in score(loaded, tokens).collect()}
        assert len(before) == 1983 and before == after
    # model_type's models without a config (every model missing a type) have a vote of their own
    configless = fitted["model_type"].configless_vote
    assert configless is not None and configless.threshold > fitted["model_type"].vote.threshold
    assert fitted["license"].configless_vote is None


def test_train_logs_lr_with_its_pooled_threshold_and_skips_fields_without_labels(
        spark, tmp_path_factory, dev_warehouse):
    """The whole stage on hub2022_dev: reuse_method has no label there and is skipped; the
    logistic-regression model keeps its pooled-class threshold through MLflow."""
    store = dev_warehouse
    mlflow_dir = tmp_path_factory.mktemp("mlflow-lr")
    settings = load_settings(environ={}, overrides={
        "warehouse": store.warehouse, "mlflow.tracking_uri": f"sqlite:///{mlflow_dir}/mlflow.db",
        "train.fields": ["reuse_method", "license"], "train.classifiers": ["logistic_regression"]})
    result = train(spark, store, settings, progress=quiet)
    assert "reuse_method" in result.skipped and set(result.fields) == {"license"}
    assert set(result.delta_versions) == {t.name for t in INPUT_TABLES}
    lic = result.fields["license"]
    assert lic.family == "logistic_regression" and POOLED_CLASS in lic.classes
    loaded = _load(settings, "semfin-license", lic.version)
    predicted = score(loaded, field_tokens(model_features(store), "license"))
    assert predicted.where(F.col("prediction") == POOLED_CLASS).count() == 0
    assert predicted.where(F.col("confidence").isNull()).count() == 0


def test_model_type_name_match_predicts_rare_types_and_yields_where_training_contradicts(spark, settings):
    """An architecture that spells a declared type predicts it, even a type seen once (pooled);
    a name that training contradicts (Phi architectures labelled phi-msft) is left to the
    classifier."""
    rows = ([(f"b{i}", ["architecture:bert", f"n{i % 3}"], "bert") for i in range(12)]
            + [(f"g{i}", ["architecture:gpt2", f"n{i % 3}"], "gpt2") for i in range(12)]
            + [(f"p{i}", ["architecture:phi", "tok:phi", f"n{i % 3}"], "phi-msft") for i in range(8)]
            + [("phi-0", ["tok:other"], "phi"), ("led-0", ["architecture:led"], "led"),
               ("mae-0", ["architecture:vitmae"], "vit_mae")]
            # no architecture: the repo name's words (gpt2 right twice, bert wrong once;
            # a name with two labels' words counts for neither)
            + [("w0", ["name:tiny", "name:gpt2"], "gpt2"), ("w1", ["name:gpt2", "n1"], "gpt2"),
               ("w2", ["name:bert", "name:tiny"], "gpt2"), ("w3", ["name:led", "name:bert"], "bert")])
    df = spark.createDataFrame(rows, "model_id string, tokens array<string>, label string")
    settings = with_train(settings, min_class_support=2, min_feature_df=1,
                          classifiers=("logistic_regression",))
    fm = fit_field(spark, df, "model_type", settings, seed=0)
    assert {"led", "vit_mae", "phi"} <= set(fm.pooled)
    rule = fm.name_match
    assert rule is not None and "phi" not in rule.labels
    assert rule.labels["led"] == "led" and rule.labels["vitmae"] == "vit_mae"
    # 26 of the 34 training architectures spell their label; Phi's 8 do not
    assert rule.precision == pytest.approx(26 / 34)
    prior = 2 * 26 / 34
    assert rule.confidence["bert"] == pytest.approx((12 + prior) / 14, abs=1e-6)
    assert rule.confidence["led"] == pytest.approx((1 + prior) / 3, abs=1e-6)
    queries = spark.createDataFrame(
        [("q-led", ["architecture:led", "n1"]), ("q-mae", ["architecture:vitmae"]),
         ("q-phi", ["architecture:phi", "tok:phi"]), ("q-none", ["n2", "architecture:unheard"])],
        "model_id string, tokens array<string>")
    got = {r.model_id: (r.prediction, r.confidence) for r in score(fm, queries).collect()}
    assert got["q-led"] == ("led", rule.confidence["led"])
    assert got["q-mae"] == ("vit_mae", rule.confidence["vitmae"])
    assert got["q-phi"][0] == "phi-msft"                 # the classifier's answer
    assert got["q-none"][0] in {"bert", "gpt2", "phi-msft"}
    # Repo-name words, for models without an architecture only: gpt2's 2 of 2 kept, bert's
    # 0 of 1 dropped; the precision of words (2 of 3) is their prior.
    assert rule.word_labels.get("gpt2") == "gpt2" and "bert" not in rule.word_labels
    assert rule.word_precision == pytest.approx(2 / 3)
    assert rule.word_confidence["gpt2"] == pytest.approx((2 + 2 * 2 / 3) / 4, abs=1e-6)
    assert rule.word_confidence["led"] == pytest.approx(2 / 3, abs=1e-6)  # no evidence: the prior
    words = spark.createDataFrame(
        [("only-word", ["name:gpt2", "name:tiny"]), ("arch-first", ["architecture:bert", "name:gpt2"]),
         ("two-labels", ["name:led", "name:gpt2"]), ("contradicted", ["name:bert"]),
         ("dropped-and-kept", ["name:bert", "name:gpt2"]),  # two labels named, as the fit counts
         ("unknown-arch", ["architecture:unheard", "name:gpt2"])],
        "model_id string, tokens array<string>").withColumn("model_prediction", F.lit("classifier"))
    ruled = {r.model_id: (r.prediction, r.rule_confidence)
             for r in rule.stage().transform(words).collect()}
    assert ruled == {"only-word": ("gpt2", rule.word_confidence["gpt2"]),
                     "arch-first": ("bert", rule.confidence["bert"]),
                     "two-labels": ("classifier", None), "contradicted": ("classifier", None),
                     "dropped-and-kept": ("classifier", None),
                     "unknown-arch": ("classifier", None)}  # has an architecture: no word rule
    # the same rule outside a name-match field: none
    assert fit_field(spark, df, "library_name", settings, seed=0).name_match is None


def test_a_class_only_on_the_validation_side_does_not_shift_the_others(spark, settings):
    """Spark ML's naive Bayes numbers the classes it sees 0..k-1: a class whose every model
    is held out for validation must not shift the labels of the classes after it."""
    held, kept = validation_split(spark, 400)
    rows = ([(m, ["tok:a"], "aa") for m in held[:13]]             # index 0, all held out
            + [(m, ["tok:b"], "beta") for m in held[13:16] + kept[:9]]
            + [(m, ["tok:z"], "zeta") for m in held[16:19] + kept[9:18]])
    df = spark.createDataFrame(rows, "model_id string, tokens array<string>, label string")
    settings = with_train(settings, min_class_support=2, min_feature_df=1, classifiers=("naive_bayes",))
    fm = fit_field(spark, df, "library_name", settings, seed=0)
    confusion = fm.validation_metrics.confusion
    assert confusion["beta"] == {"beta": 3} and confusion["zeta"] == {"zeta": 3}
    assert "aa" not in {p for row in confusion.values() for p in row}
    # the final model saw every class: each is predicted right
    predicted = {r.model_id: r.prediction for r in score(fm, df).collect()}
    assert all(predicted[m] == label for m, _, label in rows)


def test_the_refit_starts_where_the_validation_fit_ended(spark, settings, monkeypatch):
    """The refit on every training model starts from the validation fit's coefficients,
    moved to the full vocabulary and class list: far below where a fit from zero starts,
    done in LR_WARM_MAX_ITER iterations, and a class and a token that only validation
    models carry are still learnt."""
    from semfin_spark import classifier

    held, kept = validation_split(spark, 300)
    rows = ([(m, ["tok:a", f"n{i % 5}"], "alpha") for i, m in enumerate(kept[:60] + held[:10])]
            + [(m, ["tok:b", f"n{i % 5}"], "beta") for i, m in enumerate(kept[60:120] + held[10:20])]
            + [(m, ["tok:c", f"n{i % 5}"], "gamma") for i, m in enumerate(kept[120:150] + held[20:30])]
            + [(m, ["tok:d", f"n{i % 5}"], "delta") for i, m in enumerate(held[30:40])])  # held out only
    df = spark.createDataFrame(rows, "model_id string, tokens array<string>, label string")
    settings = with_train(settings, min_class_support=2, min_feature_df=1,
                          classifiers=("logistic_regression",))
    warm = fit_field(spark, df, "library_name", settings, seed=0)
    monkeypatch.setattr(classifier, "_warm_start", lambda spark, estimator, *rest: estimator)
    cold = fit_field(spark, df, "library_name", settings, seed=0)
    warm_loss = warm.model.stages[1].summary.objectiveHistory
    cold_loss = cold.model.stages[1].summary.objectiveHistory
    assert "tok:d" in warm.vocabulary and "delta" in warm.classes
    assert len(warm_loss) <= classifier.LR_WARM_MAX_ITER + 1 < len(cold_loss)
    assert warm_loss[0] < cold_loss[0] / 2
    for fm in (warm, cold):
        predicted = {r.model_id: r.prediction for r in score(fm, df).collect()}
        assert all(predicted[m] == label for m, _, label in rows)


def test_a_sample_thins_the_frequent_classes_keeps_the_rare_and_is_the_same_every_run(spark):
    rows = ([(f"big/{i}", "apache-2.0") for i in range(20_000)]
            + [(f"mid/{i}", "mit") for i in range(1_500)]
            + [(f"rare/{i}", "gpl-3.0") for i in range(60)])
    df = spark.createDataFrame(rows, "model_id string, label string")
    counts = {"apache-2.0": 20_000, "mit": 1_500, "gpl-3.0": 60}
    sample, expected = capped(df, counts, 2_156, seed=0)  # a tenth of 21,560
    got = {r["label"]: r["count"] for r in sample.groupBy("label").count().collect()}
    assert got["gpl-3.0"] == 60                       # fewer than CAP_MIN_PER_CLASS: all kept
    assert abs(got["mit"] - 150) <= 40                # a tenth (150) is above the floor of 100
    assert abs(got["apache-2.0"] - 2_000) <= 150      # a tenth, by the hash
    assert expected == 2_000 + 150 + 60 and abs(sum(got.values()) - expected) <= 180
    again, _ = capped(df, counts, 2_156, seed=0)
    assert sorted(again.collect()) == sorted(sample.collect())
    assert capped(df, counts, 0, seed=0) == (df, 21_560)       # 0: no sample
    assert capped(df, counts, 30_000, seed=0) == (df, 21_560)  # under the cap: no sample


def test_a_field_over_the_cap_is_fitted_on_its_sample_and_still_predicts_every_class(
        spark, settings):
    rows = ([(f"a{i}", ["tok:a", f"n{i % 7}"], "alpha") for i in range(3_000)]
            + [(f"b{i}", ["tok:b", f"n{i % 7}"], "beta") for i in range(300)]
            + [(f"c{i}", ["tok:c"], "gamma") for i in range(20)])
    df = spark.createDataFrame(rows, "model_id string, tokens array<string>, label string")
    settings = with_train(settings, min_feature_df=1, classifiers=("naive_bayes",),
                          max_training_models={"library_name": 500})
    fm = fit_field(spark, df, "library_name", settings, seed=0)
    assert fm.n_train == 3_320 and fm.class_counts == {"alpha": 3_000, "beta": 300, "gamma": 20}
    # alpha thinned to its share, beta and gamma kept at the per-class floor or whole
    assert fm.n_fit == round(3_000 * 500 / 3_320) + CAP_MIN_PER_CLASS + 20
    assert set(fm.classes) == {"alpha", "beta", "gamma"}
    predicted = {r.model_id: r.prediction for r in score(fm, df).collect()}
    assert all(predicted[m] == label for m, _, label in rows)
