"""Impute: declared values are never touched, thresholds, provenance, incremental runs,
fields without a model; and train's reuse of an unchanged run."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore
from semfin_spark.impute import ImputeError, impute
from semfin_spark.features import has_config
from semfin_spark.schemas import MODEL_FIELDS, MODEL_PARENTS, MODEL_TOKENS
from semfin_spark.settings import FIELDS, load_settings
from semfin_spark.classifier import POOLED_CLASS, declared_labels
from semfin_spark.train import train

from test_train import quiet


def _settings(root, **overrides):
    return load_settings(environ={}, overrides={
        "warehouse": str(root / "wh"), "mlflow.tracking_uri": f"sqlite:///{root}/mlflow.db",
        "train.classifiers": ["naive_bayes"], **overrides})


def undeclared_families(store: DeltaStore) -> dict[str, set[str]]:
    """Per field, the models with lineage none of whose parents, children or siblings
    declares the field, worked out here in plain Python from the tables."""
    parents: dict[str, set[str]] = defaultdict(set)
    children: dict[str, set[str]] = defaultdict(set)
    for child, parent in store.read(MODEL_PARENTS).select("model_id", "parent_id").collect():
        if child != parent:
            parents[child].add(parent)
            children[parent].add(child)
    declared: dict[str, set[str]] = defaultdict(set)
    for r in declared_labels(store.read(MODEL_FIELDS)).collect():
        declared[r["field"]].add(r["model_id"])
    related = set(parents) | set(children)
    out = {}
    for name in FIELDS:
        out[name] = {m for m in related
                     if not ((parents.get(m, set()) | children.get(m, set())
                              | {s for p in parents.get(m, ()) for s in children[p]} - {m})
                             & declared[name])}
    return out


@pytest.fixture(scope="module")
def hub(spark, tmp_path_factory):
    """A generated Hub of 800 models, ingested, flattened and trained (naive Bayes)."""
    from semfin_spark.flatten import flatten
    from semfin_spark.ingest import ingest

    root = tmp_path_factory.mktemp("impute")
    settings = _settings(root)
    store = DeltaStore.from_settings(spark, settings)
    ingest(spark, store, "synthetic:800,seed=5", settings, progress=quiet)
    flatten(spark, store, settings, progress=quiet)
    trained = train(spark, store, settings, progress=quiet)
    before = {tuple(r) for r in store.read(MODEL_FIELDS).collect()}
    result = impute(spark, store, settings, progress=quiet)
    return root, settings, store, trained, before, result


def test_declared_rows_are_left_exactly_as_they_were(hub):
    _, _, store, _, before, result = hub
    after = store.read(MODEL_FIELDS)
    declared_before = {r for r in before if r[MODEL_FIELDS.columns.index("declared_value")] is not None}
    declared_after = {tuple(r) for r in after.where("declared_value IS NOT NULL").collect()}
    assert declared_before and declared_after == declared_before
    assert after.count() == len(before)
    assert after.select("model_id", "field").distinct().count() == len(before)
    assert result.table_version == store.version(MODEL_FIELDS) == 1


def test_imputed_rows_carry_value_confidence_and_provenance(hub):
    _, settings, store, trained, _, result = hub
    rows = store.read(MODEL_FIELDS).where("declared_value IS NULL AND imputed_model IS NOT NULL")
    # A model without a config.json, or in a family that declares nothing, may need more.
    rows = rows.join(store.read(MODEL_TOKENS).select("model_id", has_config(F.col("tokens"))
                                                     .alias("with_config")), "model_id", "left")
    families = undeclared_families(store)
    assert set(result.fields) == set(FIELDS) and not result.skipped
    for name, outcome in result.fields.items():
        assert (outcome.threshold, outcome.configless_threshold, outcome.undeclared_family_threshold) == \
            tuple(settings.impute.threshold(name, configless=c, undeclared_family=u)
                  for c, u in ((False, False), (True, False), (False, True)))
        bars = {r["model_id"]: settings.impute.threshold(name, configless=not r["with_config"],
                                                         undeclared_family=r["model_id"] in families[name])
                for r in rows.where(F.col("field") == name).select("model_id", "with_config").collect()}
        mine = rows.where(F.col("field") == name).join(
            store.spark.createDataFrame(list(bars.items()), "model_id string, bar double"), "model_id")
        threshold = F.col("bar")
        assert mine.count() == outcome.scored > 0, name
        assert outcome.imputed + outcome.below_threshold == outcome.scored
        assert mine.where("imputed_value IS NOT NULL").count() == outcome.imputed
        # provenance: the registered model, its version and the training run
        assert {tuple(r) for r in mine.select("imputed_model", "imputed_model_version",
                                              "imputed_run_id").distinct().collect()} == \
            {(f"semfin-{name}", trained.registered[f"semfin-{name}"], trained.run_id)}
        assert mine.where("imputed_confidence IS NULL OR imputed_at IS NULL OR features_hash IS NULL").count() == 0
        # at or above the threshold: the value; below it: nothing, confidence kept
        assert mine.where(F.col("imputed_value").isNotNull()
                          & (F.col("imputed_confidence") < threshold)).count() == 0
        assert mine.where(F.col("imputed_value").isNull()
                          & (F.col("imputed_confidence") >= threshold)).count() == 0
        assert mine.where(F.col("imputed_value") == POOLED_CLASS).count() == 0
        assert mine.where(~F.col("value").eqNullSafe(F.col("imputed_value"))).count() == 0
        assert mine.where(F.col("value_source").isNull() != F.col("imputed_value").isNull()).count() == 0
    assert any(o.imputed for o in result.fields.values())
    # The configless threshold (pipeline_tag's 0.7 in conf/) held some answers back here.
    held = rows.where("field = 'pipeline_tag' AND NOT with_config AND imputed_value IS NULL "
                      f"AND imputed_confidence >= {settings.impute.threshold('pipeline_tag')}")
    assert settings.impute.threshold("pipeline_tag", configless=True) == 0.7 and held.count() > 0


def test_reuse_method_is_imputed_for_children_only(hub):
    _, _, store, _, _, result = hub
    children = store.read(MODEL_PARENTS).where("model_id != parent_id").select("model_id").distinct()
    reuse = store.read(MODEL_FIELDS).where("field = 'reuse_method' AND imputed_model IS NOT NULL")
    assert result.fields["reuse_method"].scored > 0
    assert reuse.join(children, "model_id", "left_anti").count() == 0


def test_a_second_run_writes_nothing_and_a_new_model_version_rescores(spark, hub):
    _, settings, store, trained, _, first = hub
    version = store.version(MODEL_FIELDS)
    again = impute(spark, store, settings, progress=quiet)
    assert again.table_version is None and store.version(MODEL_FIELDS) == version
    assert all(f.scored == 0 for f in again.fields.values())
    # the same inputs: train reuses its run and registers nothing new
    same = train(spark, store, settings, progress=quiet)
    assert same.unchanged and same.run_id == trained.run_id and same.registered == trained.registered
    # a forced training registers version 2: impute rescores every missing value of the field
    forced = train(spark, store, settings.replace(train=dataclasses.replace(
        settings.train, fields=("license",))), progress=quiet, force=True)
    assert forced.registered == {"semfin-license": "2"}
    third = impute(spark, store, settings, progress=quiet)
    assert third.fields["license"].scored == first.fields["license"].scored
    assert all(third.fields[f].scored == 0 for f in FIELDS if f != "license")
    assert store.read(MODEL_FIELDS).where("field = 'license' AND imputed_model IS NOT NULL") \
        .select("imputed_model_version").distinct().collect()[0][0] == "2"


def test_a_configless_threshold_holds_back_models_without_a_config_only(spark, hub, tmp_path):
    import shutil

    _, settings, _, _, _, _ = hub
    shutil.copytree(settings.warehouse, tmp_path / "wh")
    strict = settings.replace(warehouse=str(tmp_path / "wh"), impute=dataclasses.replace(
        settings.impute, configless_threshold={f: 1.01 for f in FIELDS}))
    copied = DeltaStore.from_settings(spark, strict)

    def imputed(with_config: bool) -> set[tuple]:
        tokens = copied.read(MODEL_TOKENS).where(has_config(F.col("tokens")) == with_config)
        return {tuple(r) for r in copied.read(MODEL_FIELDS).join(tokens.select("model_id"), "model_id")
                .where("imputed_value IS NOT NULL").select("model_id", "field", "imputed_value").collect()}

    kept, held = imputed(True), imputed(False)
    assert kept and held  # the generated Hub has both kinds of model
    first = impute(spark, copied, strict, progress=quiet)
    assert sum(o.scored for o in first.fields.values()) == len(held)  # those alone re-decided
    assert imputed(True) == kept and not imputed(False)
    # The values of models with a config sit below the configless threshold, yet stand: a
    # second run finds nothing to do.
    again = impute(spark, copied, strict, progress=quiet)
    assert again.table_version is None and all(o.scored == 0 for o in again.fields.values())


def test_a_family_that_declares_nothing_is_held_to_its_own_threshold(spark, hub, tmp_path):
    """A model whose relatives declare nothing of a field has no vote, and its answer is
    the fingerprint's alone: impute.undeclared_family_threshold raises its bar; an
    isolated model, or one with a declaring relative, keeps the field's."""
    import shutil

    _, settings, store, _, _, _ = hub
    families = undeclared_families(store)
    # The shipped thresholds: licence and model_type are never imputed in such a family.
    assert settings.impute.threshold("license", undeclared_family=True) > 1
    assert settings.impute.threshold("model_type", undeclared_family=True) > 1

    def imputed(copied: DeltaStore) -> set[tuple[str, str]]:
        return {(r["model_id"], r["field"]) for r in copied.read(MODEL_FIELDS)
                .where("imputed_value IS NOT NULL").select("model_id", "field").collect()}

    before = imputed(store)
    inside = {(m, f) for m, f in before if m in families[f]}
    assert not {(m, f) for m, f in before if f in ("license", "model_type") and m in families[f]}
    assert inside  # the generated Hub has such families, and their other fields were imputed
    shutil.copytree(settings.warehouse, tmp_path / "wh")
    strict = settings.replace(warehouse=str(tmp_path / "wh"), impute=dataclasses.replace(
        settings.impute, undeclared_family_threshold={f: 1.01 for f in FIELDS}))
    copied = DeltaStore.from_settings(spark, strict)
    first = impute(spark, copied, strict, progress=quiet)
    assert sum(o.scored for o in first.fields.values()) == len(inside)  # those alone re-decided
    assert imputed(copied) == before - inside
    assert impute(spark, copied, strict, progress=quiet).table_version is None


