"""Flatten: config.json to key-path rows against an independent flattening, every malformed
kind with its reason, and the stage end to end (incremental, crash and re-run)."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from pyspark.sql import functions as F

from semfin_spark import schemas
from semfin_spark.delta import DeltaStore
from semfin_spark.flatten import (
    FLATTENED_SCHEMA, OUTPUT_TABLES, TRUNCATION_MARKER, flatten, flatten_config,
    flatten_models,
)
from semfin_spark.features import token_bags
from semfin_spark.ingest import ingest
from semfin_spark.schemas import (
    CONFIG_FEATURES, FLATTEN_REJECTS, FLATTEN_STATE, HUB_MODELS, MODEL_FIELDS, MODEL_FILES,
    MODEL_PARENTS, MODEL_TAGS, MODEL_TOKENS,
)
from semfin_spark.settings import FlattenSettings

LIMITS = FlattenSettings()


def quiet(_line: str) -> None:
    pass


# --------------------------------------------------------------------------- the oracle

def oracle(text: str, max_string_chars: int = LIMITS.max_string_chars) -> list[tuple]:
    """A plain recursive flattening with the json module: the spec, written the simple way."""
    rows: list[tuple] = []

    def scalar(v: Any) -> tuple:
        if isinstance(v, bool):
            return ("true" if v else "false", "bool", float(v), False)
        if v is None:
            return ("null", "null", None, False)
        if isinstance(v, int):
            return (str(v), "int", float(v), False)
        if isinstance(v, float):
            return (repr(v), "float", v, False)
        if len(v) > max_string_chars:
            return (v[:max_string_chars] + f"…[truncated {len(v) - max_string_chars} chars]",
                    "string", None, True)
        return (v, "string", None, False)

    def walk(v: Any, key: str | None, path: str | None, pos: int | None) -> None:
        if isinstance(v, dict):
            if not v and key is not None:
                rows.append((key, path, pos, None, "object", None, False))
            for k, x in v.items():
                walk(x, k if key is None else f"{key}.{k}", k if path is None else f"{path}.{k}", pos)
        elif isinstance(v, list):
            if not v:
                rows.append((key, path, pos, None, "list", None, False))
            for i, x in enumerate(v):
                walk(x, key, f"{path}[{i}]", i)
        else:
            rows.append((key, path, pos, *scalar(v)))

    walk(json.loads(text), None, None, None)
    return rows


def records(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


CLIP_LIKE = {
    "architectures": ["CLIPModel"], "model_type": "clip", "logit_scale_init_value": 2.6592,
    "projection_dim": 512, "initializer_factor": 1.0,
    "text_config": {"hidden_size": 512, "num_attention_heads": 8, "bad_words_ids": None,
                    "layer_norm_eps": 1e-05, "suppress_tokens": [], "task_specific_params": {},
                    "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "tie_word_embeddings": True},
    "vision_config": {"hidden_size": 768, "patch_size": 32, "image_size": 224,
                      "dropout": 0.0, "forced_bos_token_id": None},
}
HAND_WRITTEN = [
    CLIP_LIKE,
    {"id2label": {"0": "NEGATIVE", "1": "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}},
    {"layers": [{"type": "attention", "heads": 8}, {"type": "mlp", "sizes": [1024, 4096]},
                {"type": "moe", "experts": [{"id": 0}, {"id": 1, "w": [0.5, 1.5e-08]}]}]},
    {"grid": [[1, 2], [3, [4, 5]], [], [{}], [[]]], "pinpoints": [[336, 672], [672, 336]]},
    {"empty_obj": {}, "empty_list": [], "nested": {"e": {}, "l": [], "n": None}},
    {"unicode": "日本語 ✓", "quote": "a\"b\\c", "big": 9007199254740993, "neg": -1,
     "tiny": 5e-324, "huge": 1.7976931348623157e308, "exp": 1E-5, "whole": 1.0, "zero": -0.0},
    {"long": "x" * 5000, "list_of_long": ["y" * 2000, "short"]},
    {"": {"": 1}, " spaced key ": True},
]


# --------------------------------------------------------------------------- the pure function

@pytest.mark.parametrize("cfg", HAND_WRITTEN, ids=lambda c: next(iter(c)) or "blank")
def test_hand_written_configs_match_the_oracle(cfg):
    for text in (json.dumps(cfg), json.dumps(cfg, indent=2, ensure_ascii=False)):
        result = flatten_config(text, LIMITS)
        assert result.rows == oracle(text)
        assert result.rejects == []
        assert result == flatten_config(text.encode("utf-8"), LIMITS)


def test_shapes_spelled_out():
    rows = {r["key_path"]: r for r in flatten_config(json.dumps(HAND_WRITTEN[2]), LIMITS).as_dicts()}
    assert rows["layers[1].sizes[1]"] == {
        "key": "layers.sizes", "key_path": "layers[1].sizes[1]", "position": 1, "value": "4096",
        "value_type": "int", "value_num": 4096.0, "truncated": False}
    assert rows["layers[2].experts[1].w[1]"]["value"] == "1.5e-08"
    assert rows["layers[2].experts[0].id"]["position"] == 0  # innermost enclosing list
    assert rows["layers[0].type"]["key"] == "layers.type"
    grid = {r["key_path"]: (r["key"], r["position"], r["value"], r["value_type"])
            for r in flatten_config(json.dumps(HAND_WRITTEN[3]), LIMITS).as_dicts()}
    assert grid["grid[1][1][0]"] == ("grid", 0, "4", "int")
    assert grid["grid[2]"] == ("grid", 2, None, "list")
    assert grid["grid[3][0]"] == ("grid", 0, None, "object")
    assert grid["grid[4][0]"] == ("grid", 0, None, "list")
    empty = {r["key_path"]: (r["value"], r["value_type"], r["position"])
             for r in flatten_config(json.dumps(HAND_WRITTEN[4]), LIMITS).as_dicts()}
    assert empty == {"empty_obj": (None, "object", None), "empty_list": (None, "list", None),
                     "nested.e": (None, "object", None), "nested.l": (None, "list", None),
                     "nested.n": ("null", "null", None)}
    assert flatten_config("{}", LIMITS).rows == []
    scalars = {r[1]: r[3:6] for r in flatten_config(
        '{"t": true, "f": false, "n": null, "e": 1E-5, "i": 7, "s": "7"}', LIMITS).rows}
    assert scalars == {"t": ("true", "bool", 1.0), "f": ("false", "bool", 0.0),
                       "n": ("null", "null", None), "e": ("1e-05", "float", 1e-05),
                       "i": ("7", "int", 7.0), "s": ("7", "string", None)}
    long = flatten_config(json.dumps(HAND_WRITTEN[6]), LIMITS).as_dicts()[0]
    assert long["value"] == "x" * 1024 + TRUNCATION_MARKER.format(5000 - 1024)
    assert long["truncated"] is True


@pytest.mark.parametrize("name", ["config_subsets_2023.jsonl.gz", "hub2022_dev.jsonl.gz",
                                  "hub2025_trees.jsonl.gz"])
def test_real_configs_match_the_oracle_row_for_row(shared_data, name):
    field = "config_subset" if name.startswith("config_subsets") else "config"
    configs = [r[field] for r in records(shared_data / name) if r.get(field) is not None]
    assert len(configs) > 1000
    total = 0
    for cfg in configs:
        text = json.dumps(cfg, ensure_ascii=False)
        result = flatten_config(text, LIMITS)
        assert result.rows == oracle(text), text[:300]
        assert result.rejects == [], text[:300]
        keys = [r[1] for r in result.rows]
        assert len(keys) == len(set(keys))
        total += len(result.rows)
    assert total > 3 * len(configs)


BAD = {  # reason -> (text, limits overrides, expected rows as {key_path: value})
    "invalid_json": ('{"a": 1,', {}, {}),
    "not_an_object": ('[{"a": 1}]', {}, {}),
    "too_large": ('{"a": "' + "é" * 30 + '"}', {"max_config_bytes": 50}, {}),
    "binary": ('{"a": 1}\x00\x00', {}, {}),
    "too_deep": ('{"a": {"b": {"c": {"d": [1]}}}}', {"max_depth": 4}, {}),
    "non_finite_number": ('{"a": NaN, "b": -Infinity, "c": 1e400, "d": 2}', {},
                          {"a": "NaN", "b": "-Infinity", "c": "1e400", "d": "2"}),
    "duplicate_key": ('{"a": 1, "b": {"c": 1, "c": 2}, "a": 3}', {}, {"a": "3", "b.c": "2"}),
    "too_many_keys": ('{"k1": 1, "k2": 2, "k3": 3, "k4": [4, 5], "k5": 6}', {"max_keys": 3},
                      {"k1": "1", "k2": "2", "k3": "3"}),
    "list_too_long": ('{"a": [1, 2, 3, 4, 5], "b": "x"}', {"max_list_items": 3},
                      {"a[0]": "1", "a[1]": "2", "a[2]": "3", "b": "x"}),
    "invalid_utf8": ('{"a": "caf\ufffd", "b": 1}', {}, {"a": "caf\ufffd", "b": "1"}),
    "key_collision": ('{"a.b": 1, "a": {"b": 2, "c": 3}}', {}, {"a.b": "1", "a.c": "3"}),
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_malformed_kind_gives_its_reason_and_keeps_what_it_can(reason):
    text, overrides, expected = BAD[reason]
    limits = FlattenSettings(**overrides)
    result = flatten_config(text, limits)
    assert result.reasons == [reason]
    assert {r[1]: r[3] for r in result.rows} == expected
    assert result.rejects[0].detail


def test_malformed_details_and_edge_cases():
    nan = {r[1]: r[3:6] for r in flatten_config(BAD["non_finite_number"][0], LIMITS).rows}
    assert nan["a"] == ("NaN", "float", None) and nan["d"] == ("2", "int", 2.0)
    dup = flatten_config(BAD["duplicate_key"][0], LIMITS).rejects[0].detail
    assert "'a'" in dup and "'c'" in dup
    # The fast duplicate check: colons inside strings and keys are not duplicates ...
    assert flatten_config('{"u": "http://x:8080", "k:x": {"y": "a:b"}}', LIMITS).rejects == []
    assert flatten_config('{"u": "\\u003a", "a": 1}', LIMITS).rejects == []
    # ... and a duplicate hidden among them, or behind an escaped colon, is still found.
    for text in ('{"u": "http://x", "a": 1, "a": 2}', '{"u": "\\u003a", "a": 1, "a": 2}',
                 '{"l": [{"a": 1, "a": 2}]}', '{"a" : 1 , "a" : 2}'):
        assert flatten_config(text, LIMITS).reasons == ["duplicate_key"], text
    # Depth: exactly max_depth is fine; a nesting deeper than any parser allows is too_deep.
    assert flatten_config('{"a": {"b": {"c": [1]}}}', FlattenSettings(max_depth=4)).rejects == []
    deep = '{"a": ' + "[" * 200_000 + "]" * 200_000 + "}"
    assert flatten_config(deep, LIMITS).reasons == ["too_deep"]
    assert flatten_config(deep, FlattenSettings(max_depth=5000)).reasons == ["too_deep"]
    # Sizes are UTF-8 bytes, not characters.
    assert flatten_config('{"a": "' + "é" * 20 + '"}', FlattenSettings(max_config_bytes=50)).rejects == []
    # Bytes: not UTF-8 is flattened with replacement; binary garbage is refused.
    latin1 = flatten_config(b'{"a": "caf\xe9"}', LIMITS)
    assert latin1.reasons == ["invalid_utf8"] and latin1.rows[0][3] == "caf\ufffd"
    assert flatten_config(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", LIMITS).reasons == ["binary"]
    garbage = bytes(range(128, 256)) * 8
    assert flatten_config(garbage, LIMITS).reasons == ["binary"]
    assert flatten_config(garbage.decode("utf-8", "replace"), LIMITS).reasons == ["binary"]
    # An integer no double holds keeps its digits, without value_num.
    huge = flatten_config('{"n": 1' + "0" * 400 + ', "m": 18446744073709551615}', LIMITS)
    assert huge.reasons == ["non_finite_number"]
    assert huge.rows[0][3:6] == ("1" + "0" * 400, "int", None)
    assert huge.rows[1][3:6] == ("18446744073709551615", "int", 18446744073709551615.0)
    # Lone surrogates cannot be written: replaced, recorded.
    lone = flatten_config('{"a": "\\ud800x", "b": 1}', LIMITS)
    assert lone.reasons == ["invalid_utf8"] and lone.rows[0][3] == "?x"
    # Several reasons at once, one reject per reason.
    many = flatten_config('{"a": NaN, "a": 1, "l": [1, 2, 3]}', FlattenSettings(max_list_items=2))
    assert sorted(many.reasons) == ["duplicate_key", "list_too_long", "non_finite_number"]
    for text in ("", "   ", "null", '"text"', "3", "{", "{'a': 1}"):
        assert flatten_config(text, LIMITS).reasons in (["invalid_json"], ["not_an_object"]), text


def test_reasons_are_those_the_rejects_table_documents():
    doc = next(f for f in FLATTEN_REJECTS.schema.fields if f.name == "reason").metadata["comment"]
    for reason in BAD:
        assert f"`{reason}`" in doc


# --------------------------------------------------------------------------- the stage

@pytest.fixture
def store(spark, settings):
    return DeltaStore.from_settings(spark, settings)


def write_snapshot(path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return f"snapshot:{path}"


GOOD_JSON = json.dumps({"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 768,
                        "id2label": {"0": "NEG", "1": "POS"}})
MIXED = [  # (id, config_json, summary config, expected reasons)
    ("good/full", GOOD_JSON, {"model_type": "bert"}, []),
    ("good/summary", None, {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, []),
    ("good/none", None, None, []),
    ("bad/invalid", '{"a": 1,', {"model_type": "x"}, ["invalid_json"]),
    ("bad/list", "[1, 2]", None, ["not_an_object"]),
    ("bad/nan", '{"a": NaN, "b": 1}', None, ["non_finite_number"]),
    ("bad/dup", '{"a": 1, "a": 2}', None, ["duplicate_key"]),
    ("bad/deep", "{" + '"x": {' * 40 + "}" * 40 + "}", None, ["too_deep"]),
    ("bad/binary", '{"a": "\u0000"}', None, ["binary"]),
    ("bad/fffd", '{"a": "\ufffd"}', None, ["invalid_utf8"]),
    ("bad/longlist", json.dumps({"l": list(range(5000))}), None, ["list_too_long"]),
]


def mixed_rows(sha_suffix: str = "") -> list[dict]:
    return [{"id": mid, "sha": f"sha-{mid}{sha_suffix}", "tags": ["pytorch", "license:mit"],
             "siblings": [{"rfilename": "config.json"}, {"rfilename": "model.safetensors"}],
             "library_name": "transformers", "cardData": {"license": "mit", "base_model": "org/base"},
             "config": summary, "config_json": full}
            for mid, full, summary, _ in MIXED]


def table_rows(store, table) -> list[tuple]:
    drop = {"rejected_at", "flattened_at"}
    cols = [c for c in table.columns if c not in drop]
    return sorted(tuple(r) for r in store.read(table).select(*cols).collect())


def test_stage_keeps_good_configs_around_bad_ones(spark, store, settings, tmp_path):
    ingest(spark, store, write_snapshot(tmp_path / "mixed.jsonl", mixed_rows()), settings,
           progress=quiet)
    lines: list[str] = []
    summary = flatten(spark, store, settings, progress=lines.append)
    assert summary.models == summary.reprocessed == len(MIXED)
    assert any(line.startswith("flatten: config_features:") for line in lines)
    rejects = {(r["model_id"], r["source"], r["reason"]): r
               for r in store.read(FLATTEN_REJECTS).collect()}
    assert set(rejects) == {(mid, "config_json", reason) for mid, _, _, reasons in MIXED
                            for reason in reasons}
    assert rejects[("bad/invalid", "config_json", "invalid_json")]["raw"] == '{"a": 1,'
    assert all(r["rejected_at"] is not None and r["sha"] == f"sha-{r['model_id']}"
               for r in rejects.values())
    features = store.read(CONFIG_FEATURES)
    by_model = {r["model_id"]: r["count"] for r in features.groupBy("model_id").count().collect()}
    assert by_model == {"good/full": 5, "good/summary": 2, "bad/nan": 2, "bad/dup": 1,
                        "bad/fffd": 1, "bad/longlist": 4096}
    full = {r["key_path"]: r for r in features.where("model_id = 'good/full'").collect()}
    assert full["id2label.1"]["value"] == "POS" and full["id2label.1"]["source"] == "config_json"
    assert full["hidden_size"]["value_num"] == 768.0 and full["hidden_size"]["sha"] == "sha-good/full"
    summary_rows = features.where("model_id = 'good/summary'").collect()
    assert {(r["key_path"], r["value"], r["source"]) for r in summary_rows} == {
        ("architectures[0]", "GPT2LMHeadModel", "config_summary"), ("model_type", "gpt2", "config_summary")}
    assert features.groupBy("model_id", "key_path").count().where("count > 1").count() == 0
    assert summary.feature_rows == features.count()
    assert summary.rejects == len(rejects)
    assert summary.rejects_by_reason["invalid_json"] == 1
    # Every model, flattened or not, has its declared rows and its state.
    assert store.read(MODEL_FIELDS).select("model_id").distinct().count() == len(MIXED)
    assert store.read(MODEL_FILES).count() == 2 * len(MIXED) == summary.files
    state = {r["model_id"]: r["change_key"].split(":")[0] for r in store.read(FLATTEN_STATE).collect()}
    assert state == {mid: f"sha-{mid}" for mid, *_ in MIXED}

    # full=True reprocesses every model and writes the same rows.
    before = {t.name: table_rows(store, t) for t in OUTPUT_TABLES}
    again = flatten(spark, store, settings, progress=quiet, full=True)
    assert again.reprocessed == len(MIXED)
    assert {t.name: table_rows(store, t) for t in OUTPUT_TABLES} == before
    # A model that left hub_models loses its rows everywhere; the others keep theirs.
    store.overwrite(HUB_MODELS, store.read(HUB_MODELS).where("id != 'good/full'").localCheckpoint())
    gone = flatten(spark, store, settings, progress=quiet)
    assert (gone.reprocessed, gone.removed) == (0, 1)
    for table in OUTPUT_TABLES:
        assert table_rows(store, table) == [r for r in before[table.name] if r[0] != "good/full"], \
            table.name


def test_flatten_models_emits_one_schema_with_a_discriminator(spark):
    rows = [("a/1", "s1", '{"x": [1, 2]}', None), ("a/2", None, None, '{"model_type": "t"}'),
            ("a/3", "s3", "[]", None), ("a/4", "s4", None, None)]
    models = spark.createDataFrame(rows, "id string, sha string, config_json string, config string")
    flat = flatten_models(models, LIMITS)
    assert flat.schema == FLATTENED_SCHEMA
    got = sorted((r["kind"], r["model_id"], r["key_path"] or r["reason"], r["source"])
                 for r in flat.collect())
    assert got == [("feature", "a/1", "x[0]", "config_json"), ("feature", "a/1", "x[1]", "config_json"),
                   ("feature", "a/2", "model_type", "config_summary"),
                   ("reject", "a/3", "not_an_object", "config_json")]


def test_stage_end_to_end_on_a_real_snapshot_and_incremental_runs(spark, store, settings,
                                                                  shared_data):
    path = shared_data / "hub2025_trees.jsonl.gz"
    ingest(spark, store, f"snapshot:{path}", settings, progress=quiet)
    recs = records(path)
    expected = {(r["id"], row[1], row[3], row[4])
                for r in recs if r.get("config") is not None
                for row in oracle(json.dumps(r["config"]))}

    first = flatten(spark, store, settings, progress=quiet)
    features = store.read(CONFIG_FEATURES)
    got = {(r["model_id"], r["key_path"], r["value"], r["value_type"])
           for r in features.select("model_id", "key_path", "value", "value_type").collect()}
    assert got == expected
    assert first.feature_rows == len(expected) == features.count()
    assert first.models == first.reprocessed == len(recs) and first.rejects == 0
    assert features.where("source != 'config_summary'").count() == 0
    for table, attr in ((MODEL_TAGS, "tags"), (MODEL_FILES, "files"), (MODEL_FIELDS, "fields"),
                        (MODEL_PARENTS, "parents")):
        df = store.read(table)
        n = df.count()
        assert n > 0 and n == getattr(first, attr), table.name
        assert df.select(*table.key).distinct().count() == n, table.name
    assert store.read(MODEL_FIELDS).count() == 5 * len(recs)

    # Nothing changed: nothing reprocessed, no new version anywhere.
    versions = {t.name: store.version(t) for t in OUTPUT_TABLES}
    again = flatten(spark, store, settings, progress=quiet)
    assert (again.reprocessed, again.unchanged) == (0, len(recs))
    assert {t.name: store.version(t) for t in OUTPUT_TABLES} == versions == again.versions

    # Three models change (new sha, new config): exactly those are reprocessed and replaced.
    before = {t.name: table_rows(store, t) for t in OUTPUT_TABLES}
    changed = sorted(r["id"] for r in recs if r.get("config"))[:3]
    hub = store.read(HUB_MODELS)
    is_changed = F.col("id").isin(*changed)
    store.overwrite(HUB_MODELS, hub
                    .withColumn("sha", F.when(is_changed, F.lit("new-sha")).otherwise(F.col("sha")))
                    .withColumn("config", F.when(is_changed, F.lit('{"model_type": "changed"}'))
                                .otherwise(F.col("config")))
                    .localCheckpoint())
    third = flatten(spark, store, settings, progress=quiet)
    assert third.reprocessed == 3 and third.feature_rows == 3
    rows = features_of(store, changed)
    assert rows == {(m, "model_type", "changed", "new-sha") for m in changed}
    state = store.read(FLATTEN_STATE).where(F.col("model_id").isin(*changed)).collect()
    assert {r["change_key"].split(":")[0] for r in state} == {"new-sha"}
    after = {t.name: table_rows(store, t) for t in OUTPUT_TABLES}
    for name in after:  # one commit where the changed models' rows changed, else none
        touched = [r for r in before[name] if r[0] in changed] != [r for r in after[name] if r[0] in changed]
        assert third.versions[name] == versions[name] + touched, name
    # A new config touches the features, the declared model_type, the token bags and the
    # state, not the tags, files or parents.
    assert third.versions["model_tags"] == versions["model_tags"]
    assert third.versions["config_features"] == versions["config_features"] + 1
    for name in after:  # every other model's rows are untouched
        assert [r for r in after[name] if r[0] not in changed] == \
            [r for r in before[name] if r[0] not in changed], name
    # The kept token bags, written model by model, are those of the whole tables.
    whole = token_bags(store.read(HUB_MODELS).select("id"), store.read(CONFIG_FEATURES),
                       store.read(MODEL_TAGS), store.read(MODEL_FILES), store.read(MODEL_FIELDS))
    assert table_rows(store, MODEL_TOKENS) == sorted(tuple(r) for r in whole.collect())
    assert len(after["model_tokens"]) == len(recs)
    assert all("config:model_type=changed" in tokens for m, tokens in after["model_tokens"] if m in changed)


def features_of(store, model_ids) -> set[tuple]:
    return {(r["model_id"], r["key_path"], r["value"], r["sha"])
            for r in store.read(CONFIG_FEATURES).where(F.col("model_id").isin(*model_ids)).collect()}


def test_a_run_killed_after_its_first_write_converges_on_rerun(spark, settings, tmp_path,
                                                             monkeypatch):
    crashed = DeltaStore(spark, str(tmp_path / "crashed"))
    clean = DeltaStore(spark, str(tmp_path / "clean"))
    v2 = write_snapshot(tmp_path / "v2.jsonl", mixed_rows("-v2"))
    ingest(spark, crashed, write_snapshot(tmp_path / "v1.jsonl", mixed_rows()), settings,
           progress=quiet)
    flatten(spark, crashed, settings, progress=quiet)
    ingest(spark, crashed, v2, settings, progress=quiet)
    ingest(spark, clean, v2, settings, progress=quiet)

    calls: list[str] = []

    def dies_after_first_write(real):
        def write(self, table, *args, **kwargs):
            if calls:
                raise KeyboardInterrupt("killed half-way")
            calls.append(table.name)
            return real(self, table, *args, **kwargs)
        return write

    # A run that reprocesses every model rewrites tables whole; one that does not merges.
    for method in ("replace_keys", "overwrite"):
        monkeypatch.setattr(DeltaStore, method, dies_after_first_write(getattr(DeltaStore, method)))
    with pytest.raises(KeyboardInterrupt):
        flatten(spark, crashed, settings, progress=quiet)
    monkeypatch.undo()
    assert calls == ["config_features"]
    # Killed half-way: config_features holds v2, the other tables still v1, each whole.
    assert {r[1] for r in table_rows(crashed, CONFIG_FEATURES)} == \
        {f"sha-{mid}-v2" for mid in ("good/full", "good/summary", "bad/nan", "bad/dup", "bad/fffd",
                                    "bad/longlist")}
    assert {r[-1] for r in table_rows(crashed, MODEL_FIELDS)} == {f"sha-{mid}" for mid, *_ in MIXED}
    # The state was not written: the re-run reprocesses every changed model again.
    assert {r["change_key"].split(":")[0] for r in crashed.read(FLATTEN_STATE).collect()} == \
        {f"sha-{mid}" for mid, *_ in MIXED}
    rerun = flatten(spark, crashed, settings, progress=quiet)
    reference = flatten(spark, clean, settings, progress=quiet)
    assert rerun.reprocessed == reference.reprocessed == len(MIXED)
    for table in OUTPUT_TABLES:
        assert table_rows(crashed, table) == table_rows(clean, table), table.name
    with_features = {"good/full", "good/summary", "bad/nan", "bad/dup", "bad/fffd", "bad/longlist"}
    assert {(r[0], r[1]) for r in table_rows(crashed, CONFIG_FEATURES)} == \
        {(mid, f"sha-{mid}-v2") for mid in with_features}


def test_changes_without_a_new_sha_reach_the_tables(spark, store, settings, tmp_path,
                                                    monkeypatch):
    """A config fetched on a later crawl for the same sha, or a Hub-side pipeline_tag
    change without a commit, is flattened; a new download count reprocesses nothing; a
    release that flattens differently (a new FLATTEN_FORMAT) reprocesses every model once."""
    base = {"id": "o/m", "sha": "s" * 40, "lastModified": "2024-01-01T00:00:00Z",
            "tags": ["pytorch"], "downloads": 1}
    ingest(spark, store, write_snapshot(tmp_path / "a.jsonl", [base]), settings, progress=quiet)
    flatten(spark, store, settings, progress=quiet)
    assert store.read(CONFIG_FEATURES).count() == 0

    later = {**base, "config_json": json.dumps({"model_type": "bert"}), "pipeline_tag": "fill-mask"}
    ingest(spark, store, write_snapshot(tmp_path / "b.jsonl", [later]), settings, progress=quiet)
    assert flatten(spark, store, settings, progress=quiet).reprocessed == 1
    assert features_of(store, ["o/m"]) == {("o/m", "model_type", "bert", "s" * 40)}
    fields = {r["field"]: r["declared_value"] for r in store.read(MODEL_FIELDS).collect()}
    assert fields["pipeline_tag"] == "fill-mask"

    busier = {**later, "downloads": 500, "likes": 9}
    ingest(spark, store, write_snapshot(tmp_path / "c.jsonl", [busier]), settings, progress=quiet)
    assert flatten(spark, store, settings, progress=quiet).reprocessed == 0

    monkeypatch.setattr(schemas, "FLATTEN_FORMAT", schemas.FLATTEN_FORMAT + 1)
    assert flatten(spark, store, settings, progress=quiet).reprocessed == 1
    key = store.read(FLATTEN_STATE).first()["change_key"]
    assert key.startswith("s" * 40 + ":") and key.endswith(f":f{schemas.FLATTEN_FORMAT}")
    assert flatten(spark, store, settings, progress=quiet).reprocessed == 0


def test_two_flattens_at_once_never_duplicate_a_key(spark, settings, tmp_path):
    """Issue 16 §1: concurrent flattens once doubled every table, flatten_state included.
    Each run now lands or fails with ConcurrentWriteError; keys hold, and a later run
    converges to what a single run writes."""
    import threading

    from semfin_spark.delta import ConcurrentWriteError

    store = DeltaStore(spark, str(tmp_path / "shared"))
    clean = DeltaStore(spark, str(tmp_path / "clean"))
    v1 = write_snapshot(tmp_path / "v1.jsonl", mixed_rows())
    v2 = write_snapshot(tmp_path / "v2.jsonl", mixed_rows("-v2")[:5] + mixed_rows()[5:])
    for source in (v1, v2):
        ingest(spark, store, source, settings, progress=quiet)
        errors: list[Exception] = []

        def run() -> None:
            try:
                flatten(spark, store, settings, progress=quiet)
            except ConcurrentWriteError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for table in OUTPUT_TABLES:
            rows = store.read(table)
            assert rows.count() == rows.select(*table.key).distinct().count(), table.name
    flatten(spark, store, settings, progress=quiet)
    ingest(spark, clean, v2, settings, progress=quiet)
    flatten(spark, clean, settings, progress=quiet)
    for table in OUTPUT_TABLES:
        assert table_rows(store, table) == table_rows(clean, table), table.name


def test_a_lost_output_table_is_rebuilt(spark, store, settings, tmp_path):
    """Issue 16 §7: a table deleted behind flatten's back was never written again."""
    import shutil

    ingest(spark, store, write_snapshot(tmp_path / "a.jsonl", mixed_rows()), settings, progress=quiet)
    flatten(spark, store, settings, progress=quiet)
    before = table_rows(store, MODEL_TAGS)
    shutil.rmtree(store.path(MODEL_TAGS))
    lines: list[str] = []
    assert flatten(spark, store, settings, progress=lines.append).reprocessed == len(MIXED)
    assert any("model_tags missing" in line for line in lines)
    assert table_rows(store, MODEL_TAGS) == before


