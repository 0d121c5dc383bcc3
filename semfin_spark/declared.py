"""What models declare about themselves: tags, files, parents and the five fields.

Four DataFrame builders, each from ``hub_models`` rows (:data:`~semfin_spark.schemas.HUB_MODELS`
columns) to exactly the columns of its table; the flatten stage calls them for the models
it reprocesses and writes the results.

* :func:`model_tags` -> ``model_tags``: one row per distinct (model, tag), classified by kind.
* :func:`model_files` -> ``model_files``: one row per distinct (model, file), classified by kind.
* :func:`model_parents` -> ``model_parents``: one row per declared (child, parent).
* :func:`model_fields` -> ``model_fields``: five rows per model, one per field of
  :data:`~semfin_spark.settings.FIELDS`, with what the model declares (or nulls).

Tag kinds (``model_tags.kind``), decided in this order: a ``<prefix>:`` of
:data:`TAG_PREFIX_KINDS` (``license``, ``base_model``, ``dataset``, ``language``,
``region``, ``arxiv``, ``doi``; ``deploy:`` is ``endpoints``); the model's own
``library_name`` -> ``library``; a storage or quantisation format (``safetensors``,
``gguf``, ``onnx``, ``gptq``, ``4-bit``, ...) -> ``format``; a library or framework id ->
``library``; a pipeline tag (the legacy ``conversational`` included) -> ``task``;
``endpoints_compatible``, ``text-generation-inference``, ``autotrain_compatible`` and any
``*_compatible`` -> ``endpoints``; an ISO 639-1 code, alone or with a region or script
(``pt-br``, ``sv-SE``, ``sr-Latn``) -> ``language``; else ``other``. Matching ignores case;
blank tags are dropped.

File kinds (``model_files.kind``): the first of :data:`FILE_KIND_RULES` matching the
lower-cased base name: training state (``training_args.bin``, ``optimizer.pt``) ->
``other``; ``adapter``; ``gguf``; ``merge``; ``quantized``; ``tokenizer``; ``weights``;
``config``; ``card``; ``code``; else ``other``. So ``adapter_model.safetensors`` is an
adapter, ``tokenizer_config.json`` a tokenizer file, ``model.safetensors.index.json``
weights.

Where to change what (every rule is a table in this module, applied in table order):
    * Tag kinds: :data:`TAG_PREFIX_KINDS` (``license:``, ``base_model:``, ...),
      :data:`FORMAT_TAGS`, :data:`LIBRARY_TAGS`, :data:`TASK_TAGS`, :data:`ENDPOINT_TAGS`
      (plus :data:`ENDPOINT_PATTERN`), :data:`LANGUAGE_CODES` (plus
      :data:`NOT_LANGUAGE_TAGS`); the order they are tried is :func:`tag_kind`'s docstring.
    * File kinds: :data:`FILE_KIND_RULES`, first matching rule wins.
    * Relation spellings: :data:`RELATION_ALIASES`; the choice among several relations:
      :data:`RELATION_PRECEDENCE`.
    * The Hub's reuse-method rule for parents declared without a relation:
      :data:`ADAPTER_FILES`, :data:`ADAPTER_LIBRARIES`, :data:`QUANTIZED_FILE_KINDS`,
      :data:`QUANT_METHODS`, :data:`QUANTIZED_TAGS`, :data:`MERGE_FILE_KINDS`,
      :data:`MERGE_TAGS`.
    * Licence spellings: :mod:`semfin_spark.licenses` (this module only applies it).

Declared parents (``model_parents``), from three sources:
    ``tag``: ``base_model:<relation>:<parent>`` tags; ``tag_plain``: ``base_model:<parent>``
    tags; ``card_data``: the card's ``base_model`` (a string or a list). The relation is the
    tag's, else the card's ``base_model_relation`` (it applies to every parent of the
    model, as on the Hub), else null. When several sources name the same parent (compared
    case-insensitively, as the Hub resolves ids) one row is kept: a row with a relation
    before one without, then ``tag`` > ``card_data`` > ``tag_plain``; the kept row's
    spelling of the parent wins. Self-loops are kept: they are declared (the lineage stage
    drops and counts them).

The five fields (``model_fields``), first source that gives a non-blank value wins:
    * ``license``: card data ``license`` (``card_data``), else the ``license:<x>`` tags
      (``tag``). A list (dual licences, several tags) gives its first recognised licence,
      else ``other`` if one says so, else ``unknown`` (as
      :func:`~semfin_spark.licenses.normalize_card_license`). ``declared_raw`` is the chosen
      spelling; ``declared_value`` its id from :func:`~semfin_spark.licenses.license_id_expr`.
      A card licence nothing recognises is ``unknown``, not replaced by a tag: the card
      is what the author wrote, the Hub derives its ``license:`` tags from it. The card's
      ``licence`` key (a TRL template artefact whose value is the word "license") and
      ``license_name`` (the name behind ``license: other``) are not read.
    * ``reuse_method``: only for models that declare a parent. The declared relations of
      its parents: the first of :data:`RELATION_PRECEDENCE` among them (``merge`` first, so
      a model with several parents one of which says merge is a merge), source ``tag`` or
      ``card_data`` as the winning parent row says. Parents without any relation: the
      Hub's rule (source ``rule``, ``declared_raw`` names the evidence): an
      ``adapter_config.json`` or the ``peft`` library/tag -> ``adapter``; a GGUF or
      quantisation file, a quantisation config (:data:`QUANT_METHODS`) or a quantisation
      tag -> ``quantized``; a mergekit file or tag -> ``merge``; else nothing is declared.
      The Hub itself falls back to ``finetune`` when it finds no evidence, but that is its
      guess, not the author's word: such a model's reuse method is left to the impute
      stage, which marks its answer as imputed.
    * ``pipeline_tag``: the Hub's ``pipeline_tag`` (``hub``), else card data
      ``pipeline_tag`` (``card_data``); lower-cased, trimmed.
    * ``library_name``: the Hub's ``library_name`` (``hub``), else card data
      ``library_name`` (``card_data``); lower-cased, trimmed.
    * ``model_type``: the config summary's ``model_type``, else the full config.json's
      (both ``config``); lower-cased, trimmed.

    A card value that is a list gives its first non-blank element (licences aside).
    ``value`` is ``declared_value`` and ``value_source`` is ``declared`` when there is one;
    the imputed columns and ``features_hash`` are null, for the impute stage to fill.

Implementation details:
    Every builder is narrow: per-row expressions (``explode``, higher-order array
    functions, ``get_json_object``/``from_json``, ``regexp_extract``, literal maps and
    ``isin`` sets built from the tables above); no shuffle, no join, no Python on the
    executors. Parents are deduplicated inside each row's array (sorted, then compared with
    the previous element), so ``model_fields`` derives the reuse method from the same
    parents as ``model_parents`` without a second pass. Licences are normalised with
    :func:`~semfin_spark.licenses.license_id_expr` (the alias table as a literal map)
    rather than a broadcast join on the folded key: a card may list several licences, and
    a join would need an explode and a regroup (a shuffle) to pick one per model.
"""

