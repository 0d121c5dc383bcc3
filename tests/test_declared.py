"""Declared metadata: tags, files, parents and the five fields, on real Hub snapshots and
on hand-built rows for the shapes (and the noise) the snapshots lack."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from typing import Any

import pytest

from semfin_spark import declared as D
from semfin_spark.delta import DeltaStore
from semfin_spark.ingest import ingest
from semfin_spark.licenses import normalize_card_license
from semfin_spark.schemas import HUB_MODELS, MODEL_FIELDS, MODEL_FILES, MODEL_PARENTS, MODEL_TAGS
from semfin_spark.settings import FIELDS, load_settings

REAL_FILES = ("hub2025_trees.jsonl.gz", "hub2022_dev.jsonl.gz")


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def real(spark, shared_data, tmp_path_factory) -> dict[str, tuple[Any, list[dict]]]:
    """Per real file: its hub_models DataFrame (ingested into its own warehouse) and the
    JSON records it came from."""
    out = {}
    for name in REAL_FILES:
        warehouse = tmp_path_factory.mktemp("declared") / "warehouse"
        settings = load_settings(environ={}, overrides={"warehouse": str(warehouse)})
        store = DeltaStore.from_settings(spark, settings)
        ingest(spark, store, f"snapshot:{shared_data / name}", settings, progress=lambda _: None)
        with gzip.open(shared_data / name, "rt", encoding="utf-8") as fh:
            records = [json.loads(line) for line in fh if line.strip()]
        out[name] = (store.read(HUB_MODELS), records)
    return out


@pytest.fixture(scope="module")
def built(real) -> dict[str, dict[str, list]]:
    """Per real file, the rows of each builder, computed once for the tests below."""
    return {name: {"tags": D.model_tags(models).collect(),
                   "files": D.model_files(models).collect(),
                   "parents": D.model_parents(models).collect(),
                   "fields": D.model_fields(models).collect()}
            for name, (models, _) in real.items()}


def hub_rows(spark, *rows: dict[str, Any]):
    """hub_models rows from dicts; unspecified columns are null, JSON columns given as objects."""
    full = []
    for row in rows:
        values = {f.name: None for f in HUB_MODELS.schema.fields}
        for key, value in row.items():
            if key in ("card_data", "config", "config_json") and not isinstance(value, (str, type(None))):
                value = json.dumps(value)
            values[key] = value
        full.append(values)
    return spark.createDataFrame(full, HUB_MODELS.schema)


def schema_of(df_or_table) -> list[tuple[str, str]]:
    return [(f.name, f.dataType.simpleString()) for f in df_or_table.schema.fields]


def fields_by_model(rows) -> dict[tuple[str, str], tuple]:
    """(model, field) -> (declared_value, declared_raw, declared_source), from rows or a DataFrame."""
    rows = rows.collect() if hasattr(rows, "collect") else rows
    return {(r.model_id, r.field): (r.declared_value, r.declared_raw, r.declared_source)
            for r in rows}


# --------------------------------------------------------------------------- independent Python readings

def card_values(card: dict, key: str) -> list[str]:
    """A card value as a list of trimmed non-blank strings (a scalar is a list of one)."""
    value = card.get(key)
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if item is None:
            continue
        text = item if isinstance(item, str) else json.dumps(item)
        if text.strip():
            out.append(text.strip())
    return out


def python_parents(record: dict) -> set[tuple[str, str, str | None, str]]:
    """(child, parent, relation, source) as the module doc describes, read without Spark."""
    card = record.get("cardData") or {}
    card_relation = next(iter(card_values(card, "base_model_relation")), None)
    card_relation = D.normalize_relation(card_relation) if card_relation else None
    candidates = []
    for tag in record.get("tags") or []:
        if not tag.lower().startswith("base_model:"):
            continue
        rest = tag[len("base_model:"):]
        relation_word, sep, parent = rest.partition(":")
        if sep and parent:
            relation = D.normalize_relation(relation_word) or card_relation
            candidates.append((parent.strip(), relation, "tag"))
        elif not sep and rest:
            candidates.append((rest.strip(), card_relation, "tag_plain"))
    for parent in card_values(card, "base_model"):
        candidates.append((parent, card_relation, "card_data"))
    best: dict[str, tuple] = {}
    order = ("tag", "card_data", "tag_plain")
    for parent, relation, source in candidates:
        if not parent:
            continue
        rank = (relation is None, order.index(source), parent, source, relation or "")
        key = parent.lower()
        if key not in best or rank < best[key][0]:
            best[key] = (rank, parent, relation, source)
    return {(record["id"], p, r, s) for _, p, r, s in best.values()}


def python_tag(tag: str, library: str | None) -> tuple[str, str, str | None]:
    """(kind, value, relation) of a tag, from the module's tables but not its code."""
    low = tag.lower()
    prefix, sep, rest = tag.partition(":")
    if sep and prefix and prefix.lower() in D.TAG_PREFIX_KINDS:
        kind = D.TAG_PREFIX_KINDS[prefix.lower()]
        if kind == "base_model":
            relation_word, sep2, parent = rest.partition(":")
            if sep2 and parent:
                return kind, parent, D.normalize_relation(relation_word)
        return kind, rest, None
    if library is not None and low == library.strip().lower():
        kind = "library"
    elif low in D.FORMAT_TAGS:
        kind = "format"
    elif low in D.LIBRARY_TAGS:
        kind = "library"
    elif low in D.TASK_TAGS:
        kind = "task"
    elif low in D.ENDPOINT_TAGS or low.endswith("_compatible"):
        kind = "endpoints"
    elif low not in D.NOT_LANGUAGE_TAGS and (low == "multilingual" or (
            low[:2] in D.LANGUAGE_CODES
            and (len(low) == 2 or re.fullmatch(r"[-_]([a-z]{2}|[a-z]{4})", low[2:])))):
        kind = "language"
    else:
        kind = "other"
    return kind, tag, None