def test_a_raised_threshold_empties_the_values_below_it_and_keeps_confidences(spark, hub, tmp_path):
    import shutil

    root, settings, store, _, _, _ = hub
    copy = tmp_path / "copy"
    shutil.copytree(settings.warehouse, copy / "wh")
    strict = settings.replace(warehouse=str(copy / "wh"), impute=dataclasses.replace(
        settings.impute, confidence_threshold={f: 1.01 for f in FIELDS}))
    copied = DeltaStore.from_settings(spark, strict)
    imputed = {r[0]: r[1] for r in copied.read(MODEL_FIELDS).where("imputed_value IS NOT NULL")
               .groupBy("field").count().collect()}
    # Without --full, a raised threshold re-decides exactly the values it no longer allows...
    raised = impute(spark, copied, strict, progress=quiet)
    assert {f: o.scored for f, o in raised.fields.items() if o.scored} == imputed
    assert all(o.imputed == 0 for o in raised.fields.values())
    # ... once: a second run writes nothing
    assert impute(spark, copied, strict, progress=quiet).table_version is None
    result = impute(spark, copied, strict, progress=quiet, full=True)
    assert all(f.imputed == 0 and f.scored > 0 for f in result.fields.values())
    rows = copied.read(MODEL_FIELDS).where("declared_value IS NULL AND imputed_model IS NOT NULL")
    assert rows.where("imputed_value IS NOT NULL OR value IS NOT NULL").count() == 0
    assert rows.where("imputed_confidence IS NULL").count() == 0