from __future__ import annotations

import re
from typing import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from semfin_spark.delta import conform
from semfin_spark.expressions import per_session
from semfin_spark.licenses import OTHER, UNKNOWN, license_id_expr
from semfin_spark.schemas import MODEL_FIELDS, MODEL_FILES, MODEL_PARENTS, MODEL_TAGS
from semfin_spark.settings import FIELDS

# --------------------------------------------------------------------------- relations

#: The four reuse relations, spelled as the Hub spells them in ``base_model:<relation>:`` tags.
RELATIONS: tuple[str, ...] = ("finetune", "adapter", "quantized", "merge")

# Spellings are folded (lower-cased, everything but a-z removed) before lookup, so
# "Fine-Tune", "fine_tuned" and "finetuned" need one entry each at most.
RELATION_ALIASES: dict[str, tuple[str, ...]] = {
    "finetune": ("finetune", "finetuned", "finetuning", "ft"),
    "adapter": ("adapter", "adapters", "lora", "qlora", "peft"),
    "quantized": ("quantized", "quantised", "quantization", "quantisation", "quantize",
                  "quantise", "quant", "quants"),
    "merge": ("merge", "merged", "merges", "merging", "mergekit"),
}

#: Which relation a model's reuse method is when its parents declare several: the first
#: present. ``merge`` first (one parent saying merge makes the model a merge of all),
#: ``finetune`` last (the Hub's default says the least).
RELATION_PRECEDENCE: tuple[str, ...] = ("merge", "adapter", "quantized", "finetune")

_RELATION_FOLD = r"[^a-z]"


def _fold_relation(raw: str) -> str:
    return re.sub(_RELATION_FOLD, "", raw.lower())


_RELATION_KEYS: dict[str, str] = {
    _fold_relation(spelling): relation
    for relation, spellings in RELATION_ALIASES.items() for spelling in (relation, *spellings)
}


def normalize_relation(raw: str | None) -> str | None:
    """One of :data:`RELATIONS` for a relation spelling, or None when it is not one.

    Examples:
        >>> [normalize_relation(s) for s in ("finetune", "Fine-Tuned", "quantization", "merged")]
        ['finetune', 'finetune', 'quantized', 'merge']
        >>> normalize_relation("adapters"), normalize_relation("distilled"), normalize_relation(None)
        ('adapter', None, None)
    """
    return None if raw is None else _RELATION_KEYS.get(_fold_relation(raw))


def relation_expr(col: Column) -> Column:
    """Spark column of :func:`normalize_relation` of ``col`` (literal map, no UDF)."""
    table = F.create_map(*[F.lit(x) for item in sorted(_RELATION_KEYS.items()) for x in item])
    return F.try_element_at(table, F.regexp_replace(F.lower(col), _RELATION_FOLD, ""))


# --------------------------------------------------------------------------- tag rules

#: ``<prefix>:<value>`` tags and their kind; the value is what follows the first colon
#: (for ``base_model:<relation>:<parent>``, the parent). Prefixes are matched lower-cased.
TAG_PREFIX_KINDS: dict[str, str] = {
    "license": "license",
    "base_model": "base_model",
    "dataset": "dataset",
    "language": "language",
    "region": "region",
    "arxiv": "arxiv",
    "doi": "doi",
    "deploy": "endpoints",  # deploy:azure and the like: where the Hub can deploy the model
}