def python_license(record: dict) -> tuple | None:
    card = record.get("cardData") or {}
    raw = card.get("license")
    card_id = normalize_card_license(raw)
    if card_id is not None:
        chosen = raw if not isinstance(raw, list) else next(
            v for v in raw if v is not None and normalize_card_license(str(v)) == card_id)
        return card_id, str(chosen).strip(), "card_data"
    tags = [t[len("license:"):] for t in record.get("tags") or [] if t.lower().startswith("license:")]
    tag_id = normalize_card_license(tags)
    if tag_id is None:
        return None
    return tag_id, next(t for t in tags if normalize_card_license(t) == tag_id), "tag"


def python_hub_or_card(record: dict, key: str) -> tuple | None:
    hub = record.get(key)
    if hub is not None and hub.strip():
        return hub.strip().lower(), hub, "hub"
    values = card_values(record.get("cardData") or {}, key)
    return (values[0].lower(), values[0], "card_data") if values else None


# --------------------------------------------------------------------------- real data

@pytest.mark.parametrize("name", REAL_FILES)
def test_builders_return_exactly_the_declared_schemas(real, name):
    models, _ = real[name]
    for build, table in ((D.model_tags, MODEL_TAGS), (D.model_files, MODEL_FILES),
                         (D.model_parents, MODEL_PARENTS), (D.model_fields, MODEL_FIELDS)):
        assert schema_of(build(models)) == schema_of(table), table.name


@pytest.mark.parametrize("name", REAL_FILES)
def test_five_field_rows_per_model_with_declared_values_only(real, built, name):
    _, records = real[name]
    fields = built[name]["fields"]
    per_model: dict[str, list[str]] = {}
    for row in fields:
        per_model.setdefault(row.model_id, []).append(row.field)
    assert set(per_model) == {r["id"] for r in records}
    assert {tuple(sorted(f)) for f in per_model.values()} == {tuple(sorted(FIELDS))}
    shas = {r["id"]: r.get("sha") for r in records}
    for row in fields:
        # Nothing imputed here; value mirrors the declared value; sha from hub_models.
        assert row.imputed_value is row.imputed_confidence is row.imputed_model is None
        assert row.imputed_model_version is row.imputed_run_id is row.imputed_at is None
        assert row.features_hash is None
        assert row.value == row.declared_value and row.sha == shas[row.model_id]
        assert row.value_source == ("declared" if row.declared_value is not None else None)
        # Source and raw are set exactly when a value is declared.
        declared = row.declared_value is not None
        assert (row.declared_source is not None) == declared
        assert (row.declared_raw is not None) == declared