def test_fields_without_a_registered_model_are_skipped_or_refused(spark, hub, tmp_path):
    _, settings, store, _, _, _ = hub
    empty = settings.replace(mlflow=dataclasses.replace(
        settings.mlflow, tracking_uri=f"sqlite:///{tmp_path}/empty.db"))
    with pytest.raises(ImputeError, match="semfin train"):
        impute(spark, store, empty, progress=quiet)
    with pytest.raises(ImputeError):
        impute(spark, store, settings, model_version="99", progress=quiet)


def test_models_trained_on_another_flatten_format_are_refused_and_do_not_stand(
        spark, hub, monkeypatch):
    """A release that flattens differently (schemas.FLATTEN_FORMAT bumped) gives other token
    bags: impute refuses the models fitted on the old ones, and train's schedule does not
    keep them (the next train fits new ones)."""
    from semfin_spark import schemas
    from semfin_spark.train import _standing_training

    _, settings, store, trained, _, _ = hub
    assert _standing_training(store, settings, 0)[0].run_id == trained.run_id
    old = schemas.FLATTEN_FORMAT
    monkeypatch.setattr(schemas, "FLATTEN_FORMAT", old + 1)
    with pytest.raises(ImputeError, match=f"trained on flatten format {old}, this release "
                                          f"flattens format {old + 1}: run `semfin flatten`"):
        impute(spark, store, settings, progress=quiet)
    standing, why = _standing_training(store, settings, 0)
    assert standing is None and "no earlier training with these settings" in why