#: How weights are stored or quantised. A format that is the model's own ``library_name``
#: (a ``gguf`` library) is kind ``library`` for that model.
FORMAT_TAGS: frozenset[str] = frozenset({
    "safetensors", "gguf", "ggml", "onnx", "tflite", "coreml", "core-ml", "mlmodel",
    "gptq", "awq", "exl2", "aqlm", "hqq", "bitsandbytes", "4-bit", "8-bit",
})

#: Libraries and frameworks: the Hub's library ids and its framework tags.
LIBRARY_TAGS: frozenset[str] = frozenset({
    "transformers", "pytorch", "tf", "tensorflow", "jax", "flax", "keras", "tf-keras",
    "keras-hub", "keras-nlp", "rust", "paddlepaddle", "paddlenlp", "mindspore", "openvino",
    "tensorboard", "peft", "diffusers", "diffusion-single-file", "sentence-transformers",
    "setfit", "timm", "open_clip", "spacy", "stanza", "flair", "allennlp", "fairseq",
    "fasttext", "fastai", "espnet", "speechbrain", "nemo", "asteroid", "pyannote-audio",
    "pyannote", "k2", "tensorflowtts", "stable-baselines3", "sample-factory", "ml-agents",
    "adapter-transformers", "sklearn", "scikit-learn", "joblib", "skops", "bertopic",
    "span-marker", "gliner", "mlx", "mlx-image", "transformers.js", "unity-sentis",
    "llama-cpp-python", "vllm", "megatron-lm", "ultralytics", "audiocraft", "model2vec",
    "pythae", "doctr", "edsnlp", "mlc-llm", "unsloth",
})

#: The Hub's pipeline tags (tasks), and the legacy ``conversational`` and
#: ``structured-data-classification``.
TASK_TAGS: frozenset[str] = frozenset({
    "text-classification", "token-classification", "table-question-answering",
    "question-answering", "zero-shot-classification", "translation", "summarization",
    "feature-extraction", "text-generation", "text2text-generation", "fill-mask",
    "sentence-similarity", "text-ranking", "text-retrieval", "text-to-speech", "text-to-audio",
    "automatic-speech-recognition", "audio-to-audio", "audio-classification",
    "audio-text-to-text", "voice-activity-detection", "depth-estimation",
    "image-classification", "object-detection", "image-segmentation", "text-to-image",
    "image-to-text", "image-to-image", "image-to-video", "unconditional-image-generation",
    "video-classification", "reinforcement-learning", "robotics", "tabular-classification",
    "tabular-regression", "tabular-to-text", "table-to-text", "multiple-choice",
    "time-series-forecasting", "text-to-video", "image-text-to-text",
    "visual-question-answering", "document-question-answering",
    "zero-shot-image-classification", "graph-ml", "mask-generation",
    "zero-shot-object-detection", "text-to-3d", "image-to-3d", "image-feature-extraction",
    "video-text-to-text", "keypoint-detection", "visual-document-retrieval", "any-to-any",
    "video-to-video", "conversational", "structured-data-classification",
})

#: Deployment-compatibility tags the Hub adds; any tag ending in ``_compatible`` too.
ENDPOINT_TAGS: frozenset[str] = frozenset({
    "endpoints_compatible", "text-generation-inference", "text-embeddings-inference",
    "autotrain_compatible", "autonlp_compatible", "infinity_compatible",
})
ENDPOINT_PATTERN = r"_compatible$"

#: ISO 639-1 codes (the Hub's language tags) and ``multilingual``. Three-letter codes
#: are not listed: too many collide with ordinary tags (``art``, ``sft``, ``dpo``).
LANGUAGE_CODES: frozenset[str] = frozenset("""
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu
    cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi
    ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks
    ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl
    nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl
    sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve
    vi vo wa wo xh yi yo za zh zu multilingual
""".split())

#: Tags shaped like a language with a region (``<code>-<xx>``) that are not languages.
NOT_LANGUAGE_TAGS: frozenset[str] = frozenset({"lg-ai"})

# A language code alone, or with a region (pt-br, sv-SE, zh_CN) or script (sr-Latn)
# subtag; matched on the lower-cased tag.
_ISO = "|".join(sorted(c for c in LANGUAGE_CODES if len(c) == 2))
LANGUAGE_PATTERN = rf"^(?:{_ISO})(?:[-_](?:[a-z]{{2}}|[a-z]{{4}}))?$|^multilingual$"

_BASE_MODEL_RELATION = r"(?i)^base_model:([^:]*):(.+)$"
_BASE_MODEL_PLAIN = r"(?i)^base_model:([^:]+)$"
_PREFIX = r"^([^:]+):"