@pytest.mark.parametrize("name", REAL_FILES)
def test_parents_equal_an_independent_extraction(real, built, name):
    _, records = real[name]
    got = [tuple(r) for r in built[name]["parents"]]
    expected = set().union(*(python_parents(r) for r in records))
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected
    if name == "hub2022_dev.jsonl.gz":  # no base_model field existed in early 2022
        assert got == []
    else:
        assert len(got) > 1900


def test_relation_shares_match_the_tag_counts(real, built):
    name = "hub2025_trees.jsonl.gz"
    _, records = real[name]
    tag_relations = Counter()
    for record in records:
        for tag in set(record["tags"]):
            parts = tag.split(":")
            if parts[0] == "base_model" and len(parts) == 3:
                tag_relations[D.normalize_relation(parts[1])] += 1
    parents = built[name]["parents"]
    assert Counter(r.relation for r in parents if r.source == "tag") == tag_relations
    assert set(tag_relations) <= set(D.RELATIONS)
    # Every model tagged with a relation declares that reuse method, taken from the tag,
    # so the shares of reuse methods are the shares of the tags.
    reuse = [r for r in built[name]["fields"] if r.field == "reuse_method"]
    tagged = {r["id"] for r in records
              if any(t.startswith("base_model:") and t.count(":") == 2 for t in r["tags"])}
    assert {r.model_id for r in reuse if r.declared_source == "tag"} == tagged
    per_model_tag = Counter()
    for record in records:
        relations = {D.normalize_relation(t.split(":")[1]) for t in record["tags"]
                     if t.startswith("base_model:") and t.count(":") == 2}
        if relations:
            per_model_tag[next(r for r in D.RELATION_PRECEDENCE if r in relations)] += 1
    assert Counter(r.declared_value for r in reuse if r.declared_source == "tag") == per_model_tag
    # Only models with a declared parent have a reuse method.
    assert {r.model_id for r in reuse if r.declared_value} == {r.model_id for r in parents}


@pytest.mark.parametrize("name", REAL_FILES)
def test_tags_equal_an_independent_classification(real, built, name):
    _, records = real[name]
    got = built[name]["tags"]
    expected = {(r["id"], t, *python_tag(t, r.get("library_name")))
                for r in records for t in (r.get("tags") or []) if t and t.strip()}
    assert len(got) == len(expected)
    assert {tuple(r) for r in got} == expected
    kinds = Counter(r.kind for r in got)
    assert kinds == Counter(e[2] for e in expected)
    assert set(kinds) <= {"library", "task", "license", "base_model", "dataset", "language",
                          "region", "arxiv", "doi", "endpoints", "format", "other"}
    # Every license: tag is kind license, with the licence as its value.
    licence_tags = [r for r in got if r.tag.startswith("license:")]
    assert licence_tags and all(r.kind == "license" and r.value == r.tag[8:] for r in licence_tags)
    # The Python twin of the rules agrees with Spark on every real tag.
    library = {r["id"]: r.get("library_name") for r in records}
    assert all(D.tag_kind(r.tag, library[r.model_id]) == r.kind for r in got)


@pytest.mark.parametrize("name", REAL_FILES)
def test_files_follow_the_rules_on_every_real_file(real, built, name):
    _, records = real[name]
    got = built[name]["files"]
    assert len(got) == sum(len({s["rfilename"] for s in r.get("siblings") or []
                                if s["rfilename"].strip()}) for r in records)
    assert all(D.file_kind(r.path) == r.kind for r in got)
    kinds = Counter(r.kind for r in got)
    assert kinds["weights"] > 0 and kinds["tokenizer"] > 0 and kinds["config"] > 0
    assert kinds["card"] > 0
    assert not any(r.kind == "weights" and r.path.rsplit("/", 1)[-1] == "training_args.bin" for r in got)


@pytest.mark.parametrize("name", REAL_FILES)
def test_license_pipeline_library_and_model_type_follow_their_sources(real, built, name):
    _, records = real[name]
    got = fields_by_model(built[name]["fields"])
    for record in records:
        model = record["id"]
        assert got[model, "license"] == (python_license(record) or (None, None, None)), model
        for field in ("pipeline_tag", "library_name"):
            assert got[model, field] == (python_hub_or_card(record, field) or (None, None, None))
        model_type = (record.get("config") or {}).get("model_type")
        expected = (model_type.lower(), model_type, "config") if model_type else (None, None, None)
        assert got[model, "model_type"] == expected, model