def test_the_schedule_keeps_a_recent_training_until_the_labels_move(spark, hub, tmp_path):
    """train.retrain_after_days / train.retrain_label_change: new data alone does not
    retrain; a field whose labels moved past the threshold, or an old run, does."""
    import shutil

    from semfin_spark.train import _standing_training, label_changes

    root, settings, _, trained, _, _ = hub
    shutil.copytree(settings.warehouse, tmp_path / "wh")
    shutil.copy(root / "mlflow.db", tmp_path / "mlflow.db")
    copy = settings.replace(warehouse=str(tmp_path / "wh"), mlflow=dataclasses.replace(
        settings.mlflow, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    store = DeltaStore.from_settings(spark, copy)
    licensed = [r[0] for r in store.read(MODEL_FIELDS).where(
        "field = 'license' AND declared_value IS NOT NULL AND declared_value != 'unknown'")
        .orderBy("model_id").collect()]  # 'unknown' is not a class (train.EXCLUDED_LABELS)

    def relabel(ids):
        quoted = ", ".join(f"'{i}'" for i in ids)
        spark.sql(f"UPDATE delta.`{store.path(MODEL_FIELDS)}` SET declared_value = 'wtfpl' "
                  f"WHERE field = 'license' AND model_id IN ({quoted})")

    few = max(1, len(licensed) // 50)  # 2% of the licence labels
    relabel(licensed[:few])
    again = train(spark, store, copy, progress=quiet)
    assert again.unchanged and again.run_id == trained.run_id
    assert again.registered == trained.registered  # no new version registered
    changes = label_changes(store, trained.delta_versions["model_fields"])
    assert changes["license"]["changed"] == few
    assert changes["license"]["then"] == changes["license"]["now"] == len(licensed)
    assert all(changes[f]["changed"] == 0 for f in FIELDS if f != "license")

    relabel(licensed[few:few + len(licensed) // 10])  # 12% in all
    standing, why = _standing_training(store, copy, 0)
    assert standing is None and "license labels changed" in why
    young = copy.replace(train=dataclasses.replace(copy.train, retrain_after_days=1e-9,
                                                   retrain_label_change=0.5))
    standing, why = _standing_training(store, young, 0)
    assert standing is None and "days old" in why
    lenient = young.replace(train=dataclasses.replace(young.train, retrain_after_days=7))
    assert _standing_training(store, lenient, 0)[0].run_id == trained.run_id


def test_a_new_commit_keeps_its_imputed_values_and_is_not_rescored(spark, hub, tmp_path):
    """Flatten reprocesses a model whose sha changed but leaves impute's columns to
    impute; with the same features and vote, impute has nothing to rescore."""
    import shutil

    from semfin_spark.flatten import flatten
    from semfin_spark.schemas import HUB_MODELS

    _, settings, _, _, _, _ = hub
    shutil.copytree(settings.warehouse, tmp_path / "wh")
    copy = settings.replace(warehouse=str(tmp_path / "wh"))
    store = DeltaStore.from_settings(spark, copy)
    ids = [r[0] for r in store.read(MODEL_FIELDS).where("imputed_value IS NOT NULL")
           .select("model_id").distinct().orderBy("model_id").limit(3).collect()]

    def rows():
        return sorted(tuple(v for k, v in r.asDict().items() if k != "sha") for r in
                      store.read(MODEL_FIELDS).where(F.col("model_id").isin(*ids)).collect())

    before = rows()
    hub_rows = store.read(HUB_MODELS)
    store.overwrite(HUB_MODELS, hub_rows.withColumn(
        "sha", F.when(F.col("id").isin(*ids), F.lit("new-sha")).otherwise(F.col("sha"))).localCheckpoint())
    assert flatten(spark, store, copy, progress=quiet).reprocessed == len(ids) == 3
    assert rows() == before
    assert {r[0] for r in store.read(MODEL_FIELDS).where(F.col("model_id").isin(*ids))
            .select("sha").collect()} == {"new-sha"}
    again = impute(spark, store, copy, progress=quiet)
    assert again.fields and all(f.scored == 0 for f in again.fields.values())
    assert again.table_version is None


def test_a_changed_token_bag_or_vote_rescores_those_rows_alone(spark, hub, tmp_path):
    """Change detection hashes each model's bag once, then joins narrow: a model's new token
    rescores that model's missing fields and nothing else; a parent's new declared licence
    rescores licences of its relatives alone (their vote moved), no other field."""
    import shutil

    from semfin_spark.schemas import MODEL_TOKENS

    _, settings, _, _, _, _ = hub
    shutil.copytree(settings.warehouse, tmp_path / "wh")
    copy = settings.replace(warehouse=str(tmp_path / "wh"))
    store = DeltaStore.from_settings(spark, copy)

    def stamps() -> dict[tuple[str, str], object]:
        return {(r.model_id, r.field): r.imputed_at for r in store.read(MODEL_FIELDS)
                .where("imputed_model IS NOT NULL").select("model_id", "field", "imputed_at").collect()}

    def rescored(before: dict) -> set[tuple[str, str]]:
        return {key for key, at in stamps().items() if at != before.get(key)}

    before = stamps()
    target = min(m for m, f in before if f == "license")
    spark.sql(f"UPDATE delta.`{store.path(MODEL_TOKENS)}` SET tokens = "
              f"array_sort(array_union(tokens, array('tag:brand-new'))) WHERE model_id = '{target}'")
    first = impute(spark, store, copy, progress=quiet)
    assert rescored(before) == {(m, f) for m, f in before if m == target}
    assert sum(o.scored for o in first.fields.values()) == len(rescored(before))

    # A leaf with one parent that declares a licence: its vote is that licence.
    parents = store.read(MODEL_PARENTS).where("model_id != parent_id")
    one_parent = parents.groupBy("model_id").count().where("count = 1").select("model_id")
    leaves = one_parent.join(parents.select(F.col("parent_id").alias("model_id")), "model_id", "left_anti")
    declared = store.read(MODEL_FIELDS).where("field = 'license' AND declared_value IS NOT NULL") \
        .select(F.col("model_id").alias("parent_id"))
    missing = [m for m, f in before if f == "license"]
    child, parent = (parents.join(leaves, "model_id").join(declared, "parent_id")
                     .where(F.col("model_id").isin(*missing)).orderBy("model_id")
                     .select("model_id", "parent_id").first())
    grandparents = {r[0] for r in parents.where(F.col("model_id") == parent).select("parent_id").collect()}
    relatives = {r[0] for r in parents.where(F.col("parent_id").isin(parent, *grandparents))
                 .select("model_id").collect()} | grandparents
    before = stamps()
    spark.sql(f"UPDATE delta.`{store.path(MODEL_FIELDS)}` SET declared_value = 'wtfpl', "
              f"value = 'wtfpl' WHERE field = 'license' AND model_id = '{parent}'")
    second = impute(spark, store, copy, progress=quiet)
    moved = rescored(before)
    assert (child, "license") in moved
    assert {f for _, f in moved} == {"license"} and {m for m, _ in moved} <= relatives
    assert all(o.scored == 0 for f, o in second.fields.items() if f != "license")