def tag_kind(tag: str, library_name: str | None = None) -> str:
    """The kind of one tag: the pure-Python twin of the expression :func:`model_tags` runs.

    Tried in order: a :data:`TAG_PREFIX_KINDS` prefix; the model's own ``library_name``
    (-> ``library``); :data:`FORMAT_TAGS`; :data:`LIBRARY_TAGS`; :data:`TASK_TAGS`;
    :data:`ENDPOINT_TAGS` or :data:`ENDPOINT_PATTERN` (-> ``endpoints``);
    :data:`LANGUAGE_PATTERN` unless in :data:`NOT_LANGUAGE_TAGS`; else ``other``.
    Case-insensitive.

    Args:
        tag: a Hub tag.
        library_name: the model's ``library_name``, if any.

    Examples:
        >>> [tag_kind(t) for t in ("license:mit", "base_model:finetune:gpt2", "Safetensors")]
        ['license', 'base_model', 'format']
        >>> [tag_kind(t) for t in ("pytorch", "text-generation", "endpoints_compatible")]
        ['library', 'task', 'endpoints']
        >>> [tag_kind(t) for t in ("en", "pt-br", "lg-ai", "generated_from_trainer")]
        ['language', 'language', 'other', 'other']
        >>> tag_kind("gguf"), tag_kind("gguf", library_name="GGUF")
        ('format', 'library')
    """
    low = tag.lower()
    prefix = re.match(_PREFIX, low)
    if prefix and prefix.group(1) in TAG_PREFIX_KINDS:
        return TAG_PREFIX_KINDS[prefix.group(1)]
    if library_name is not None and low == library_name.strip().lower():
        return "library"
    for kind, tags in (("format", FORMAT_TAGS), ("library", LIBRARY_TAGS), ("task", TASK_TAGS),
                       ("endpoints", ENDPOINT_TAGS)):
        if low in tags:
            return kind
    if re.search(ENDPOINT_PATTERN, low):
        return "endpoints"
    if low not in NOT_LANGUAGE_TAGS and re.search(LANGUAGE_PATTERN, low):
        return "language"
    return "other"


def _tag_kind_expr(tag: Column, library_name: Column) -> Column:
    low = F.lower(tag)
    prefix = F.regexp_extract(low, _PREFIX, 1)
    prefix_kind = F.try_element_at(
        F.create_map(*[F.lit(x) for item in sorted(TAG_PREFIX_KINDS.items()) for x in item]),
        prefix)
    return (F.when(prefix_kind.isNotNull(), prefix_kind)
            .when(library_name.isNotNull() & (low == F.lower(F.trim(library_name))), "library")
            .when(low.isin(*sorted(FORMAT_TAGS)), "format")
            .when(low.isin(*sorted(LIBRARY_TAGS)), "library")
            .when(low.isin(*sorted(TASK_TAGS)), "task")
            .when(low.isin(*sorted(ENDPOINT_TAGS)) | low.rlike(ENDPOINT_PATTERN), "endpoints")
            .when(~low.isin(*sorted(NOT_LANGUAGE_TAGS)) & low.rlike(LANGUAGE_PATTERN), "language")
            .otherwise("other"))


def model_tags(models: DataFrame) -> DataFrame:
    """The ``model_tags`` rows of ``models``: one per distinct non-blank (model, tag).

    Args:
        models: ``hub_models`` rows (``id``, ``tags``, ``library_name`` are read).

    Returns:
        ``model_id, tag, kind, value, relation`` (:data:`~semfin_spark.schemas.MODEL_TAGS`).
        ``value`` is what follows the ``kind:`` prefix (the parent for
        ``base_model:<relation>:<parent>``), else the tag itself; ``relation`` is the
        normalised relation of a ``base_model:<relation>:<parent>`` tag (null when the
        relation is not one of :data:`RELATIONS`).

    Examples:
        >>> model_tags(spark.read.table("hub_models")).groupBy("kind").count()  # doctest: +SKIP
    """
    tagged = (models.select(F.col("id").alias("model_id"), "library_name",
                            F.explode(F.array_distinct("tags")).alias("tag"))
              .where(F.col("tag").isNotNull() & (F.trim("tag") != "")))
    return conform(tagged.select("model_id", "tag", *_tag_columns()), MODEL_TAGS)


@per_session
def _tag_columns() -> tuple[Column, ...]:
    """``kind``, ``value`` and ``relation`` of a ``tag`` column (:func:`model_tags`)."""
    kind = _tag_kind_expr(F.col("tag"), F.col("library_name"))
    with_relation = F.col("tag").rlike(_BASE_MODEL_RELATION)
    prefixed = F.lower(F.regexp_extract("tag", _PREFIX, 1)).isin(*sorted(TAG_PREFIX_KINDS))
    value = (F.when((kind == "base_model") & with_relation,
                    F.regexp_extract("tag", _BASE_MODEL_RELATION, 2))
             .when(prefixed, F.regexp_extract("tag", r"^[^:]+:(.*)$", 1))
             .otherwise(F.col("tag")))
    relation = F.when((kind == "base_model") & with_relation,
                      relation_expr(F.regexp_extract("tag", _BASE_MODEL_RELATION, 1)))
    return kind.alias("kind"), value.alias("value"), relation.alias("relation")


# --------------------------------------------------------------------------- file rules

