"""The generated Hub: determinism, ids, lineage shape, configs, licences, missingness, Spark."""

from __future__ import annotations

import collections
import json
import re

import orjson
import pytest

from semfin_spark import synthetic
from semfin_spark.repo_ids import is_valid_repo_id
from semfin_spark.synthetic import (generate_block, generate_block_lines, parse_spec,
                                    synthetic_records)

N = 3000
BLOCK = 64
HUB_KEYS = {"id", "author", "sha", "lastModified", "createdAt", "private", "gated", "disabled",
            "downloads", "likes", "library_name", "pipeline_tag", "tags", "cardData", "config",
            "siblings", "safetensors", "gguf", "transformersInfo", "config_json"}
RELATIONS = ("finetune", "adapter", "quantized", "merge")
# Licences that bind derivatives: a child of one of these under mit/apache-2.0 is a conflict.
RESTRICTIVE = {"cc-by-nc-4.0", "cc-by-nc-sa-4.0", "llama2", "llama3", "llama3.1", "llama3.2",
               "gemma", "other", "openrail", "openrail++", "creativeml-openrail-m",
               "bigscience-bloom-rail-1.0", "bigcode-openrail-m"}
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.000Z$")


def hub_records(n: int, seed: int, block_size: int = BLOCK) -> list[dict]:
    return [r for b in range(-(-n // block_size)) for r in generate_block(seed, b, block_size, n)]


@pytest.fixture(scope="module")
def hub() -> list[dict]:
    return hub_records(N, seed=0)


@pytest.fixture(scope="module")
def declared(hub) -> dict[str, dict[str, set[str | None]]]:
    """child -> parent -> the relations its tags and card declare (None: no relation)."""
    parents: dict[str, dict[str, set]] = collections.defaultdict(lambda: collections.defaultdict(set))
    for r in hub:
        card = r["cardData"] or {}
        for tag in r["tags"]:
            if tag.startswith("base_model:"):
                parts = tag.split(":")
                if len(parts) == 3:
                    parents[r["id"]][parts[2]].add(parts[1])
                else:
                    parents[r["id"]][parts[1]].add(card.get("base_model_relation"))
        base = card.get("base_model")
        for p in [base] if isinstance(base, str) else base or []:
            parents[r["id"]][p].add(card.get("base_model_relation"))
    return parents


def licence(record: dict) -> str | None:
    """The declared licence as a lower-case id (card first, as the Hub derives tags from it)."""
    card = (record["cardData"] or {}).get("license")
    if isinstance(card, list):
        card = card[0]
    if card:
        return card.lower()
    return next((t[len("license:"):] for t in record["tags"] if t.startswith("license:")), None)


# --------------------------------------------------------------------------- determinism


def test_generate_block_is_deterministic_per_seed():
    first = generate_block(7, 3, BLOCK, 1000)
    assert first == generate_block(7, 3, BLOCK, 1000)
    assert [r["id"] for r in first] != [r["id"] for r in generate_block(8, 3, BLOCK, 1000)]
    assert [json.loads(line) for line in generate_block_lines(7, 3, BLOCK, 1000)] == first


def test_blocks_cover_exactly_n_and_do_not_depend_on_n():
    assert [len(generate_block(0, b, BLOCK, 150)) for b in range(4)] == [64, 64, 22, 0]
    # A whole block is the same whatever the size of the Hub around it.
    assert generate_block(0, 1, BLOCK, 150) == generate_block(0, 1, BLOCK, 10_000)
    with pytest.raises(ValueError, match="block_size"):
        generate_block(0, 0, 0, 10)


def test_count_ids_unique_and_valid(hub):
    assert len(hub) == N
    ids = [r["id"] for r in hub]
    assert len(set(ids)) == N
    for model_id in ids:
        owner, name = model_id.split("/")
        assert NAME.match(owner) and NAME.match(name), model_id
        assert len(name) <= 96 and "--" not in model_id and ".." not in model_id, model_id
        assert not name.startswith(("-", ".")) and not name.endswith(("-", ".")), model_id
        assert is_valid_repo_id(model_id)
    # Ids carry the global index, so every index 0..N-1 appears once.
    index = re.compile(r"-(\d+)(?:-GGUF|-GPTQ|-AWQ|-bnb-4bit|-4bit|-onnx)?$")
    indices = sorted(int(index.search(i).group(1)) for i in ids)
    assert indices == list(range(N))


def test_records_have_the_hub_shape(hub):
    for r in hub:
        assert set(r) == HUB_KEYS
        assert re.fullmatch(r"[0-9a-f]{40}", r["sha"])
        assert ISO.match(r["lastModified"]) and (r["createdAt"] is None or ISO.match(r["createdAt"]))
        assert r["createdAt"] is None or r["createdAt"] <= r["lastModified"]
        assert r["author"] == r["id"].split("/")[0]
        assert all(isinstance(t, str) and t for t in r["tags"]) and "region:us" in r["tags"]
        assert len(set(r["tags"])) == len(r["tags"])
        files = [s["rfilename"] for s in r["siblings"]]
        assert ".gitattributes" in files and len(set(files)) == len(files)
        assert ("config.json" in files) >= (r["config_json"] is not None)
        assert isinstance(r["downloads"], int) and r["downloads"] >= 0


# --------------------------------------------------------------------------- lineage


def test_each_relation_has_a_reasonable_share(declared):
    counts = collections.Counter(rel for ps in declared.values() for rels in ps.values()
                                 for rel in rels if rel is not None)
    total = sum(counts.values())
    shares = {rel: counts[rel] / total for rel in RELATIONS}
    assert set(counts) == set(RELATIONS)
    assert 0.40 <= shares["finetune"] <= 0.75, shares
    assert 0.08 <= shares["quantized"] <= 0.35, shares
    assert 0.04 <= shares["adapter"] <= 0.25, shares
    assert 0.05 <= shares["merge"] <= 0.25, shares
    # Some parents are declared without any relation (plain tag, card without relation).
    assert sum(None in rels for ps in declared.values() for rels in ps.values()) > 50


def test_chains_are_deep_but_bounded(hub, declared):
    ids = {r["id"] for r in hub}
    memo: dict[str, int] = {}

    def depth(model: str) -> int:
        if model not in memo:
            ps = [p for p in declared.get(model, {}) if p != model]
            memo[model] = 1 + max(map(depth, ps)) if ps else 0
        return memo[model]

    depths = collections.Counter(depth(m) for m in ids)
    assert max(depths) <= synthetic.MAX_DEPTH
    assert sum(c for d, c in depths.items() if d >= 3) > 0.04 * N, depths
    assert depths[1] > depths[2] > depths[3] > depths[4] > 0, depths


def test_merges_have_several_parents_and_mergekit_evidence(hub, declared):
    by_id = {r["id"]: r for r in hub}
    merges = [c for c, ps in declared.items() if any("merge" in rels for rels in ps.values())]
    assert len(merges) > 30
    for child in merges:
        assert len([p for p in declared[child] if p != child]) >= 2, child
    with_evidence = sum("mergekit_config.yml" in {s["rfilename"] for s in by_id[c]["siblings"]}
                        for c in merges)
    assert with_evidence > 0.7 * len(merges)


def test_isolated_models_external_parents_and_self_loops(hub, declared):
    ids = {r["id"] for r in hub}
    has_child = {p for ps in declared.values() for p in ps}
    isolated = [i for i in ids if i not in declared and i not in has_child]
    assert 0.25 <= len(isolated) / N <= 0.50
    external = has_child - ids  # parents outside the generated Hub: real base models
    assert len(external) >= 5 and all(is_valid_repo_id(e) for e in external)
    assert any(e.startswith(("meta-llama/", "google", "openai/", "mistralai/", "Qwen/", "FacebookAI/",
                             "EleutherAI/", "microsoft/", "facebook/", "distilbert/"))
               for e in external)
    self_loops = sum(c in ps for c, ps in declared.items())
    assert 1 <= self_loops < 0.01 * N


def test_adapters_and_quantisations_look_like_the_hub(hub, declared):
    peft = [r for r in hub if "adapter_config.json" in {s["rfilename"] for s in r["siblings"]}]
    assert len(peft) > 20
    for r in peft:
        assert r["config_json"] is None and r["config"] is None
        assert r["library_name"] in ("peft", None)
        assert any(s["rfilename"].startswith("adapter_model.") for s in r["siblings"])
        relations = {rel for rels in declared.get(r["id"], {}).values() for rel in rels} - {None}
        assert relations <= {"adapter"}, (r["id"], relations)
    gguf = [r for r in hub if any(s["rfilename"].endswith(".gguf") for s in r["siblings"])]
    assert len(gguf) > 20
    assert all("gguf" in r["tags"] and r["gguf"]["total"] > 0 for r in gguf)
    assert any(re.search(r"\.Q4_K_M\.gguf$|-q4_k_m\.gguf$", s["rfilename"]) for r in gguf for s in r["siblings"])
    quantized_configs = [json.loads(r["config_json"]) for r in hub
                         if r["config"] and "quantization_config" in r["config"]]
    methods = {c["quantization_config"].get("quant_method") for c in quantized_configs}
    assert {"gptq", "awq", "bitsandbytes"} <= methods


def test_children_keep_their_parents_model_type(hub, declared):
    by_id = {r["id"]: r for r in hub}
    pairs = [(by_id[c]["config"]["model_type"], by_id[p]["config"]["model_type"])
             for c, ps in declared.items() for p in ps
             if p != c and p in by_id and by_id[c]["config"] and by_id[p]["config"]]
    assert len(pairs) > 200
    assert all(child == parent for child, parent in pairs)


# --------------------------------------------------------------------------- configs


def test_config_json_is_valid_and_matches_the_summary(hub):
    model_types = collections.Counter()
    for r in hub:
        if r["config_json"] is None:
            assert r["config"] is None
            continue
        config = json.loads(r["config_json"])
        # Compact, keys sorted: as a crawler stores the text transformers wrote.
        assert orjson.dumps(config, option=orjson.OPT_SORT_KEYS).decode() == r["config_json"]
        if "model_type" not in config:  # timm writes no model_type: no Hub summary either
            assert r["config"] is None and "architecture" in config
            continue
        assert r["config"]["model_type"] == config["model_type"]
        assert r["config"].get("architectures") == config.get("architectures")
        model_types[config["model_type"]] += 1
    assert len(model_types) >= 20, model_types
    assert {"llama", "mistral", "qwen2", "gemma2", "phi3", "gpt2", "t5", "bart", "marian", "bert",
            "roberta", "xlm-roberta", "distilbert", "vit", "clip", "whisper", "wav2vec2"} <= set(model_types)


def test_configs_have_real_nested_structure_and_value_ranges(hub):
    configs = [json.loads(r["config_json"]) for r in hub if r["config_json"]]
    by_type = collections.defaultdict(list)
    for c in configs:
        by_type[c.get("model_type")].append(c)
    assert all("text_config" in c and "vision_config" in c for c in by_type["clip"])
    assert any(isinstance(c.get("rope_scaling"), dict) for c in by_type["llama"])
    assert all(c["hidden_size"] % c["num_attention_heads"] == 0 for c in by_type["llama"] + by_type["bert"])
    assert all(c["vocab_size"] >= 32000 for c in by_type["llama"])
    assert any(c.get("task_specific_params") for c in by_type["t5"] + by_type["gpt2"] + by_type["bart"])
    classifiers = [c for cs in by_type.values() for c in cs
                   if any(a.endswith("ForSequenceClassification") for a in c.get("architectures") or [])]
    assert classifiers and all(len(c["id2label"]) == len(c["label2id"]) >= 2 for c in classifiers)
    # Real deberta-v3 bases carry neither; their fine-tunes do.
    typed = [c for c in configs if "model_type" in c]
    assert sum({"torch_dtype", "transformers_version"} <= set(c) for c in typed) > 0.95 * len(typed)


def test_pipeline_and_library_follow_the_architecture(hub):
    pipelines = collections.defaultdict(collections.Counter)
    for r in hub:
        if r["config"] and r["pipeline_tag"] and r["config"].get("architectures"):
            pipelines[r["config"]["architectures"][0]][r["pipeline_tag"]] += 1
    assert set(pipelines["LlamaForCausalLM"]) == {"text-generation"}
    assert set(pipelines["BertForTokenClassification"]) <= {"token-classification"}
    assert set(pipelines["WhisperForConditionalGeneration"]) == {"automatic-speech-recognition"}
    libraries = collections.Counter(r["library_name"] for r in hub)
    assert {"transformers", "peft", "sentence-transformers", "diffusers", "timm", "gguf"} <= set(libraries)


# --------------------------------------------------------------------------- licences


def test_licences_mostly_follow_the_parent_with_conflicts(hub, declared):
    by_id = {r["id"]: r for r in hub}
    pairs = [(licence(by_id[c]), licence(by_id[p])) for c, ps in declared.items() for p in ps
             if p != c and p in by_id and licence(by_id[c]) and licence(by_id[p])]
    assert len(pairs) > 200
    same = sum(child == parent for child, parent in pairs) / len(pairs)
    assert 0.70 <= same <= 0.95, same
    conflicts = [(c, p) for c, p in pairs if p in RESTRICTIVE and c in ("mit", "apache-2.0")]
    assert len(conflicts) >= 5


def test_licences_are_hub_ids_with_some_author_spellings(hub):
    tags = [t for r in hub for t in r["tags"] if t.startswith("license:")]
    assert tags and all(t == t.lower() for t in tags)
    cards = [(r["cardData"] or {}).get("license") for r in hub]
    spelled = [c for c in cards if isinstance(c, str) and (c != c.lower() or " " in c or c == "apache2")]
    assert 5 <= len(spelled) <= 0.05 * N
    assert {"apache-2.0", "mit", "llama3.1", "gemma", "cc-by-nc-4.0", "other"} <= {licence(r) for r in hub}


# --------------------------------------------------------------------------- missingness


@pytest.mark.parametrize("what, rate, missing", [
    ("cardData", synthetic.CARD_DATA_MISSING_RATE, lambda r: r["cardData"] is None),
    ("licence", synthetic.LICENSE_MISSING_RATE, lambda r: licence(r) is None),
    ("pipeline_tag", synthetic.PIPELINE_TAG_MISSING_RATE, lambda r: r["pipeline_tag"] is None),
    ("library_name", synthetic.LIBRARY_NAME_MISSING_RATE, lambda r: r["library_name"] is None),
    ("config_json", synthetic.EXPECTED_CONFIG_MISSING, lambda r: r["config_json"] is None),
])
def test_missing_rates_are_as_documented(hub, what, rate, missing):
    share = sum(map(missing, hub)) / N
    assert abs(share - rate) < 0.04, f"{what}: {share:.3f} missing, documented {rate}"


def test_missing_fields_do_not_leak_into_tags(hub):
    for r in hub:
        if r["pipeline_tag"] is None:
            assert "text-generation" not in r["tags"] and "text-classification" not in r["tags"]
        if r["library_name"] is not None:
            assert r["library_name"] in r["tags"]


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize("spec, expected", [
    ("300000", (300000, 0)), ("300000,seed=7", (300000, 7)), (" 20 , seed = 3 ", (20, 3)),
    ("1_000", (1000, 0)),
])
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", "abc", "0", "-5", "10,seed", "10,seed=x", "10,size=3", "10;seed=1",
                                  "1__0", "10_"])
def test_parse_spec_rejects_bad_specs(spec):
    with pytest.raises(ValueError, match="synthetic"):
        parse_spec(spec)


# --------------------------------------------------------------------------- Spark


def test_synthetic_records_on_spark_is_the_pure_python_hub(spark):
    n, seed = 700, 3
    df = synthetic_records(spark, n, seed)
    assert df.columns == ["value"] and df.schema["value"].dataType.typeName() == "string"
    assert df.rdd.getNumPartitions() >= spark.sparkContext.defaultParallelism
    values = sorted(row.value for row in df.collect())
    expected = sorted(line for b in range(-(-n // BLOCK)) for line in generate_block_lines(seed, b, BLOCK, n))
    assert values == expected
    assert len(values) == n and len({json.loads(v)["id"] for v in values}) == n
    assert sorted(row.value for row in synthetic_records(spark, n, seed).collect()) == values
    other = {row.value for row in synthetic_records(spark, n, seed + 1).collect()}
    assert not other & set(values)


def test_synthetic_records_block_size_and_empty_hub(spark):
    df = synthetic_records(spark, 130, 0, block_size=16)
    assert df.count() == 130
    assert sorted(r.value for r in df.collect()) == sorted(
        line for b in range(9) for line in generate_block_lines(0, b, 16, 130))
    empty = synthetic_records(spark, 0)
    assert empty.columns == ["value"] and empty.count() == 0
    with pytest.raises(ValueError):
        synthetic_records(spark, 10, block_size=0)