def test_flatten_keeps_what_impute_wrote_unless_a_value_is_now_declared(spark, store):
    """model_fields has one writer per column group: flatten's rows carry the stored
    imputed columns where nothing is declared, and clear them where a value now is."""
    from semfin_spark.flatten import _keeping_imputed

    def fields(rows):
        return spark.createDataFrame([tuple(r.get(c) for c in MODEL_FIELDS.columns) for r in rows],
                                     MODEL_FIELDS.schema)

    imputed = {"imputed_value": "mit", "imputed_confidence": 0.97, "imputed_model": "semfin-license",
               "imputed_model_version": "1", "features_hash": "h", "value": "mit",
               "value_source": "imputed"}
    store.overwrite(MODEL_FIELDS, fields([
        {"model_id": "a/still-missing", "field": "license", "sha": "old", **imputed},
        {"model_id": "a/now-declared", "field": "license", "sha": "old", **imputed}]))
    flattened = fields([
        {"model_id": "a/still-missing", "field": "license", "sha": "new"},
        {"model_id": "a/now-declared", "field": "license", "sha": "new", "declared_value": "apache-2.0",
         "declared_source": "card_data", "value": "apache-2.0", "value_source": "declared"},
        {"model_id": "a/new", "field": "license", "sha": "new"}])
    got = {r["model_id"]: r.asDict() for r in _keeping_imputed(store, flattened).collect()}
    assert {k: got["a/still-missing"][k] for k in imputed} == imputed
    assert got["a/still-missing"]["sha"] == "new"
    declared = got["a/now-declared"]
    assert (declared["value"], declared["value_source"]) == ("apache-2.0", "declared")
    assert all(declared[k] is None for k in imputed if k not in ("value", "value_source"))
    assert all(got["a/new"][k] is None for k in imputed)