def test_real_licence_noise_is_normalised(real, built):
    """2022: cards spell licences their own way ("MIT", "Academic Free License v3.0") and the
    Hub's tag lower-cases them; a tag without a card licence is still declared."""
    _, records = real["hub2022_dev.jsonl.gz"]
    got = fields_by_model(built["hub2022_dev.jsonl.gz"]["fields"])
    odd_spellings = {r["id"]: r["cardData"]["license"] for r in records
                     if isinstance((r.get("cardData") or {}).get("license"), str)
                     and r["cardData"]["license"] != r["cardData"]["license"].lower()}
    assert len(odd_spellings) >= 5
    for model, spelling in odd_spellings.items():
        value, raw, source = got[model, "license"]
        assert raw == spelling and source == "card_data" and value == value.lower() != "unknown"
    assert {got[m, "license"][0] for m, s in odd_spellings.items() if s == "MIT"} == {"mit"}
    assert {got[m, "license"][0] for m, s in odd_spellings.items()
            if s == "Academic Free License v3.0"} == {"afl-3.0"}
    tag_only = [r["id"] for r in records if not (r.get("cardData") or {}).get("license")
                and any(t.startswith("license:") for t in r["tags"])]
    assert tag_only and all(got[m, "license"][2] == "tag" for m in tag_only)
    # 2025: a card without a licence under a model whose tags carry one.
    got = fields_by_model(built["hub2025_trees.jsonl.gz"]["fields"])
    assert got["ykarout/phi-4-deepseek-reasoning-fp16", "license"] == ("apache-2.0", "apache-2.0", "tag")


# --------------------------------------------------------------------------- hand-built rows

def test_reuse_method_derivation_rules(spark):
    plain = ["base_model:org/base"]
    models = hub_rows(
        spark,
        {"id": "x/no-parent", "siblings": ["adapter_config.json"], "tags": ["peft"]},
        {"id": "x/tag-adapter", "tags": ["base_model:adapter:org/base"]},
        {"id": "x/card-quant", "card_data": {"base_model": "org/base",
                                             "base_model_relation": "quantization"}},
        {"id": "x/adapter-file", "tags": plain, "siblings": ["README.md", "adapter_config.json",
                                                             "adapter_model.safetensors"]},
        {"id": "x/peft-library", "tags": plain, "library_name": "PEFT"},
        {"id": "x/peft-tag", "tags": plain + ["peft"]},
        {"id": "x/gguf-file", "card_data": {"base_model": "org/base"},
         "siblings": ["README.md", "model-Q4_K_M.gguf"]},
        {"id": "x/gptq-config", "card_data": {"base_model": "org/base"},
         "config": {"quantization_config": {"quant_method": "gptq", "bits": 4}}},
        {"id": "x/fp8-config", "card_data": {"base_model": "org/base"},
         "config": {"quantization_config": {"quant_method": "fp8"}}},
        {"id": "x/quant-tag", "tags": plain + ["4-bit"]},
        {"id": "x/mergekit", "card_data": {"base_model": ["org/a", "org/b"]},
         "siblings": ["mergekit_config.yml", "model.safetensors"]},
        {"id": "x/merge-tag", "tags": ["base_model:org/a", "base_model:org/b", "merge"]},
        {"id": "x/default", "tags": plain, "siblings": ["model.safetensors", "config.json"]},
        {"id": "x/merge-wins", "tags": ["base_model:merge:org/a", "base_model:finetune:org/b"]},
        {"id": "x/adapter-beats-finetune", "tags": ["base_model:finetune:org/a",
                                                    "base_model:adapter:org/b"]},
        {"id": "x/adapter-before-quant", "tags": plain + ["gguf"], "siblings": ["adapter_config.json"]},
    )
    got = {m: v for (m, f), v in fields_by_model(D.model_fields(models)).items() if f == "reuse_method"}
    assert got == {
        "x/no-parent": (None, None, None),
        "x/tag-adapter": ("adapter", "adapter", "tag"),
        "x/card-quant": ("quantized", "quantization", "card_data"),
        "x/adapter-file": ("adapter", "file:adapter_config.json", "rule"),
        "x/peft-library": ("adapter", "library:peft", "rule"),
        "x/peft-tag": ("adapter", "tag:peft", "rule"),
        "x/gguf-file": ("quantized", "file:model-Q4_K_M.gguf", "rule"),
        "x/gptq-config": ("quantized", "quant_method:gptq", "rule"),
        "x/fp8-config": (None, None, None),
        "x/quant-tag": ("quantized", "tag:4-bit", "rule"),
        "x/mergekit": ("merge", "file:mergekit_config.yml", "rule"),
        "x/merge-tag": ("merge", "tag:merge", "rule"),
        "x/default": (None, None, None),  # no evidence: left to the classifier
        "x/merge-wins": ("merge", "merge", "tag"),
        "x/adapter-beats-finetune": ("adapter", "adapter", "tag"),
        "x/adapter-before-quant": ("adapter", "file:adapter_config.json", "rule"),
    }