#: ``(kind, pattern)``: a file's kind is that of the first rule whose pattern matches its
#: lower-cased base name (``re.search``/``rlike``). The order is the precedence: training
#: state before weights (``optimizer.pt`` is not a model), adapters before weights
#: (``adapter_model.safetensors`` is an adapter), GGUF, merge and quantisation files before
#: weights and configs (``quantize_config.json`` says quantized), the tokenizer's
#: ``tokenizer_config.json`` before configs, shard indexes with the weights they index.
FILE_KIND_RULES: tuple[tuple[str, str], ...] = (
    ("other", r"^(training_args\.bin|optimizer\.(pt|bin)|scheduler\.pt|scaler\.pt"
              r"|rng_state.*\.pth|trainer_state\.json)$"),
    ("adapter", r"^(adapter_config\.json|adapter_model\..+|pytorch_lora_weights\..+)$"),
    ("gguf", r"\.(gguf|ggml)$|^ggml.*\.bin$"),
    ("merge", r"^mergekit"),
    ("quantized", r"^(quantize_config|quant_config|quantization_config)\.json$|\.awq$"
                  r"|(gptq|awq|exl2).*\.(safetensors|bin|pt)$"),
    ("tokenizer", r"^(tokenizer(_config)?\.json|tokenizer\.model|special_tokens_map\.json"
                  r"|added_tokens\.json|merges\.txt|vocab\..+|spiece\.model|sentencepiece.*"
                  r"|.*\.tiktoken|(source|target)\.spm|bpe\.codes|chat_template\.(jinja|json))$"),
    ("weights", r"\.(safetensors|bin|pt|pth|ckpt|h5|hdf5|keras|msgpack|onnx|onnx_data|tflite"
                r"|mlmodel|npz|npy|pb|ot|pdparams|joblib|pkl|pickle|nemo)$"
                r"|\.(safetensors|bin|pt|pth|h5|msgpack)\.index\.json$"),
    ("config", r"(^|_)config\.(json|ya?ml|cfg)$|^config[_-].*\.json$"
               r"|^(model_index|params|hparams|hyperparams)\.json$|\.(ya?ml|cfg|toml|ini)$"),
    ("card", r"^(readme\.md|model_?card.*)$"),
    ("code", r"\.(py|ipynb|sh)$"),
)

_EXTENSION = r"^.+\.([^.]+)$"  # a leading dot (.gitattributes) is a hidden file, not an extension
_BASENAME = r"([^/]*)$"


def file_kind(path: str) -> str:
    """The kind of a repo file by :data:`FILE_KIND_RULES` (``other`` when none matches).

    The pure-Python twin of :func:`file_kind_expr`, which :func:`model_files` runs in Spark.

    Examples:
        >>> [file_kind(p) for p in ("model-00001-of-00002.safetensors", "adapter_model.safetensors")]
        ['weights', 'adapter']
        >>> [file_kind(p) for p in ("tokenizer_config.json", "unet/config.json", "README.md")]
        ['tokenizer', 'config', 'card']
        >>> [file_kind(p) for p in ("q4_k_m.gguf", "quantize_config.json", "mergekit_config.yml")]
        ['gguf', 'quantized', 'merge']
        >>> [file_kind(p) for p in ("training_args.bin", "train.py", ".gitattributes")]
        ['other', 'code', 'other']
    """
    name = path.rsplit("/", 1)[-1].lower()
    for kind, pattern in FILE_KIND_RULES:
        if re.search(pattern, name):
            return kind
    return "other"


def file_kind_expr(path: Column) -> Column:
    """Spark column of :func:`file_kind` of a path column."""
    name = F.lower(F.regexp_extract(path, _BASENAME, 1))
    return _first_rule([(name.rlike(pattern), F.lit(kind)) for kind, pattern in FILE_KIND_RULES],
                       F.lit("other"))


def _first_rule(rules: list[tuple[Column, Column]], otherwise: Column) -> Column:
    """``CASE WHEN`` of (condition, result) pairs in order: the first true condition wins."""
    (condition, result), *rest = rules
    chain = F.when(condition, result)
    for condition, result in rest:
        chain = chain.when(condition, result)
    return chain.otherwise(otherwise)


def model_files(models: DataFrame) -> DataFrame:
    """The ``model_files`` rows of ``models``: one per distinct non-blank (model, file path).

    Args:
        models: ``hub_models`` rows (``id`` and ``siblings`` are read).

    Returns:
        ``model_id, path, extension, kind`` (:data:`~semfin_spark.schemas.MODEL_FILES`);
        ``extension`` is the lower-cased text after the base name's last dot, null when
        there is none (``README``, ``.gitattributes``).

    Examples:
        >>> model_files(spark.read.table("hub_models")).where("kind = 'gguf'")  # doctest: +SKIP
    """
    files = (models.select(F.col("id").alias("model_id"),
                           F.explode(F.array_distinct("siblings")).alias("path"))
             .where(F.col("path").isNotNull() & (F.trim("path") != "")))
    return conform(files.select("model_id", "path", *_file_columns()), MODEL_FILES)


@per_session
def _file_columns() -> tuple[Column, ...]:
    """``extension`` and ``kind`` of a ``path`` column (:func:`model_files`)."""
    extension = F.regexp_extract(F.lower(F.regexp_extract("path", _BASENAME, 1)), _EXTENSION, 1)
    return (F.when(extension != "", extension).alias("extension"),
            file_kind_expr(F.col("path")).alias("kind"))


# --------------------------------------------------------------------------- parents

#: When two sources name the same parent and both (or neither) give a relation.
PARENT_SOURCE_PRECEDENCE: tuple[str, ...] = ("tag", "card_data", "tag_plain")

_PARENTS = "_declared_parents"


