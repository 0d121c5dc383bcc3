"""Features: the tokens each source gives, and the leakage rules each field's tokens obey."""

from __future__ import annotations

import math

import pytest

from semfin_spark.features import (
    LEAKAGE_RULES, by_model, field_tokens, has_config, leakage_table, token_bags, without_config,
)
from semfin_spark.schemas import CONFIG_FEATURES, HUB_MODELS, MODEL_FIELDS, MODEL_FILES, MODEL_TAGS
from semfin_spark.settings import FIELDS


def _rows(table, rows):
    """Full rows of ``table`` from dicts (missing columns null)."""
    return [tuple(r.get(c) for c in table.columns) for r in rows]


@pytest.fixture(scope="module")
def tables(spark):
    """Three hand-made models (one with everything, one bare, one legacy id) as the flatten
    tables token_bags reads."""
    hub = [{"id": "acme/Bert-Base-Finetuned-SST2"}, {"id": "solo/empty"}, {"id": "gpt2"}]
    config = [
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "architectures", "key_path": "architectures[0]",
         "position": 0, "value": "TFBertForSequenceClassification", "value_type": "string"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "model_type", "key_path": "model_type",
         "value": "bert", "value_type": "string"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "hidden_size", "key_path": "hidden_size",
         "value": "768", "value_type": "int", "value_num": 768.0},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "num_labels", "key_path": "num_labels",
         "value": "2", "value_type": "int", "value_num": 2.0},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "layer_norm_eps", "key_path": "layer_norm_eps",
         "value": "1e-12", "value_type": "float", "value_num": 1e-12},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "bias", "key_path": "bias",
         "value": "-3.5", "value_type": "float", "value_num": -3.5},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "id2label.0", "key_path": "id2label.0",
         "value": "NEGATIVE", "value_type": "string"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "id2label.1", "key_path": "id2label.1",
         "value": "POSITIVE", "value_type": "string"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "pad", "key_path": "pad",
         "value": "null", "value_type": "null"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "key": "empty", "key_path": "empty",
         "value_type": "object"},
        {"model_id": "gpt2", "key": "architectures", "key_path": "architectures[0]", "position": 0,
         "value": "GPT2LMHeadModel", "value_type": "string"},
    ]
    tags = [
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "tag": "license:mit", "kind": "license", "value": "mit"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "tag": "text-classification", "kind": "task",
         "value": "text-classification"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "tag": "transformers", "kind": "library",
         "value": "transformers"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "tag": "bert", "kind": "other", "value": "bert"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "tag": "base_model:adapter:google/bert",
         "kind": "base_model", "value": "google/bert", "relation": "adapter"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "tag": "en", "kind": "language", "value": "en"},
        {"model_id": "gpt2", "tag": "bert", "kind": "other", "value": "bert"},
    ]
    files = [
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "path": "pytorch_model-00001-of-00002.bin",
         "extension": "bin", "kind": "weights"},
        {"model_id": "acme/Bert-Base-Finetuned-SST2", "path": "adapter_config.json",
         "extension": "json", "kind": "adapter"},
        {"model_id": "ghost/not-in-hub", "path": "x.bin", "extension": "bin", "kind": "weights"},
    ]
    fields = [{"model_id": "acme/Bert-Base-Finetuned-SST2", "field": "model_type", "declared_value": "bert"}]
    return [spark.createDataFrame(_rows(table, rows), table.schema)
            for table, rows in ((HUB_MODELS, hub), (CONFIG_FEATURES, config), (MODEL_TAGS, tags),
                                (MODEL_FILES, files), (MODEL_FIELDS, fields))]


@pytest.fixture(scope="module")
def features(tables):
    hub, config, tags, files, fields = tables
    return token_bags(hub.select("id"), config, tags, files, fields).localCheckpoint()


@pytest.fixture(scope="module")
def tokens(features):
    return {r.model_id: r.tokens for r in features.collect()}


def test_every_hub_model_gets_one_row_and_nothing_else(tokens):
    assert set(tokens) == {"acme/Bert-Base-Finetuned-SST2", "solo/empty", "gpt2"}
    assert tokens["solo/empty"] == ["author:solo", "name:empty"]
    assert all(t == sorted(set(t)) for t in tokens.values())


def test_config_tokens(tokens):
    t = set(tokens["acme/Bert-Base-Finetuned-SST2"])
    # key paths, digit segments folded
    assert {"config_key:architectures", "config_key:hidden_size", "config_key:id2label.#",
            "config_key:empty"} <= t
    assert "config_key:id2label.0" not in t
    # strings lower-cased; small ints exact; larger numbers on a log2 scale; null spelled
    assert {"config:architectures=tfbertforsequenceclassification", "config:id2label.#=negative",
            "config:id2label.#=positive", "config:num_labels=2", "config:pad=null"} <= t
    assert f"config:hidden_size~2^{math.floor(math.log2(768))}" in t
    assert f"config:layer_norm_eps~2^{math.floor(math.log2(1e-12))}" in t
    assert "config:bias~-2^1" in t
    assert not any(x.startswith("config:empty") for x in t)
    # the transformers class name split into architecture and head, TF prefix dropped
    assert {"architecture:bert", "architecture_head:forsequenceclassification"} <= t
    assert {"architecture:gpt2", "architecture_head:lmheadmodel"} <= set(tokens["gpt2"])