def test_parents_one_row_per_parent_with_the_documented_precedence(spark):
    models = hub_rows(
        spark,
        # Tag with a relation beats the card naming the same parent without one.
        {"id": "c/1", "tags": ["base_model:org/p", "base_model:finetune:org/p"],
         "card_data": {"base_model": "org/p"}},
        # The card's relation reaches a plain tag; card_data beats tag_plain.
        {"id": "c/2", "tags": ["base_model:org/p"],
         "card_data": {"base_model": ["org/p", "org/q"], "base_model_relation": "Merged"}},
        # Parents compared case-insensitively; the tag's spelling is kept.
        {"id": "c/3", "tags": ["base_model:fine-tune:Org/P"], "card_data": {"base_model": "org/p"}},
        # A self-loop is declared, so kept; an unknown relation word is no relation.
        {"id": "c/4", "tags": ["base_model:distilled:c/4"]},
        # Only a plain tag: no relation, source tag_plain.
        {"id": "c/5", "tags": ["base_model:org/p"]},
        # Blank and malformed declarations are not parents.
        {"id": "c/6", "tags": ["base_model:", "base_model:finetune:"],
         "card_data": {"base_model": ["", "  ", None]}},
        {"id": "c/7", "card_data": None, "tags": None},
        # Variants of relation spellings, on the tag.
        {"id": "c/8", "tags": ["base_model:Quantization:org/p", "base_model:Adapters:org/q"]},
    )
    got = {tuple(r) for r in D.model_parents(models).collect()}
    assert got == {
        ("c/1", "org/p", "finetune", "tag"),
        ("c/2", "org/p", "merge", "card_data"),
        ("c/2", "org/q", "merge", "card_data"),
        ("c/3", "Org/P", "finetune", "tag"),
        ("c/4", "c/4", None, "tag"),
        ("c/5", "org/p", None, "tag_plain"),
        ("c/8", "org/p", "quantized", "tag"),
        ("c/8", "org/q", "adapter", "tag"),
    }
    reuse = {m: v for (m, f), v in fields_by_model(D.model_fields(models)).items()
             if f == "reuse_method"}
    assert reuse["c/2"] == ("merge", "Merged", "card_data")
    assert reuse["c/4"] == (None, None, None)
    assert reuse["c/8"] == ("adapter", "Adapters", "tag")
    assert reuse["c/6"] == reuse["c/7"] == (None, None, None)