_CARD = "_card"
_CARD_KEYS = ("license", "base_model", "base_model_relation", "pipeline_tag", "library_name")
#: The card data keys SemFin reads, each as JSON text when it is not a string.
_CARD_SCHEMA = "struct<" + ",".join(f"`{k}`:string" for k in _CARD_KEYS) + ">"


def _with_card(models: DataFrame) -> DataFrame:
    """``models`` with ``card_data`` parsed once into the keys of :data:`_CARD_KEYS`.

    One ``from_json`` per model instead of one ``get_json_object`` per key read (a card can
    be kilobytes of model-index and widget data). A key whose value is not a string keeps
    its JSON text (``["a", "b"]``, ``2.0``), which :func:`_json_values` then reads.
    """
    if _CARD in models.columns:
        return models
    return models.withColumn(_CARD, F.from_json("card_data", _CARD_SCHEMA))


def _json_values(key: str) -> Column:
    """A card data value as array<string>: a list as its elements, a scalar as one element.

    Elements are trimmed; null and blank ones are dropped. Non-string elements keep their
    JSON text (``2.0``, ``true``). Needs :func:`_with_card`.
    """
    raw = F.col(_CARD)[key]
    values = (F.when(F.json_array_length(raw).isNotNull(), F.from_json(raw, "array<string>"))
              .when(raw.isNotNull(), F.array(raw))
              .otherwise(F.array().cast("array<string>")))
    return F.filter(F.transform(values, lambda v: F.trim(v)),
                    lambda v: v.isNotNull() & (v != ""))


def _array_or_empty(name: str) -> Column:
    return F.coalesce(F.col(name), F.array().cast("array<string>"))


def _first(array: Column) -> Column:
    return F.try_element_at(array, F.lit(1))


def _first_match(values: Column, predicate) -> Column:
    return _first(F.filter(values, predicate))


@per_session
def _parent_candidates() -> Column:
    """Every declared (parent, relation, source) of a model, sorted so that the row to keep
    for each parent comes first: array<struct> ordered by parent (case-folded), then
    with-relation first, then :data:`PARENT_SOURCE_PRECEDENCE`."""
    card_relation_raw = _first(_json_values("base_model_relation"))
    card_relation = relation_expr(card_relation_raw)

    def candidate(parent: Column, source: str, tag_relation_raw: Column) -> Column:
        tag_relation = relation_expr(tag_relation_raw)
        relation = F.coalesce(tag_relation, card_relation)
        # Field order is the sort order.
        return F.struct(
            F.lower(parent).alias("parent_key"),
            relation.isNull().alias("no_relation"),
            F.lit(PARENT_SOURCE_PRECEDENCE.index(source)).alias("source_rank"),
            parent.alias("parent_id"),
            F.lit(source).alias("source"),
            relation.alias("relation"),
            F.when(tag_relation.isNotNull(), F.lit("tag"))
            .when(relation.isNotNull(), F.lit("card_data")).alias("relation_source"),
            F.when(tag_relation.isNotNull(), tag_relation_raw)
            .when(relation.isNotNull(), card_relation_raw).alias("relation_raw"),
        )

    none = F.lit(None).cast("string")
    # The regular expressions only see base_model tags: a prefix test first is much
    # cheaper than a regex on each of the millions of other tags.
    tags = F.filter(_array_or_empty("tags"),
                    lambda t: F.lower(F.substring(t, 1, 11)) == "base_model:")
    with_relation = F.transform(
        F.filter(tags, lambda t: t.rlike(_BASE_MODEL_RELATION)),
        lambda t: candidate(F.trim(F.regexp_extract(t, _BASE_MODEL_RELATION, 2)), "tag",
                            F.regexp_extract(t, _BASE_MODEL_RELATION, 1)))
    plain = F.transform(
        F.filter(tags, lambda t: t.rlike(_BASE_MODEL_PLAIN)),
        lambda t: candidate(F.trim(F.regexp_extract(t, _BASE_MODEL_PLAIN, 1)), "tag_plain", none))
    card = F.transform(_json_values("base_model"),
                       lambda p: candidate(p, "card_data", none))
    return F.array_sort(F.filter(F.concat(with_relation, plain, card),
                                 lambda c: c["parent_id"] != ""))


def _with_parents(models: DataFrame) -> DataFrame:
    """``models`` with a column of its declared parents, one struct per distinct parent."""
    # A projection of its own, so the lambda below reads the sorted array instead of
    # rebuilding it for every element.
    ranked = _with_card(models).withColumn(_PARENTS, _parent_candidates())
    return ranked.withColumn(_PARENTS, _first_of_each_parent())


@per_session
def _first_of_each_parent() -> Column:
    """The ranked candidates (:func:`_parent_candidates`), the first of each parent."""
    def first_of_its_parent(c: Column, i: Column) -> Column:
        # element_at is 1-based, so element i is the one before c.
        previous = F.element_at(F.col(_PARENTS), i)
        return F.when(i == 0, True).otherwise(c["parent_key"] != previous["parent_key"])

    return F.filter(_PARENTS, first_of_its_parent)