def test_tag_file_and_repo_tokens(tokens):
    t = set(tokens["acme/Bert-Base-Finetuned-SST2"])
    assert {"tag:license:mit", "tag:task:text-classification", "tag:library:transformers",
            "tag:language:en", "tag:base_model_relation:adapter", "tag:base_model:google/bert"} <= t
    # the tag equal to the model's own declared model_type is told apart ...
    assert "tag:model_type:bert" in t and "tag:other:bert" not in t
    # ... but the same tag on a model of another type is an ordinary tag
    assert "tag:other:bert" in tokens["gpt2"]
    assert {"file:pytorch_model-#-of-#.bin", "file:adapter_config.json", "file_ext:bin",
            "file_ext:json", "file_kind:weights", "file_kind:adapter"} <= t
    assert {"author:acme", "name:bert", "name:base", "name:finetuned", "name:sst2", "name:sst"} <= t
    assert not any(x.startswith("author:") for x in tokens["gpt2"])  # legacy id: no owner


def test_a_bag_without_its_config_is_what_a_configless_repo_carries(spark, features, tokens):
    from pyspark.sql import functions as F

    bags = features.select("model_id", has_config(F.col("tokens")).alias("has"),
                           without_config(F.col("tokens")).alias("stripped"))
    got = {r.model_id: (r.has, set(r.stripped)) for r in bags.collect()}
    # an architecture names a config.json (gpt2's files are not known); a bare repo has none
    assert got["acme/Bert-Base-Finetuned-SST2"][0] and got["gpt2"][0] and not got["solo/empty"][0]
    before = set(tokens["acme/Bert-Base-Finetuned-SST2"])
    stripped = got["acme/Bert-Base-Finetuned-SST2"][1]
    assert stripped == {t for t in before if not t.startswith(("config", "architecture", "tag:model_type:"))}
    assert {"tag:license:mit", "file:adapter_config.json", "name:bert"} <= stripped
    # the Hub's summary of a repo without config.json still has config keys: not a config
    summary = spark.createDataFrame(
        [(["config_key:tokenizer_config.eos_token", "file:adapter_config.json"],),
         (["file:config.json", "file:model.safetensors"],)], "tokens array<string>")
    rows = summary.select(has_config(F.col("tokens")).alias("has"),
                          without_config(F.col("tokens")).alias("stripped")).collect()
    assert [r.has for r in rows] == [False, True]
    assert rows[1].stripped == ["file:model.safetensors"]


LEAKS = {
    "license": {"tag:license:mit"},
    "pipeline_tag": {"tag:task:text-classification"},
    "library_name": {"tag:library:transformers"},
    "model_type": {"config_key:model_type", "config:model_type=bert", "tag:model_type:bert"},
    "reuse_method": {"tag:base_model_relation:adapter"},
}


@pytest.mark.parametrize("field", FIELDS)
def test_field_tokens_drop_exactly_the_field_leaks(features, tokens, field):
    before = set(tokens["acme/Bert-Base-Finetuned-SST2"])
    assert LEAKS[field] <= before
    after = {r.model_id: set(r.tokens) for r in field_tokens(features, field).collect()}
    kept = after["acme/Bert-Base-Finetuned-SST2"]
    assert kept == before - LEAKS[field]
    assert not any(LEAKAGE_RULES[field].leaks(t) for v in after.values() for t in v)
    # what leaks for one field is a feature for the others
    for other in FIELDS:
        if other != field:
            assert not any(LEAKAGE_RULES[other].leaks(t) for t in LEAKS[field])


def test_bags_kept_by_model_join_labels_without_moving_again(spark, features, tokens):
    """Persisted by_model, the bags join a field's labels by shuffling the labels alone
    (a broadcast would hide the point: it is off here, as for labels too big to send)."""
    labelled = spark.createDataFrame([("gpt2", "mit"), ("solo/empty", "apache-2.0")],
                                     "model_id string, label string")
    # As read from model_tokens: no partitioning known (the fixture's came from a groupBy).
    features = spark.createDataFrame(features.collect(), features.schema)

    def shuffles(df):
        plan = df._jdf.queryExecution().executedPlan().toString()
        return plan.count("ENSURE_REQUIREMENTS")

    previous = spark.conf.get("spark.sql.autoBroadcastJoinThreshold")
    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1")
    kept = by_model(features).persist()
    try:
        plain, keyed = features.join(labelled, "model_id"), kept.join(labelled, "model_id")
        assert (shuffles(plain), shuffles(keyed)) == (2, 1)
        assert sorted(keyed.collect()) == sorted(plain.collect())
        assert {r.model_id: r.tokens for r in keyed.collect()} == {
            m: tokens[m] for m in ("gpt2", "solo/empty")}
    finally:
        kept.unpersist()
        spark.conf.set("spark.sql.autoBroadcastJoinThreshold", previous)


def test_rules_cover_every_field_and_the_readme_table_lists_them():
    assert set(LEAKAGE_RULES) == set(FIELDS)
    table = leakage_table()
    for field, rule in LEAKAGE_RULES.items():
        assert f"| `{field}` |" in table
        for prefix in rule.prefixes:
            assert f"`{prefix}*`" in table
    assert LEAKAGE_RULES["model_type"].leaks("config_key:model_type")
    assert not LEAKAGE_RULES["model_type"].leaks("config_key:model_type_extra")
    with pytest.raises(ValueError, match="unknown field"):
        field_tokens(None, "colour")  # type: ignore[arg-type]