def test_license_noise_and_contradictions(spark):
    models = hub_rows(
        spark,
        {"id": "l/spelled", "card_data": {"license": "Apache License 2.0"}},
        {"id": "l/list", "card_data": {"license": ["other", "MIT License"]}},
        {"id": "l/list-other", "card_data": {"license": ["Other", "my own terms"]}},
        {"id": "l/tag-only", "tags": ["license:cc-by-nc-4.0"]},
        {"id": "l/card-vs-tag", "card_data": {"license": "MIT"}, "tags": ["license:apache-2.0"]},
        {"id": "l/blank-card", "card_data": {"license": "  "}, "tags": ["license:gpl-3.0"]},
        {"id": "l/unknown", "card_data": {"license": "my own terms"}},
        {"id": "l/number", "card_data": {"license": 2.0}},
        {"id": "l/none", "card_data": {"licence": "license", "license_name": "x"}},
        {"id": "l/tags", "tags": ["license:other", "License:Llama3.1"]},
    )
    got = {m: v for (m, f), v in fields_by_model(D.model_fields(models)).items() if f == "license"}
    assert got == {
        "l/spelled": ("apache-2.0", "Apache License 2.0", "card_data"),
        "l/list": ("mit", "MIT License", "card_data"),
        "l/list-other": ("other", "Other", "card_data"),
        "l/tag-only": ("cc-by-nc-4.0", "cc-by-nc-4.0", "tag"),
        "l/card-vs-tag": ("mit", "MIT", "card_data"),  # the card is the source; the tag is derived
        "l/blank-card": ("gpl-3.0", "gpl-3.0", "tag"),
        "l/unknown": ("unknown", "my own terms", "card_data"),
        "l/number": ("unknown", "2.0", "card_data"),
        "l/none": (None, None, None),
        "l/tags": ("llama3.1", "Llama3.1", "tag"),
    }


def test_text_fields_fall_back_and_normalise(spark):
    models = hub_rows(
        spark,
        {"id": "t/hub", "pipeline_tag": "text-generation", "library_name": " Transformers ",
         "card_data": {"pipeline_tag": "fill-mask", "library_name": "peft"},
         "config": {"model_type": "LLaMA"}, "config_json": '{"model_type": "mistral"}'},
        {"id": "t/card", "pipeline_tag": "  ", "card_data": {"pipeline_tag": ["Text-Classification"],
                                                             "library_name": "timm"}},
        {"id": "t/config-json", "config": {"architectures": ["X"]},
         "config_json": '{"model_type": "Qwen2", "hidden_size": 8}'},
        {"id": "t/bad-json", "config_json": "{not json"},
    )
    got = fields_by_model(D.model_fields(models))
    assert got["t/hub", "pipeline_tag"] == ("text-generation", "text-generation", "hub")
    assert got["t/hub", "library_name"] == ("transformers", " Transformers ", "hub")
    assert got["t/hub", "model_type"] == ("llama", "LLaMA", "config")
    assert got["t/card", "pipeline_tag"] == ("text-classification", "Text-Classification", "card_data")
    assert got["t/card", "library_name"] == ("timm", "timm", "card_data")
    assert got["t/config-json", "model_type"] == ("qwen2", "Qwen2", "config")
    assert all(got["t/bad-json", f] == (None, None, None) for f in FIELDS)


def test_tag_kinds_values_and_relations(spark):
    tags = ["license:mit", "base_model:quantized:org/p", "base_model:org/p", "dataset:org/d",
            "language:fr", "region:us", "arxiv:2106.09685", "doi:10.57967/hf/1", "deploy:azure",
            "Safetensors", "gguf", "PyTorch", "text-generation", "conversational",
            "endpoints_compatible", "infinity_compatible", "en", "pt-br", "sv-SE", "sr-Latn",
            "lg-ai", "eng", "diffusers:StableDiffusionPipeline", "generated_from_trainer",
            "en", "", "  "]
    models = hub_rows(spark, {"id": "g/1", "tags": tags, "library_name": "GGUF"})
    got = {r.tag: (r.kind, r.value, r.relation) for r in D.model_tags(models).collect()}
    assert got == {
        "license:mit": ("license", "mit", None),
        "base_model:quantized:org/p": ("base_model", "org/p", "quantized"),
        "base_model:org/p": ("base_model", "org/p", None),
        "dataset:org/d": ("dataset", "org/d", None),
        "language:fr": ("language", "fr", None),
        "region:us": ("region", "us", None),
        "arxiv:2106.09685": ("arxiv", "2106.09685", None),
        "doi:10.57967/hf/1": ("doi", "10.57967/hf/1", None),
        "deploy:azure": ("endpoints", "azure", None),
        "Safetensors": ("format", "Safetensors", None),
        "gguf": ("library", "gguf", None),  # the model's own library_name wins over format
        "PyTorch": ("library", "PyTorch", None),
        "text-generation": ("task", "text-generation", None),
        "conversational": ("task", "conversational", None),
        "endpoints_compatible": ("endpoints", "endpoints_compatible", None),
        "infinity_compatible": ("endpoints", "infinity_compatible", None),
        "en": ("language", "en", None),
        "pt-br": ("language", "pt-br", None),
        "sv-SE": ("language", "sv-SE", None),
        "sr-Latn": ("language", "sr-Latn", None),
        "lg-ai": ("other", "lg-ai", None),
        "eng": ("other", "eng", None),
        "diffusers:StableDiffusionPipeline": ("other", "diffusers:StableDiffusionPipeline", None),
        "generated_from_trainer": ("other", "generated_from_trainer", None),
    }