def model_parents(models: DataFrame) -> DataFrame:
    """The ``model_parents`` rows of ``models``: one per declared (child, parent).

    Args:
        models: ``hub_models`` rows (``id``, ``tags``, ``card_data`` are read).

    Returns:
        ``model_id, parent_id, relation, source`` (:data:`~semfin_spark.schemas.MODEL_PARENTS`);
        sources, relations and which row wins for a parent named twice: the module doc.
        Self-loops are kept.

    Examples:
        >>> model_parents(spark.read.table("hub_models")).where("relation = 'merge'")  # doctest: +SKIP
    """
    parents = _with_parents(models).select(F.col("id").alias("model_id"),
                                           F.explode(_PARENTS).alias("p"))
    return conform(parents.select("model_id", "p.parent_id", "p.relation", "p.source"),
                   MODEL_PARENTS)


# --------------------------------------------------------------------------- reuse rule

#: Evidence for ``adapter``: these file names, or this library (``library_name`` or tag).
ADAPTER_FILES: tuple[str, ...] = ("adapter_config.json",)
ADAPTER_LIBRARIES: tuple[str, ...] = ("peft",)
#: Evidence for ``quantized``: files of these kinds (:data:`FILE_KIND_RULES`), a
#: ``quantization_config.quant_method`` among these (``fp8`` is left out: DeepSeek-V3 and
#: its fine-tunes ship in fp8), or one of these tags.
QUANTIZED_FILE_KINDS: tuple[str, ...] = ("gguf", "quantized")
QUANT_METHODS: tuple[str, ...] = ("gptq", "awq", "aqlm", "exl2", "hqq", "eetq", "quanto",
                                  "bitsandbytes", "compressed-tensors", "gguf", "bitnet")
QUANTIZED_TAGS: tuple[str, ...] = ("gguf", "gptq", "awq", "exl2", "aqlm", "hqq",
                                   "bitsandbytes", "4-bit", "8-bit")
#: Evidence for ``merge``: files of these kinds, or one of these tags.
MERGE_FILE_KINDS: tuple[str, ...] = ("merge",)
MERGE_TAGS: tuple[str, ...] = ("merge", "mergekit")


def _rule_reuse() -> Column:
    """The Hub's rule for a model with parents but no relation: struct(value, raw), where
    raw names the evidence (``file:adapter_config.json``, ``tag:gguf``); null without
    evidence (the Hub would then say ``finetune`` by default, which is a guess, not a
    declaration: the classifier's guess is the better one, and is marked imputed)."""
    files = _array_or_empty("siblings")
    tags = F.transform(_array_or_empty("tags"), lambda t: F.lower(t))
    library = F.lower(F.trim(F.col("library_name")))
    quant_method = F.lower(F.coalesce(
        F.get_json_object("config", "$.quantization_config.quant_method"),
        F.get_json_object("config_json", "$.quantization_config.quant_method")))

    def named_file(names: Iterable[str]) -> Column:
        return F.concat(F.lit("file:"), _first_match(
            files, lambda p: F.lower(F.regexp_extract(p, _BASENAME, 1)).isin(*names)))

    def kind_file(kinds: Iterable[str]) -> Column:
        return F.concat(F.lit("file:"), _first_match(files, lambda p: file_kind_expr(p).isin(*kinds)))

    def tag(names: Iterable[str]) -> Column:
        return F.concat(F.lit("tag:"), _first_match(tags, lambda t: t.isin(*names)))

    def evidence(relation: str, found: Column) -> tuple[Column, Column]:
        return found.isNotNull(), F.struct(F.lit(relation).alias("value"), found.alias("raw"))

    return _first_rule([
        evidence("adapter", named_file(ADAPTER_FILES)),
        evidence("adapter", F.when(library.isin(*ADAPTER_LIBRARIES),
                                   F.concat(F.lit("library:"), library))),
        evidence("adapter", tag(ADAPTER_LIBRARIES)),
        evidence("quantized", kind_file(QUANTIZED_FILE_KINDS)),
        evidence("quantized", F.when(quant_method.isin(*QUANT_METHODS),
                                     F.concat(F.lit("quant_method:"), quant_method))),
        evidence("quantized", tag(QUANTIZED_TAGS)),
        evidence("merge", kind_file(MERGE_FILE_KINDS)),
        evidence("merge", tag(MERGE_TAGS)),
    ], F.lit(None).cast("struct<value:string,raw:string>"))


def _declared_reuse(parents: Column) -> Column:
    """struct(value, raw, source) of the reuse method; null for a model without parents."""
    def has(relation: str):
        return lambda p: p["relation"] == relation

    winner = F.coalesce(*[_first_match(parents, has(r)) for r in RELATION_PRECEDENCE])
    rule = _rule_reuse()
    return (F.when(F.size(parents) == 0, F.lit(None))
            .when(winner.isNotNull(), F.struct(winner["relation"].alias("value"),
                                               winner["relation_raw"].alias("raw"),
                                               winner["relation_source"].alias("source")))
            .when(rule.isNotNull(), F.struct(rule["value"].alias("value"), rule["raw"].alias("raw"),
                                             F.lit("rule").alias("source"))))


# --------------------------------------------------------------------------- fields

_LICENCES = "_licences"


def _with_licence_candidates(models: DataFrame) -> DataFrame:
    """``models`` with every licence spelling it declares, card data first, then its
    ``license:`` tags: array<struct<source, raw, id>>. A projection of its own, so each
    spelling is folded once however many times the choice below reads it."""
    return _with_card(models).withColumn(_LICENCES, _licence_candidates())