def test_file_kinds_extensions_and_precedence(spark):
    expected = {
        "adapter_model.safetensors": ("safetensors", "adapter"),
        "adapter_config.json": ("json", "adapter"),
        "model-00001-of-00004.safetensors": ("safetensors", "weights"),
        "model.safetensors.index.json": ("json", "weights"),
        "unet/diffusion_pytorch_model.bin": ("bin", "weights"),
        "tf_model.h5": ("h5", "weights"),
        "onnx/model.onnx": ("onnx", "weights"),
        "training_args.bin": ("bin", "other"),
        "checkpoint-500/optimizer.pt": ("pt", "other"),
        "llama-3-8b.Q4_K_M.GGUF": ("gguf", "gguf"),
        "ggml-model-q4_0.bin": ("bin", "gguf"),
        "quantize_config.json": ("json", "quantized"),
        "model.awq": ("awq", "quantized"),
        "gptq_model-4bit-128g.safetensors": ("safetensors", "quantized"),
        "mergekit_config.yml": ("yml", "merge"),
        "tokenizer.json": ("json", "tokenizer"),
        "tokenizer_config.json": ("json", "tokenizer"),
        "vocab.txt": ("txt", "tokenizer"),
        "merges.txt": ("txt", "tokenizer"),
        "spiece.model": ("model", "tokenizer"),
        "special_tokens_map.json": ("json", "tokenizer"),
        "config.json": ("json", "config"),
        "generation_config.json": ("json", "config"),
        "scheduler/scheduler_config.json": ("json", "config"),
        "model_index.json": ("json", "config"),
        "README.md": ("md", "card"),
        "modeling_custom.py": ("py", "code"),
        "train.ipynb": ("ipynb", "code"),
        ".gitattributes": (None, "other"),
        "LICENSE": (None, "other"),
    }
    models = hub_rows(spark, {"id": "f/1", "siblings": list(expected) + ["README.md", ""]},
                      {"id": "f/2", "siblings": None})
    got = {r.path: (r.extension, r.kind) for r in D.model_files(models).collect()}
    assert got == expected


def test_a_model_with_nothing_declared(spark):
    models = hub_rows(spark, {"id": "n/1", "sha": "abc"})
    assert D.model_tags(models).count() == D.model_files(models).count() == 0
    assert D.model_parents(models).count() == 0
    rows = D.model_fields(models).collect()
    assert sorted(r.field for r in rows) == sorted(FIELDS)
    assert all(r.declared_value is None and r.value_source is None and r.sha == "abc" for r in rows)


def test_expressions_are_built_once_per_session_and_work_in_any_frame(spark):
    from pyspark.sql import functions as F

    from semfin_spark.expressions import per_session

    built: list[str] = []

    @per_session
    def upper(name: str):
        built.append(name)
        return F.upper(F.col(name)).alias(name)

    assert upper("a") is upper("a") and upper("b") is not upper("a")
    assert built == ["a", "b"]
    frames = [spark.createDataFrame([(text,)], "a string") for text in ("p", "q")]
    assert [f.select(upper("a")).first()[0] for f in frames] == ["P", "Q"]

    def builder(value: str):
        @per_session
        def same_name():  # every builder made here has the same qualified name
            return F.lit(value)
        return same_name

    assert spark.range(1).select(builder("x")(), builder("y")()).first() == ("x", "y")
    # The declared rules are cached the same way: a second build reuses every column.
    models = spark.createDataFrame([], HUB_MODELS.schema)
    first, second = D.model_fields(models), D.model_fields(models)
    assert first.schema == second.schema and first.columns == MODEL_FIELDS.columns
    assert D._field_structs() is D._field_structs()  # noqa: SLF001