@per_session
def _licence_candidates() -> Column:
    """The column of :func:`_with_licence_candidates` (needs :func:`_with_card`)."""
    def spelled(raws: Column, source: str) -> Column:
        return F.transform(raws, lambda r: F.struct(F.lit(source).alias("source"), r.alias("raw")))

    tags = F.transform(F.filter(_array_or_empty("tags"),
                                lambda t: F.lower(t).startswith("license:")),
                       lambda t: F.substring(t, len("license:") + 1, 1 << 30))
    spellings = F.concat(spelled(_json_values("license"), "card_data"),
                         spelled(tags, "tag"))
    return F.transform(spellings, lambda s: F.struct(
        s["source"].alias("source"), s["raw"].alias("raw"), license_id_expr(s["raw"]).alias("id")))


def _pick_license(candidates: Column) -> Column:
    """struct(raw, id) of a list of licence spellings, as ``normalize_card_license`` picks:
    the first recognised, else the first ``other``, else the first ``unknown``."""
    return F.coalesce(
        _first_match(candidates, lambda c: c["id"].isNotNull() & ~c["id"].isin(OTHER, UNKNOWN)),
        _first_match(candidates, lambda c: c["id"] == OTHER),
        _first_match(candidates, lambda c: c["id"].isNotNull()))


def _declared(value: Column, raw: Column, source: str) -> Column:
    return F.when(value.isNotNull(), F.struct(value.alias("value"), raw.alias("raw"),
                                             F.lit(source).alias("source")))


def _lower_or_null(raw: Column) -> Column:
    return F.nullif(F.lower(F.trim(raw)), F.lit(""))


def _hub_or_card(column: str) -> Column:
    """The Hub's API field, else the card data key of the same name; lower-cased, trimmed."""
    card = _first(_json_values(column))
    return F.coalesce(_declared(_lower_or_null(F.col(column)), F.col(column), "hub"),
                      _declared(F.lower(card), card, "card_data"))


def _model_type() -> Column:
    summary = F.get_json_object("config", "$.model_type")
    full = F.get_json_object("config_json", "$.model_type")
    return F.coalesce(_declared(_lower_or_null(summary), summary, "config"),
                      _declared(_lower_or_null(full), full, "config"))


def _license() -> Column:
    def from_source(source: str) -> Column:
        return F.filter(_LICENCES, lambda c: c["source"] == source)

    card, tag = _pick_license(from_source("card_data")), _pick_license(from_source("tag"))
    return F.coalesce(_declared(card["id"], card["raw"], "card_data"),
                      _declared(tag["id"], tag["raw"], "tag"))


@per_session
def _field_structs() -> dict[str, Column]:
    """Each field's struct(value, raw, source), null when the model declares nothing."""
    return {
        "license": _license(),
        "reuse_method": _declared_reuse(F.col(_PARENTS)),
        "pipeline_tag": _hub_or_card("pipeline_tag"),
        "library_name": _hub_or_card("library_name"),
        "model_type": _model_type(),
    }


def model_fields(models: DataFrame) -> DataFrame:
    """The ``model_fields`` rows of ``models``: five per model, declared values only.

    Args:
        models: ``hub_models`` rows (``id``, ``sha``, ``tags``, ``siblings``,
            ``library_name``, ``pipeline_tag``, ``card_data``, ``config``,
            ``config_json`` are read).

    Returns:
        :data:`~semfin_spark.schemas.MODEL_FIELDS` columns, one row per model and field of
        :data:`~semfin_spark.settings.FIELDS`. ``declared_*`` as the module doc says (all
        null when nothing is declared); ``value`` = ``declared_value``; ``value_source``
        ``declared`` or null; imputed columns and ``features_hash`` null.

    Examples:
        >>> fields = model_fields(spark.read.table("hub_models"))               # doctest: +SKIP
        >>> fields.groupBy("field").agg(F.count("declared_value")).show()       # doctest: +SKIP
    """
    structs = _field_structs()
    if set(structs) != set(FIELDS):  # settings.FIELDS is the one list of fields
        raise RuntimeError(f"declared.py derives {sorted(structs)}, settings.FIELDS is {FIELDS}")
    declared_type = "struct<value:string,raw:string,source:string>"
    rows = F.array(*[F.struct(F.lit(name).alias("field"),
                              structs[name].cast(declared_type).alias("d"))
                     for name in FIELDS])
    staged = _with_licence_candidates(_with_parents(models))
    long = staged.select(F.col("id").alias("model_id"), "sha", F.inline(rows))
    null = F.lit(None)
    return conform(long.select(
        "model_id", "field",
        F.col("d.value").alias("declared_value"),
        F.col("d.raw").alias("declared_raw"),
        F.col("d.source").alias("declared_source"),
        null.alias("imputed_value"), null.alias("imputed_confidence"), null.alias("imputed_model"),
        null.alias("imputed_model_version"), null.alias("imputed_run_id"),
        null.alias("imputed_at"), null.alias("features_hash"),
        F.col("d.value").alias("value"),
        F.when(F.col("d.value").isNotNull(), F.lit("declared")).alias("value_source"),
        "sha"), MODEL_FIELDS)
