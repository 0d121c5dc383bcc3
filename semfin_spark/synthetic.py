"""The generated Hub: deterministic, Hub-shaped snapshot records of N models.

Every later stage is developed and benchmarked on this data, so it has the shapes the real
Hub has (compare ``../shared/data/``): families around base models with fine-tunes,
adapters, quantisations and merges, chains up to :data:`MAX_DEPTH` deep, parents outside
the generated Hub, rare self-loops, a large share of isolated models; full config.json
texts of 33 model types with real keys and value ranges; licences that mostly follow the
parent; and the Hub's missingness. A record is one JSON object with the keys of the Hub's
``/api/models`` plus ``config_json`` (the raw text of config.json, or null), exactly what a
line of a snapshot file holds.

Public API:
    * :func:`generate_block`: the records of one block of models (pure Python).
    * :func:`generate_block_lines`: the same as compact JSON lines.
    * :func:`synthetic_records`: a Spark DataFrame of ``value`` lines, generated on the
      executors.
    * :func:`parse_spec`: ``"N[,seed=S]"`` -> ``(N, S)`` for ``--source synthetic:...``.

Determinism: models are numbered 0..N-1 and cut into blocks of ``block_size``; block ``b``
holds models ``[b*block_size, (b+1)*block_size)`` and everything in it derives from one
``random.Random`` seeded by SHA-256 of ``(seed, b)``. A family never crosses a block, so a
block needs nothing from any other and the same (seed, N, block_size) gives the same Hub
on any machine, in any partitioning. Model ids carry the global index, so they are unique
across the Hub. ``block_size`` bounds the size of a family (and of merges' parent pools).

What the generator decides, in order (every rate below is a module constant):
    1. **Units.** A block is filled with isolated models (:data:`ISOLATED_SHARE` of all
       models, no declared parent and no child) and families whose size follows
       ``P(s) ~ s**-1.5`` on 2..:data:`MAX_FAMILY_SIZE` (cut at the block's end).
    2. **Families.** A model type (weights in :data:`MODEL_TYPES`), a variant (real size
       preset, licence, era, the real id of its base, e.g. ``meta-llama/Llama-3.1-8B``),
       and a root. With :data:`EXTERNAL_ROOT_RATE` the root is that real id and is not
       generated: the family hangs from a parent outside the generated Hub. Each further
       member picks a parent among the non-leaf members shallower than :data:`MAX_DEPTH`
       (the root weighted :data:`ROOT_PARENT_WEIGHT`) and a relation from
       :data:`RELATION_WEIGHTS` of the type's kind; quantisations and adapters are leaves;
       a merge takes 1-2 more parents of the same model type from anywhere in the block.
    3. **Content.** Children inherit the parent's config.json (a fine-tune may change the
       head: ``architectures``, ``id2label``/``label2id``; quantisations add a
       ``quantization_config``), pipeline tag, library and licence (changed with
       :data:`LICENSE_DRIFT_RATE`, often to a conflicting permissive licence).
    4. **Declaration.** How a child names its parents: :data:`DECLARATION_MODES` (Hub tags
       ``base_model:<p>`` + ``base_model:<relation>:<p>``, card ``base_model`` with or without
       ``base_model_relation``, plain tag only, or nothing). :data:`SELF_LOOP_RATE` of
       models also name themselves.
    5. **Missingness.** :data:`CARD_DATA_MISSING_RATE`, :data:`LICENSE_MISSING_RATE`,
       :data:`PIPELINE_TAG_MISSING_RATE`, :data:`LIBRARY_NAME_MISSING_RATE`, and config.json
       (:data:`CONFIG_DROP_RATE` on top of repos that never have one: adapters, GGUF,
       diffusers, non-transformers libraries; :data:`EXPECTED_CONFIG_MISSING` overall).
       The config summary ``config`` is null exactly when ``config_json`` is, or when
       config.json has no ``model_type`` (timm).

Speed: about 8,000 models/s per core in pure Python, JSON included (configs are
precomputed templates that children copy and patch; orjson serialises), so 2,000,000
models take about four core-minutes.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import orjson

if TYPE_CHECKING:  # pyspark is imported lazily so the generator runs without it.
    from pyspark.sql import DataFrame, SparkSession

# =========================================================================== rates
# The documented knobs of the generated Hub. Rates are per model unless said otherwise.

#: Share of all models generated without any lineage (no parent, no child). Models that
#: look isolated in the declared data are more (about 0.38 at seed 0): children with
#: ``undeclared`` parents and roots whose children all are.
ISOLATED_SHARE = 0.30
#: Of the isolated models, the share from libraries without a transformers config
#: (stable-baselines3, spacy, keras, ...; and empty repos).
ISOLATED_NON_TRANSFORMERS_SHARE = 0.20
#: Largest family (models sharing one root); the size law is ``P(s) ~ s**-1.5``.
MAX_FAMILY_SIZE = 48
#: Deepest chain below a root (depth of a root's child is 1).
MAX_DEPTH = 5
#: Weight of the root when a new family member picks its parent (other members weigh 1).
ROOT_PARENT_WEIGHT = 2.0
#: Share of families whose root is a real model outside the generated Hub.
EXTERNAL_ROOT_RATE = 0.12
#: Share of models that also declare themselves as parent (the Hub: 42 in 30k edges).
SELF_LOOP_RATE = 0.0015
#: Relation of a new family member to its parent, by kind of model type.
RELATION_WEIGHTS: dict[str, dict[str, float]] = {
    "llm": {"finetune": 0.40, "quantized": 0.33, "adapter": 0.12, "merge": 0.15},
    "encoder": {"finetune": 0.86, "adapter": 0.07, "quantized": 0.07},
    "seq2seq": {"finetune": 0.86, "adapter": 0.08, "quantized": 0.06},
    "vision": {"finetune": 0.88, "adapter": 0.06, "quantized": 0.06},
    "audio": {"finetune": 0.88, "adapter": 0.06, "quantized": 0.06},
    "diffusion": {"finetune": 0.35, "adapter": 0.60, "merge": 0.05},
    "timm": {"finetune": 1.0},
}
#: Quantisation method of a quantised LLM (other kinds are quantised to ONNX).
LLM_QUANT_METHODS: dict[str, float] = {"gguf": 0.55, "gptq": 0.14, "awq": 0.12,
                                       "bitsandbytes": 0.10, "mlx": 0.09}
#: How a child declares its parents:
#: ``full``: tags ``base_model:<p>`` and ``base_model:<relation>:<p>``, card ``base_model``;
#: ``relation_tag``: only the ``base_model:<relation>:<p>`` tag;
#: ``card_relation``: card ``base_model`` + ``base_model_relation``, plain tag;
#: ``plain``: card ``base_model`` and plain tag, no relation anywhere;
#: ``plain_tag``: only the plain tag; ``card_only``: only card ``base_model``;
#: ``undeclared``: nothing (the lineage is real but invisible).
#: Card parts fall back to the plain tag when the model has no card data.
DECLARATION_MODES: dict[str, float] = {"full": 0.62, "relation_tag": 0.05, "card_relation": 0.05,
                                       "plain": 0.12, "plain_tag": 0.04, "card_only": 0.02,
                                       "undeclared": 0.10}
#: A child's licence differs from its parent's with this rate ...
LICENSE_DRIFT_RATE = 0.12
#: ... and when the parent's licence restricts derivatives, such a change is to mit or
#: apache-2.0 (a licence conflict) with this rate.
LICENSE_CONFLICT_SHARE = 0.6
#: A declared card licence is spelled as authors do ("Apache 2.0", "MIT", "apache2").
LICENSE_VARIANT_RATE = 0.05

#: ``cardData`` is null.
CARD_DATA_MISSING_RATE = 0.40
#: No licence at all: neither ``cardData.license`` nor a ``license:`` tag.
LICENSE_MISSING_RATE = 0.45
#: ``pipeline_tag`` is null (the task then is not among the tags either).
PIPELINE_TAG_MISSING_RATE = 0.30
#: ``library_name`` is null (the library then is not among the tags either).
LIBRARY_NAME_MISSING_RATE = 0.25
#: Repos that would ship a config.json lack one with this rate ...
CONFIG_DROP_RATE = 0.10
#: ... which with the repos that never have one (adapters, GGUF, diffusers, other
#: libraries) makes this share of ``config_json`` nulls overall (measured, seed 0).
EXPECTED_CONFIG_MISSING = 0.30
#: ``createdAt`` is null for models created before the Hub recorded it (March 2022).
CREATED_AT_MISSING_BEFORE_2022 = 0.5

#: Models per Spark partition in :func:`synthetic_records`.
MODELS_PER_PARTITION = 50_000
#: Records per Arrow batch yielded by the executors.
RECORDS_PER_BATCH = 4096

# =========================================================================== helpers


class _Weighted:
    """Items with weights; :meth:`pick` draws one with a single ``rng.random()``."""

    __slots__ = ("items", "cum", "total")

    def __init__(self, weights: dict[Any, float] | Sequence[tuple[Any, float]]):
        pairs = list(weights.items()) if isinstance(weights, dict) else list(weights)
        self.items = [item for item, _ in pairs]
        self.cum = list(itertools.accumulate(w for _, w in pairs))
        self.total = self.cum[-1]

    def pick(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total)]


def _epoch(year: float) -> int:
    return int((year - 1970.0) * 365.2425 * 86400)


_HUB_END = _epoch(2025.5)
_DAY = 86400


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


_SANITIZE = re.compile(r"[^A-Za-z0-9._\-]+")
_RUNS = re.compile(r"[.\-]{2,}")


def _clean_name(text: str, limit: int = 64) -> str:
    """A repo-name-safe stem: allowed characters only, no ``--``/``..`` runs, trimmed."""
    text = _RUNS.sub("-", _SANITIZE.sub("-", text))[:limit]
    return text.strip(".-") or "model"


# =========================================================================== heads

_AUTO_BY_SUFFIX: tuple[tuple[str, str], ...] = (
    ("ForCausalLM", "AutoModelForCausalLM"), ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForTokenClassification", "AutoModelForTokenClassification"),
    ("ForQuestionAnswering", "AutoModelForQuestionAnswering"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
    ("ForImageClassification", "AutoModelForImageClassification"),
    ("ForAudioClassification", "AutoModelForAudioClassification"),
    ("ForCTC", "AutoModelForCTC"), ("ForPreTraining", "AutoModelForPreTraining"),
    ("MTModel", "AutoModelForSeq2SeqLM"),
    ("Model", "AutoModel"),
)


@dataclass(frozen=True)
class _Head:
    """What a model does: its architecture class, pipeline tag, library and labels."""

    architecture: str | None
    pipeline: str | None
    library: str | None = "transformers"
    labels: str | None = None  # label-set kind for id2label: seq, nli, token, image, audio
    auto_model: str | None = None

    @staticmethod
    def of(architecture: str, pipeline: str, labels: str | None = None,
           library: str = "transformers", auto_model: str | None = None) -> "_Head":
        if auto_model is None:
            auto_model = next((auto for suffix, auto in _AUTO_BY_SUFFIX
                               if architecture.endswith(suffix)), "AutoModel")
        return _Head(architecture, pipeline, library, labels, auto_model)


def _labels(names: Sequence[str]) -> tuple[dict[str, str], dict[str, int]]:
    return ({str(i): n for i, n in enumerate(names)}, {n: i for i, n in enumerate(names)})


_LABEL_SETS: dict[str, _Weighted] = {
    "seq": _Weighted([
        (_labels(["NEGATIVE", "POSITIVE"]), 3), (_labels(["LABEL_0", "LABEL_1"]), 4),
        (_labels(["negative", "neutral", "positive"]), 3),
        (_labels(["sadness", "joy", "love", "anger", "fear", "surprise"]), 1.5),
        (_labels(["non-toxic", "toxic"]), 1), (_labels(["ham", "spam"]), 0.5),
        (_labels([f"LABEL_{i}" for i in range(5)]), 1),
        (_labels(["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]), 0.5),
    ]),
    "nli": _Weighted([(_labels(["entailment", "neutral", "contradiction"]), 1),
                      (_labels(["contradiction", "entailment", "neutral"]), 1)]),
    "token": _Weighted([
        (_labels(["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]), 4),
        (_labels(["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]), 2),
        (_labels([f"LABEL_{i}" for i in range(9)]), 1),
        (_labels(["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART",
                  "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"]), 1),
    ]),
    "image": _Weighted([
        (_labels(["cat", "dog"]), 2), (_labels(["NORMAL", "PNEUMONIA"]), 1),
        (_labels(["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]), 1),
        (_labels(["fake", "real"]), 1), (_labels([f"LABEL_{i}" for i in range(4)]), 1),
        (_labels(["glioma", "meningioma", "notumor", "pituitary"]), 1),
        (_labels(["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
                  "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"]), 1),
    ]),
    "audio": _Weighted([
        (_labels(["angry", "calm", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]), 1),
        (_labels(["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]), 1),
        (_labels(["female", "male"]), 1),
    ]),
}

# =========================================================================== configs
# Full config.json contents of real base models (keys as transformers writes them); the
# values are the real ones of the named checkpoints.

_LLAMA_31_ROPE = {"factor": 8.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                  "original_max_position_embeddings": 8192, "rope_type": "llama3"}
_LLAMA_32_ROPE = {**_LLAMA_31_ROPE, "factor": 32.0}


def _llama(h, inter, layers, heads, kv, vocab, mpe, theta, *, bos=1, eos=2, tie=False,
           dtype="bfloat16", tv="4.40.0", rope=None, **extra) -> dict:
    cfg = {"architectures": ["LlamaForCausalLM"], "attention_bias": False,
           "attention_dropout": 0.0, "bos_token_id": bos, "eos_token_id": eos,
           "hidden_act": "silu", "hidden_size": h, "initializer_range": 0.02,
           "intermediate_size": inter, "max_position_embeddings": mpe, "model_type": "llama",
           "num_attention_heads": heads, "num_hidden_layers": layers,
           "num_key_value_heads": kv, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
           "rope_scaling": rope, "rope_theta": theta, "tie_word_embeddings": tie,
           "torch_dtype": dtype, "transformers_version": tv, "use_cache": True,
           "vocab_size": vocab}
    cfg.update(extra)
    return cfg


def _mistral(h, inter, layers, heads, kv, vocab, mpe, theta, window, *, tv="4.34.0", **extra) -> dict:
    cfg = {"architectures": ["MistralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
           "eos_token_id": 2, "hidden_act": "silu", "hidden_size": h,
           "initializer_range": 0.02, "intermediate_size": inter,
           "max_position_embeddings": mpe, "model_type": "mistral",
           "num_attention_heads": heads, "num_hidden_layers": layers,
           "num_key_value_heads": kv, "rms_norm_eps": 1e-05, "rope_theta": theta,
           "sliding_window": window, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "transformers_version": tv, "use_cache": True, "vocab_size": vocab}
    cfg.update(extra)
    return cfg


def _mixtral(h, inter, layers, heads, vocab, mpe) -> dict:
    return {"architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1,
            "eos_token_id": 2, "hidden_act": "silu", "hidden_size": h,
            "initializer_range": 0.02, "intermediate_size": inter,
            "max_position_embeddings": mpe, "model_type": "mixtral",
            "num_attention_heads": heads, "num_experts_per_tok": 2, "num_hidden_layers": layers,
            "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": False,
            "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
            "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "transformers_version": "4.36.0", "use_cache": True, "vocab_size": vocab}


def _qwen2(h, inter, layers, heads, kv, vocab, mpe, *, tie=False, tv="4.43.1") -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
            "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
            "hidden_size": h, "initializer_range": 0.02, "intermediate_size": inter,
            "max_position_embeddings": mpe, "max_window_layers": layers, "model_type": "qwen2",
            "num_attention_heads": heads, "num_hidden_layers": layers,
            "num_key_value_heads": kv, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
            "sliding_window": mpe, "tie_word_embeddings": tie, "torch_dtype": "bfloat16",
            "transformers_version": tv, "use_cache": True, "use_sliding_window": False,
            "vocab_size": vocab}


def _gemma(h, inter, layers, heads, kv) -> dict:
    return {"architectures": ["GemmaForCausalLM"], "attention_bias": False,
            "attention_dropout": 0.0, "bos_token_id": 2, "eos_token_id": 1, "head_dim": 256,
            "hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": h,
            "initializer_range": 0.02, "intermediate_size": inter,
            "max_position_embeddings": 8192, "model_type": "gemma",
            "num_attention_heads": heads, "num_hidden_layers": layers,
            "num_key_value_heads": kv, "pad_token_id": 0, "rms_norm_eps": 1e-06,
            "rope_scaling": None, "rope_theta": 10000.0, "torch_dtype": "bfloat16",
            "transformers_version": "4.38.0.dev0", "use_cache": True, "vocab_size": 256000}


def _gemma2(h, inter, layers, heads, kv, head_dim=256, scalar=256) -> dict:
    return {"architectures": ["Gemma2ForCausalLM"], "attention_bias": False,
            "attention_dropout": 0.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2,
            "cache_implementation": "hybrid", "eos_token_id": 1,
            "final_logit_softcapping": 30.0, "head_dim": head_dim,
            "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh",
            "hidden_size": h, "initializer_range": 0.02, "intermediate_size": inter,
            "max_position_embeddings": 8192, "model_type": "gemma2",
            "num_attention_heads": heads, "num_hidden_layers": layers,
            "num_key_value_heads": kv, "pad_token_id": 0, "query_pre_attn_scalar": scalar,
            "rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096,
            "torch_dtype": "float32", "transformers_version": "4.42.4", "use_cache": True,
            "vocab_size": 256000}


def _phi(h, inter, layers) -> dict:
    return {"architectures": ["PhiForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 50256,
            "embd_pdrop": 0.0, "eos_token_id": 50256, "hidden_act": "gelu_new",
            "hidden_size": h, "initializer_range": 0.02, "intermediate_size": inter,
            "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "phi",
            "num_attention_heads": 32, "num_hidden_layers": layers, "num_key_value_heads": 32,
            "partial_rotary_factor": 0.4, "qk_layernorm": False, "resid_pdrop": 0.1,
            "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False,
            "torch_dtype": "float16", "transformers_version": "4.37.0", "use_cache": True,
            "vocab_size": 51200}


_PHI3_LONGROPE = {
    "long_factor": [round(1.0 + 0.0007 * i ** 2.2, 4) for i in range(48)],
    "short_factor": [round(1.0 + 0.00002 * i ** 2.5, 4) for i in range(48)],
    "type": "longrope"}


def _phi3(h, inter, layers, heads, kv, mpe, rope=None) -> dict:
    return {"architectures": ["Phi3ForCausalLM"], "attention_bias": False,
            "attention_dropout": 0.0,
            "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config",
                         "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
            "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu",
            "hidden_size": h, "initializer_range": 0.02, "intermediate_size": inter,
            "max_position_embeddings": mpe, "model_type": "phi3",
            "num_attention_heads": heads, "num_hidden_layers": layers,
            "num_key_value_heads": kv, "original_max_position_embeddings": 4096,
            "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05,
            "rope_scaling": rope, "rope_theta": 10000.0, "sliding_window": 2047,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "transformers_version": "4.40.2", "use_cache": True, "vocab_size": 32064}


def _falcon(h, layers, heads, *, new_arch=False, kv=None, alibi=False, multi_query=True,
            parallel=True, vocab=65024) -> dict:
    cfg = {"alibi": alibi, "apply_residual_connection_post_layernorm": False,
           "architectures": ["FalconForCausalLM"], "attention_dropout": 0.0, "bias": False,
           "bos_token_id": 11, "eos_token_id": 11, "hidden_dropout": 0.0, "hidden_size": h,
           "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "falcon",
           "multi_query": multi_query, "new_decoder_architecture": new_arch,
           "num_attention_heads": heads, "num_hidden_layers": layers,
           "parallel_attn": parallel, "torch_dtype": "bfloat16",
           "transformers_version": "4.33.0", "use_cache": True, "vocab_size": vocab}
    if kv:
        cfg["num_kv_heads"] = kv
    return cfg


def _gpt2(n_embd, n_layer, n_head) -> dict:
    return {"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
            "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
            "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
            "n_ctx": 1024, "n_embd": n_embd, "n_head": n_head, "n_inner": None,
            "n_layer": n_layer, "n_positions": 1024, "reorder_and_upcast_attn": False,
            "resid_pdrop": 0.1, "scale_attn_by_inverse_layer_idx": False,
            "scale_attn_weights": True, "summary_activation": None,
            "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
            "summary_type": "cls_index", "summary_use_proj": True,
            "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
            "transformers_version": "4.26.0", "use_cache": True, "vocab_size": 50257}


def _neox(h, inter, layers, heads, vocab=50304) -> dict:
    return {"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "classifier_dropout": 0.1,
            "eos_token_id": 0, "hidden_act": "gelu", "hidden_size": h,
            "initializer_range": 0.02, "intermediate_size": inter, "layer_norm_eps": 1e-05,
            "max_position_embeddings": 2048, "model_type": "gpt_neox",
            "num_attention_heads": heads, "num_hidden_layers": layers, "rotary_emb_base": 10000,
            "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
            "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True,
            "vocab_size": vocab}


_GPTJ = {"activation_function": "gelu_new", "architectures": ["GPTJForCausalLM"], "attn_pdrop": 0.0,
         "bos_token_id": 50256, "embd_pdrop": 0.0, "eos_token_id": 50256,
         "gradient_checkpointing": False, "initializer_range": 0.02, "layer_norm_epsilon": 1e-05,
         "model_type": "gptj", "n_embd": 4096, "n_head": 16, "n_inner": None, "n_layer": 28,
         "n_positions": 2048, "resid_pdrop": 0.0, "rotary": True, "rotary_dim": 64,
         "scale_attn_weights": True, "summary_activation": None, "summary_first_dropout": 0.1,
         "summary_proj_to_labels": True, "summary_type": "cls_index", "summary_use_proj": True,
         "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50,
                                                      "temperature": 1.0}},
         "tie_word_embeddings": False, "tokenizer_class": "GPT2Tokenizer",
         "transformers_version": "4.18.0.dev0", "use_cache": True, "vocab_size": 50400}


def _bloom(h, layers, heads) -> dict:
    return {"apply_residual_connection_post_layernorm": False, "architectures": ["BloomForCausalLM"],
            "attention_dropout": 0.0, "attention_softmax_in_fp32": True,
            "bias_dropout_fusion": True, "bos_token_id": 1, "eos_token_id": 2,
            "hidden_dropout": 0.0, "hidden_size": h, "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-05, "masked_softmax_fusion": True, "model_type": "bloom",
            "n_head": heads, "n_inner": None, "n_layer": layers, "offset_alibi": 100,
            "pad_token_id": 3, "pretraining_tp": 1, "skip_bias_add": True,
            "skip_bias_add_qkv": False, "slow_but_exact": False, "torch_dtype": "float16",
            "transformers_version": "4.21.0", "unk_token_id": 0, "use_cache": True,
            "vocab_size": 250880}


def _opt(h, ffn, layers, heads, proj=None, before=True) -> dict:
    return {"_remove_final_layer_norm": False, "activation_dropout": 0.0,
            "activation_function": "relu", "architectures": ["OPTForCausalLM"],
            "attention_dropout": 0.0, "bos_token_id": 2, "do_layer_norm_before": before,
            "dropout": 0.1, "enable_bias": True, "eos_token_id": 2, "ffn_dim": ffn,
            "hidden_size": h, "init_std": 0.02, "layer_norm_elementwise_affine": True,
            "layerdrop": 0.0, "max_position_embeddings": 2048, "model_type": "opt",
            "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 1,
            "prefix": "</s>", "torch_dtype": "float16", "transformers_version": "4.21.0.dev0",
            "use_cache": True, "vocab_size": 50272, "word_embed_proj_dim": proj or h}


def _bigcode(n_embd, n_inner, n_layer, n_head) -> dict:
    return {"activation_function": "gelu_pytorch_tanh", "architectures": ["GPTBigCodeForCausalLM"],
            "attention_softmax_in_fp32": True, "attn_pdrop": 0.1, "bos_token_id": 0,
            "embd_pdrop": 0.1, "eos_token_id": 0, "inference_runner": 0,
            "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "max_batch_size": None,
            "max_sequence_length": None, "model_type": "gpt_bigcode", "multi_query": True,
            "n_embd": n_embd, "n_head": n_head, "n_inner": n_inner, "n_layer": n_layer,
            "n_positions": 8192, "pad_key_length": True, "pre_allocate_kv_cache": False,
            "resid_pdrop": 0.1, "scale_attention_softmax_in_fp32": True,
            "scale_attn_weights": True, "torch_dtype": "float32",
            "transformers_version": "4.28.1", "use_cache": True, "validate_runner_input": True,
            "vocab_size": 49152}


_T5_TASKS = {
    "summarization": {"early_stopping": True, "length_penalty": 2.0, "max_length": 200,
                      "min_length": 30, "no_repeat_ngram_size": 3, "num_beams": 4,
                      "prefix": "summarize: "},
    "translation_en_to_de": {"early_stopping": True, "max_length": 300, "num_beams": 4,
                             "prefix": "translate English to German: "},
    "translation_en_to_fr": {"early_stopping": True, "max_length": 300, "num_beams": 4,
                             "prefix": "translate English to French: "},
    "translation_en_to_ro": {"early_stopping": True, "max_length": 300, "num_beams": 4,
                             "prefix": "translate English to Romanian: "}}


def _t5(d_model, d_ff, layers, heads, *, flan=False, model_type="t5", vocab=32128) -> dict:
    arch = "MT5ForConditionalGeneration" if model_type == "mt5" else "T5ForConditionalGeneration"
    cfg = {"architectures": [arch], "d_ff": d_ff, "d_kv": 64, "d_model": d_model,
           "decoder_start_token_id": 0, "dense_act_fn": "gelu_new" if flan else "relu",
           "dropout_rate": 0.1, "eos_token_id": 1,
           "feed_forward_proj": "gated-gelu" if flan else "relu",
           "initializer_factor": 1.0, "is_encoder_decoder": True,
           "is_gated_act": flan, "layer_norm_epsilon": 1e-06, "model_type": model_type,
           "n_positions": 512, "num_decoder_layers": layers, "num_heads": heads,
           "num_layers": layers, "output_past": True, "pad_token_id": 0,
           "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
           "tie_word_embeddings": not flan, "torch_dtype": "float32",
           "transformers_version": "4.23.1", "use_cache": True, "vocab_size": vocab}
    if model_type == "t5":
        cfg["task_specific_params"] = _T5_TASKS
    if model_type == "mt5":
        cfg["tokenizer_class"] = "T5Tokenizer"
    return cfg


def _bart(d_model, ffn, layers, heads, arch="BartModel", **extra) -> dict:
    cfg = {"activation_dropout": 0.1, "activation_function": "gelu", "add_bias_logits": False,
           "add_final_layer_norm": False, "architectures": [arch], "attention_dropout": 0.1,
           "bos_token_id": 0, "classif_dropout": 0.1, "classifier_dropout": 0.0,
           "d_model": d_model, "decoder_attention_heads": heads, "decoder_ffn_dim": ffn,
           "decoder_layerdrop": 0.0, "decoder_layers": layers, "decoder_start_token_id": 2,
           "dropout": 0.1, "early_stopping": True, "encoder_attention_heads": heads,
           "encoder_ffn_dim": ffn, "encoder_layerdrop": 0.0, "encoder_layers": layers,
           "eos_token_id": 2, "forced_bos_token_id": 0, "forced_eos_token_id": 2,
           "gradient_checkpointing": False, "init_std": 0.02, "is_encoder_decoder": True,
           "max_position_embeddings": 1024, "model_type": "bart", "no_repeat_ngram_size": 3,
           "normalize_before": False, "normalize_embedding": True, "num_beams": 4,
           "num_hidden_layers": layers, "pad_token_id": 1, "scale_embedding": False,
           "task_specific_params": {
               "summarization": {"length_penalty": 1.0, "max_length": 128, "min_length": 12,
                                 "num_beams": 4},
               "summarization_cnn": {"length_penalty": 2.0, "max_length": 142,
                                     "min_length": 56, "num_beams": 4},
               "summarization_xsum": {"length_penalty": 1.0, "max_length": 62,
                                      "min_length": 11, "num_beams": 6}},
           "transformers_version": "4.12.0.dev0", "use_cache": True, "vocab_size": 50265}
    cfg.update(extra)
    return cfg


def _marian(vocab) -> dict:
    return {"activation_dropout": 0.0, "activation_function": "swish", "add_bias_logits": False,
            "add_final_layer_norm": False, "architectures": ["MarianMTModel"],
            "attention_dropout": 0.0, "bad_words_ids": [[vocab - 1]], "bos_token_id": 0,
            "classif_dropout": 0.0, "classifier_dropout": 0.0, "d_model": 512,
            "decoder_attention_heads": 8, "decoder_ffn_dim": 2048, "decoder_layerdrop": 0.0,
            "decoder_layers": 6, "decoder_start_token_id": vocab - 1,
            "decoder_vocab_size": vocab, "dropout": 0.1, "encoder_attention_heads": 8,
            "encoder_ffn_dim": 2048, "encoder_layerdrop": 0.0, "encoder_layers": 6,
            "eos_token_id": 0, "forced_eos_token_id": 0, "init_std": 0.02,
            "is_encoder_decoder": True, "max_length": 512, "max_position_embeddings": 512,
            "model_type": "marian", "normalize_before": False, "normalize_embedding": False,
            "num_beams": 4, "num_hidden_layers": 6, "pad_token_id": vocab - 1,
            "scale_embedding": True, "share_encoder_decoder_embeddings": True,
            "static_position_embeddings": True, "torch_dtype": "float16",
            "transformers_version": "4.22.0.dev0", "use_cache": True, "vocab_size": vocab}


def _pegasus(max_length, arch="PegasusForConditionalGeneration") -> dict:
    return {"activation_dropout": 0.1, "activation_function": "relu", "add_bias_logits": False,
            "add_final_layer_norm": True, "architectures": [arch], "attention_dropout": 0.1,
            "bos_token_id": 0, "d_model": 1024, "decoder_attention_heads": 16,
            "decoder_ffn_dim": 4096, "decoder_layerdrop": 0.0, "decoder_layers": 16,
            "decoder_start_token_id": 0, "dropout": 0.1, "encoder_attention_heads": 16,
            "encoder_ffn_dim": 4096, "encoder_layerdrop": 0.0, "encoder_layers": 16,
            "eos_token_id": 1, "extra_pos_embeddings": 1, "force_bos_token_to_be_generated": False,
            "forced_eos_token_id": 1, "init_std": 0.02, "is_encoder_decoder": True,
            "length_penalty": 0.8, "max_length": max_length, "max_position_embeddings": 1024,
            "model_type": "pegasus", "normalize_before": True, "normalize_embedding": False,
            "num_beams": 8, "num_hidden_layers": 16, "pad_token_id": 0, "scale_embedding": True,
            "static_position_embeddings": True, "transformers_version": "4.11.0.dev0",
            "use_cache": True, "vocab_size": 96103}


def _bert(h, layers, heads, inter, vocab, *, model_type="bert", arch="BertForMaskedLM",
          eps=1e-12, mpe=512, pad=0, type_vocab=2, **extra) -> dict:
    cfg = {"architectures": [arch], "attention_probs_dropout_prob": 0.1, "classifier_dropout": None,
           "gradient_checkpointing": False, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
           "hidden_size": h, "initializer_range": 0.02, "intermediate_size": inter,
           "layer_norm_eps": eps, "max_position_embeddings": mpe, "model_type": model_type,
           "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": pad,
           "position_embedding_type": "absolute", "transformers_version": "4.6.0.dev0",
           "type_vocab_size": type_vocab, "use_cache": True, "vocab_size": vocab}
    cfg.update(extra)
    return cfg


def _roberta(h, layers, heads, inter, vocab, *, model_type="roberta",
             arch="RobertaForMaskedLM") -> dict:
    return _bert(h, layers, heads, inter, vocab, model_type=model_type, arch=arch, eps=1e-05,
                 mpe=514, pad=1, type_vocab=1, bos_token_id=0, eos_token_id=2)


def _distilbert(vocab) -> dict:
    return {"activation": "gelu", "architectures": ["DistilBertForMaskedLM"],
            "attention_dropout": 0.1, "dim": 768, "dropout": 0.1, "hidden_dim": 3072,
            "initializer_range": 0.02, "max_position_embeddings": 512, "model_type": "distilbert",
            "n_heads": 12, "n_layers": 6, "pad_token_id": 0, "qa_dropout": 0.1,
            "seq_classif_dropout": 0.2, "sinusoidal_pos_embds": False, "tie_weights_": True,
            "transformers_version": "4.10.0.dev0", "vocab_size": vocab}


def _deberta(h, layers, heads, inter, vocab) -> dict:
    # The real deberta-v3 configs carry no "architectures".
    return {"attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "hidden_size": h, "initializer_range": 0.02, "intermediate_size": inter,
            "layer_norm_eps": 1e-07, "max_position_embeddings": 512, "max_relative_positions": -1,
            "model_type": "deberta-v2", "norm_rel_ebd": "layer_norm",
            "num_attention_heads": heads, "num_hidden_layers": layers, "pad_token_id": 0,
            "pooler_dropout": 0, "pooler_hidden_act": "gelu", "pooler_hidden_size": h,
            "pos_att_type": ["p2c", "c2p"], "position_biased_input": False,
            "position_buckets": 256, "relative_attention": True, "share_att_key": True,
            "type_vocab_size": 0, "vocab_size": vocab}


def _electra(emb, h, layers, heads, inter) -> dict:
    return _bert(h, layers, heads, inter, 30522, model_type="electra",
                 arch="ElectraForPreTraining", embedding_size=emb, summary_activation="gelu",
                 summary_last_dropout=0.1, summary_type="first", summary_use_proj=True)


def _albert(h, heads, inter, layers=12) -> dict:
    return {"architectures": ["AlbertForMaskedLM"], "attention_probs_dropout_prob": 0,
            "bos_token_id": 2, "classifier_dropout_prob": 0.1, "down_scale_factor": 1,
            "embedding_size": 128, "eos_token_id": 3, "gap_size": 0, "hidden_act": "gelu_new",
            "hidden_dropout_prob": 0, "hidden_size": h, "initializer_range": 0.02,
            "inner_group_num": 1, "intermediate_size": inter, "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512, "model_type": "albert", "net_structure_type": 0,
            "num_attention_heads": heads, "num_hidden_groups": 1, "num_hidden_layers": layers,
            "num_memory_blocks": 0, "pad_token_id": 0, "position_embedding_type": "absolute",
            "transformers_version": "4.6.0.dev0", "type_vocab_size": 2, "vocab_size": 30000}


def _mpnet(arch) -> dict:
    return {"architectures": [arch], "attention_probs_dropout_prob": 0.1, "bos_token_id": 0,
            "eos_token_id": 2, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
            "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
            "layer_norm_eps": 1e-05, "max_position_embeddings": 514, "model_type": "mpnet",
            "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
            "relative_attention_num_buckets": 32, "torch_dtype": "float32",
            "transformers_version": "4.8.2", "vocab_size": 30527}


def _vit(h, layers, heads, inter, patch) -> dict:
    return {"architectures": ["ViTModel"], "attention_probs_dropout_prob": 0.0,
            "encoder_stride": patch, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "hidden_size": h, "image_size": 224, "initializer_range": 0.02,
            "intermediate_size": inter, "layer_norm_eps": 1e-12, "model_type": "vit",
            "num_attention_heads": heads, "num_channels": 3, "num_hidden_layers": layers,
            "patch_size": patch, "qkv_bias": True, "transformers_version": "4.13.0.dev0"}


def _swin(embed, depths, heads, window=7, image=224) -> dict:
    return {"architectures": ["SwinModel"], "attention_probs_dropout_prob": 0.0,
            "depths": depths, "drop_path_rate": 0.1, "embed_dim": embed, "encoder_stride": 32,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": embed * 8,
            "image_size": image, "initializer_range": 0.02, "layer_norm_eps": 1e-05,
            "mlp_ratio": 4.0, "model_type": "swin", "num_channels": 3, "num_heads": heads,
            "num_layers": len(depths), "patch_size": 4, "path_norm": True, "qkv_bias": True,
            "torch_dtype": "float32", "transformers_version": "4.18.0.dev0",
            "use_absolute_embeddings": False, "window_size": window}


def _clip(text_h, text_heads, vision_h, vision_layers, vision_heads, patch, proj) -> dict:
    return {"architectures": ["CLIPModel"], "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592, "model_type": "clip", "projection_dim": proj,
            "text_config": {"attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
                            "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": text_h,
                            "initializer_factor": 1.0, "initializer_range": 0.02,
                            "intermediate_size": text_h * 4, "layer_norm_eps": 1e-05,
                            "max_position_embeddings": 77, "model_type": "clip_text_model",
                            "num_attention_heads": text_heads, "num_hidden_layers": 12,
                            "projection_dim": proj, "vocab_size": 49408},
            "torch_dtype": "float32", "transformers_version": "4.21.3",
            "vision_config": {"attention_dropout": 0.0, "dropout": 0.0,
                              "hidden_act": "quick_gelu", "hidden_size": vision_h,
                              "image_size": 224, "initializer_factor": 1.0,
                              "initializer_range": 0.02, "intermediate_size": vision_h * 4,
                              "layer_norm_eps": 1e-05, "model_type": "clip_vision_model",
                              "num_attention_heads": vision_heads, "num_channels": 3,
                              "num_hidden_layers": vision_layers, "patch_size": patch,
                              "projection_dim": proj}}


_WHISPER_SUPPRESS = [1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90,
                     91, 92, 93, 359, 503, 522, 542, 873, 893, 902, 918, 922, 931, 1350, 1853,
                     1982, 2460, 2627, 3246, 3253, 3268, 3536, 3846, 3961, 4183, 4667, 6585,
                     6647, 7273, 9061, 9383, 10428, 10929, 11938, 12033, 12331, 12562, 13793,
                     14157, 14635, 15265, 15618, 16553, 16604, 18362, 18956, 20075, 21675,
                     22520, 26130, 26161, 26435, 28279, 29464, 31650, 32302, 32470, 36865,
                     42863, 47425, 49870, 50254, 50258, 50358, 50359, 50360, 50361, 50362]


def _whisper(d, layers, heads, *, mels=80, vocab=51865) -> dict:
    return {"activation_dropout": 0.0, "activation_function": "gelu", "apply_spec_augment": False,
            "architectures": ["WhisperForConditionalGeneration"], "attention_dropout": 0.0,
            "begin_suppress_tokens": [220, 50257], "bos_token_id": 50257,
            "classifier_proj_size": 256, "d_model": d, "decoder_attention_heads": heads,
            "decoder_ffn_dim": d * 4, "decoder_layerdrop": 0.0, "decoder_layers": layers,
            "decoder_start_token_id": 50258, "dropout": 0.0, "encoder_attention_heads": heads,
            "encoder_ffn_dim": d * 4, "encoder_layerdrop": 0.0, "encoder_layers": layers,
            "eos_token_id": 50257,
            "forced_decoder_ids": [[1, 50259], [2, 50359], [3, 50363]], "init_std": 0.02,
            "is_encoder_decoder": True, "max_length": 448, "max_source_positions": 1500,
            "max_target_positions": 448, "model_type": "whisper", "num_hidden_layers": layers,
            "num_mel_bins": mels, "pad_token_id": 50257, "scale_embedding": False,
            "suppress_tokens": _WHISPER_SUPPRESS, "torch_dtype": "float32",
            "transformers_version": "4.27.0.dev0", "use_cache": True,
            "use_weighted_layer_sum": False, "vocab_size": vocab}


def _wav2vec2(h, layers, heads, *, large=False) -> dict:
    return {"activation_dropout": 0.0 if large else 0.1, "apply_spec_augment": True,
            "architectures": ["Wav2Vec2ForPreTraining"], "attention_dropout": 0.1,
            "bos_token_id": 1, "codevector_dim": 768 if large else 256,
            "contrastive_logits_temperature": 0.1, "conv_bias": large,
            "conv_dim": [512] * 7, "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
            "conv_stride": [5, 2, 2, 2, 2, 2, 2], "ctc_loss_reduction": "sum",
            "ctc_zero_infinity": False, "diversity_loss_weight": 0.1,
            "do_stable_layer_norm": large, "eos_token_id": 2, "feat_extract_activation": "gelu",
            "feat_extract_dropout": 0.0, "feat_extract_norm": "layer" if large else "group",
            "feat_proj_dropout": 0.1, "final_dropout": 0.0, "hidden_act": "gelu",
            "hidden_dropout": 0.1, "hidden_size": h, "initializer_range": 0.02,
            "intermediate_size": h * 4, "layer_norm_eps": 1e-05, "layerdrop": 0.1,
            "mask_feature_length": 10, "mask_feature_prob": 0.0, "mask_time_length": 10,
            "mask_time_prob": 0.05, "model_type": "wav2vec2", "num_attention_heads": heads,
            "num_codevector_groups": 2, "num_codevectors_per_group": 320,
            "num_conv_pos_embedding_groups": 16, "num_conv_pos_embeddings": 128,
            "num_feat_extract_layers": 7, "num_hidden_layers": layers, "num_negatives": 100,
            "pad_token_id": 0, "proj_codevector_dim": 768 if large else 256,
            "transformers_version": "4.7.0.dev0", "vocab_size": 32}


def _timm(arch, features, tag, pool, first_conv, classifier) -> dict:
    return {"architecture": arch, "num_classes": 1000, "num_features": features,
            "global_pool": "avg",
            "pretrained_cfg": {"tag": tag, "custom_load": False, "input_size": [3, 224, 224],
                               "fixed_input_size": False, "interpolation": "bicubic",
                               "crop_pct": 0.95, "crop_mode": "center",
                               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                               "num_classes": 1000, "pool_size": pool,
                               "first_conv": first_conv, "classifier": classifier}}


# =========================================================================== model types


@dataclass(frozen=True)
class _Variant:
    """A real base checkpoint: name stem, full config, size, licences, era, real id."""

    stem: str
    config: dict | None
    params: int
    licences: _Weighted
    external: str
    years: tuple[float, float]
    base_head: _Head | None = None
    languages: tuple[str, ...] = ()
    special_tokens: dict | None = None  # when they differ from the model type's


def _v(stem: str, config: dict | None, params: float, licences: dict[str, float] | str,
       external: str, years: tuple[float, float], *, head: _Head | None = None,
       languages: Sequence[str] = (), tokens: dict | None = None) -> _Variant:
    if isinstance(licences, str):
        licences = {licences: 1.0}
    return _Variant(stem, config, int(params), _Weighted(licences), external, years, head,
                    tuple(languages), tokens)


@dataclass(frozen=True)
class _ModelType:
    """A model type: its variants, heads of bases and of fine-tunes, files and tokens."""

    name: str
    kind: str
    variants: _Weighted
    base_head: _Head
    heads: _Weighted
    tokenizer_files: tuple[str, ...]
    languages: _Weighted
    gguf_arch: str | None = None
    special_tokens: dict | None = None


_EN = _Weighted({("en",): 10, (): 6, ("en", "fr", "de", "es"): 1, ("zh",): 1, ("ko",): 0.5,
                 ("ja",): 0.5, ("ru",): 0.5, ("vi",): 0.3, ("ar",): 0.3})
_MULTI = _Weighted({("multilingual",): 3, (): 4, ("en",): 2, ("de",): 1, ("fr",): 1, ("es",): 1,
                    ("ar",): 1, ("hi",): 1, ("tr",): 0.5, ("sv",): 0.5, ("fi",): 0.5, ("pt",): 1,
                    ("id",): 0.5, ("sw",): 0.3, ("ja",): 0.5, ("zh",): 0.5})
_LLM_TOKENS_SPM = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": None, "unk_token": "<unk>"}

_CAUSAL = "text-generation"
_LLM_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _llm_heads(prefix: str) -> _Weighted:
    return _Weighted([(_Head.of(f"{prefix}ForCausalLM", _CAUSAL), 0.94),
                      (_Head.of(f"{prefix}ForSequenceClassification", "text-classification", "seq"), 0.06)])


def _encoder_heads(prefix: str, *, mlm: bool = True) -> _Weighted:
    heads = [(_Head.of(f"{prefix}ForSequenceClassification", "text-classification", "seq"), 0.42),
             (_Head.of(f"{prefix}ForTokenClassification", "token-classification", "token"), 0.18),
             (_Head.of(f"{prefix}ForQuestionAnswering", "question-answering"), 0.12),
             (_Head.of(f"{prefix}Model", "sentence-similarity", library="sentence-transformers"), 0.12),
             (_Head.of(f"{prefix}ForSequenceClassification", "zero-shot-classification", "nli"), 0.06)]
    if mlm:
        heads.append((_Head.of(f"{prefix}ForMaskedLM", "fill-mask"), 0.10))
    return _Weighted(heads)


def _mt(name, kind, variants, base_head, heads, tokenizer_files, languages=_EN, gguf_arch=None,
        special_tokens=None) -> _ModelType:
    return _ModelType(name, kind, _Weighted([(v, 1.0) for v in variants]), base_head, heads,
                      tuple(tokenizer_files), languages, gguf_arch, special_tokens)


def _model_types() -> list[tuple[_ModelType, float]]:
    """Every generated model type with its weight among family roots (unnormalised)."""
    seq2seq_heads = _Weighted([(_Head.of("T5ForConditionalGeneration", "text2text-generation"), 4),
                               (_Head.of("T5ForConditionalGeneration", "summarization"), 3),
                               (_Head.of("T5ForConditionalGeneration", "translation"), 2)])
    mt5_heads = _Weighted([(_Head.of("MT5ForConditionalGeneration", "text2text-generation"), 4),
                           (_Head.of("MT5ForConditionalGeneration", "summarization"), 3),
                           (_Head.of("MT5ForConditionalGeneration", "translation"), 2)])
    bart_heads = _Weighted([(_Head.of("BartForConditionalGeneration", "summarization"), 5),
                            (_Head.of("BartForConditionalGeneration", "text2text-generation"), 3),
                            (_Head.of("BartForSequenceClassification", "zero-shot-classification", "nli"), 1.5)])
    llama3_tokens = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}
    return [
        (_mt("llama", "llm", [
            _v("Llama-2-7b", _llama(4096, 11008, 32, 32, 32, 32000, 4096, 10000.0, dtype="float16", tv="4.31.0"),
               6.74e9, {"llama2": 9, "other": 1}, "meta-llama/Llama-2-7b-hf", (2023.55, 2024.4),
               tokens=_LLM_TOKENS_SPM),
            _v("Llama-2-13b", _llama(5120, 13824, 40, 40, 40, 32000, 4096, 10000.0, dtype="float16", tv="4.31.0"),
               13.0e9, "llama2", "meta-llama/Llama-2-13b-hf", (2023.55, 2024.4), tokens=_LLM_TOKENS_SPM),
            _v("Meta-Llama-3-8B", _llama(4096, 14336, 32, 32, 8, 128256, 8192, 500000.0, bos=128000, eos=128001),
               8.03e9, {"llama3": 9, "other": 1}, "meta-llama/Meta-Llama-3-8B", (2024.3, 2025.0)),
            _v("Llama-3.1-8B", _llama(4096, 14336, 32, 32, 8, 128256, 131072, 500000.0, bos=128000, eos=128001,
                                      rope=_LLAMA_31_ROPE, tv="4.43.0.dev0"),
               8.03e9, "llama3.1", "meta-llama/Llama-3.1-8B", (2024.55, 2025.4)),
            _v("Llama-3.1-70B", _llama(8192, 28672, 80, 64, 8, 128256, 131072, 500000.0, bos=128000, eos=128001,
                                       rope=_LLAMA_31_ROPE, tv="4.43.0.dev0"),
               70.6e9, "llama3.1", "meta-llama/Llama-3.1-70B", (2024.55, 2025.4)),
            _v("Llama-3.2-1B", _llama(2048, 8192, 16, 32, 8, 128256, 131072, 500000.0, bos=128000, eos=128001,
                                      tie=True, rope=_LLAMA_32_ROPE, tv="4.45.0.dev0", head_dim=64),
               1.24e9, "llama3.2", "meta-llama/Llama-3.2-1B", (2024.75, 2025.45)),
            _v("Llama-3.2-3B", _llama(3072, 8192, 28, 24, 8, 128256, 131072, 500000.0, bos=128000, eos=128001,
                                      tie=True, rope=_LLAMA_32_ROPE, tv="4.45.0.dev0", head_dim=128),
               3.21e9, "llama3.2", "meta-llama/Llama-3.2-3B", (2024.75, 2025.45)),
            _v("TinyLlama-1.1B", _llama(2048, 5632, 22, 32, 4, 32000, 2048, 10000.0, tv="4.35.0"),
               1.1e9, "apache-2.0", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", (2024.0, 2024.9), tokens=_LLM_TOKENS_SPM),
            _v("open-llama-3b", _llama(3200, 8640, 26, 32, 32, 32000, 2048, 10000.0, dtype="float16", tv="4.30.0.dev0"),
               3.43e9, "apache-2.0", "openlm-research/open_llama_3b", (2023.45, 2024.2), tokens=_LLM_TOKENS_SPM),
            _v("DeepSeek-R1-Distill-Llama-8B", _llama(4096, 14336, 32, 32, 8, 128256, 131072, 500000.0, bos=128000,
                                                      eos=128001, rope=_LLAMA_31_ROPE, tv="4.43.0.dev0"),
               8.03e9, "mit", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B", (2025.05, 2025.45)),
        ], _Head.of("LlamaForCausalLM", _CAUSAL), _llm_heads("Llama"), _LLM_FILES + ("tokenizer.model",),
            gguf_arch="llama", special_tokens=llama3_tokens), 16),
        (_mt("mistral", "llm", [
            _v("Mistral-7B-v0.1", _mistral(4096, 14336, 32, 32, 8, 32000, 32768, 10000.0, 4096),
               7.24e9, "apache-2.0", "mistralai/Mistral-7B-v0.1", (2023.75, 2024.6)),
            _v("Mistral-7B-v0.3", _mistral(4096, 14336, 32, 32, 8, 32768, 32768, 1000000.0, None, tv="4.42.0.dev0"),
               7.25e9, "apache-2.0", "mistralai/Mistral-7B-v0.3", (2024.4, 2025.2)),
            _v("Mistral-Nemo-Base-2407", _mistral(5120, 14336, 40, 32, 8, 131072, 1024000, 1000000.0, None,
                                                  tv="4.43.0.dev0", head_dim=128),
               12.25e9, "apache-2.0", "mistralai/Mistral-Nemo-Base-2407", (2024.55, 2025.4)),
            _v("Mistral-Small-24B-Base-2501", _mistral(5120, 32768, 40, 32, 8, 131072, 32768, 100000000.0, None,
                                                       tv="4.49.0.dev0", head_dim=128),
               23.57e9, "apache-2.0", "mistralai/Mistral-Small-24B-Base-2501", (2025.08, 2025.45)),
        ], _Head.of("MistralForCausalLM", _CAUSAL), _llm_heads("Mistral"), _LLM_FILES + ("tokenizer.model",),
            gguf_arch="llama", special_tokens=_LLM_TOKENS_SPM), 8),
        (_mt("mixtral", "llm", [
            _v("Mixtral-8x7B-v0.1", _mixtral(4096, 14336, 32, 32, 32000, 32768),
               46.7e9, "apache-2.0", "mistralai/Mixtral-8x7B-v0.1", (2023.95, 2024.8)),
            _v("Mixtral-8x22B-v0.1", _mixtral(6144, 16384, 56, 48, 32768, 65536),
               140.6e9, "apache-2.0", "mistralai/Mixtral-8x22B-v0.1", (2024.3, 2025.0)),
        ], _Head.of("MixtralForCausalLM", _CAUSAL), _llm_heads("Mixtral"), _LLM_FILES + ("tokenizer.model",),
            gguf_arch="llama", special_tokens=_LLM_TOKENS_SPM), 2),
        (_mt("qwen2", "llm", [
            _v("Qwen2-7B", _qwen2(3584, 18944, 28, 28, 4, 152064, 131072, tv="4.37.2"),
               7.62e9, "apache-2.0", "Qwen/Qwen2-7B", (2024.45, 2025.0)),
            _v("Qwen2.5-0.5B", _qwen2(896, 4864, 24, 14, 2, 151936, 32768, tie=True),
               0.49e9, "apache-2.0", "Qwen/Qwen2.5-0.5B", (2024.7, 2025.45)),
            _v("Qwen2.5-1.5B", _qwen2(1536, 8960, 28, 12, 2, 151936, 131072, tie=True),
               1.54e9, "apache-2.0", "Qwen/Qwen2.5-1.5B", (2024.7, 2025.45)),
            _v("Qwen2.5-3B", _qwen2(2048, 11008, 36, 16, 2, 151936, 32768, tie=True),
               3.09e9, {"other": 4, "apache-2.0": 1}, "Qwen/Qwen2.5-3B", (2024.7, 2025.45)),
            _v("Qwen2.5-7B", _qwen2(3584, 18944, 28, 28, 4, 152064, 131072),
               7.62e9, "apache-2.0", "Qwen/Qwen2.5-7B", (2024.7, 2025.45)),
            _v("Qwen2.5-14B", _qwen2(5120, 13824, 48, 40, 8, 152064, 131072),
               14.77e9, "apache-2.0", "Qwen/Qwen2.5-14B", (2024.7, 2025.45)),
            _v("Qwen2.5-72B", _qwen2(8192, 29568, 80, 64, 8, 152064, 131072),
               72.7e9, "other", "Qwen/Qwen2.5-72B", (2024.7, 2025.45)),
            _v("DeepSeek-R1-Distill-Qwen-7B", _qwen2(3584, 18944, 28, 28, 4, 152064, 131072, tv="4.44.0"),
               7.62e9, "mit", "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", (2025.05, 2025.45)),
        ], _Head.of("Qwen2ForCausalLM", _CAUSAL), _llm_heads("Qwen2"), _LLM_FILES + ("vocab.json", "merges.txt"),
            languages=_Weighted({("en",): 4, (): 4, ("zh", "en"): 2, ("zh",): 1}), gguf_arch="qwen2",
            special_tokens={"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}), 9),
        (_mt("gemma", "llm", [
            _v("gemma-2b", _gemma(2048, 16384, 18, 8, 1), 2.51e9, "gemma", "google/gemma-2b", (2024.15, 2024.9)),
            _v("gemma-7b", _gemma(3072, 24576, 28, 16, 16), 8.54e9, "gemma", "google/gemma-7b", (2024.15, 2024.9)),
        ], _Head.of("GemmaForCausalLM", _CAUSAL), _llm_heads("Gemma"), _LLM_FILES + ("tokenizer.model",),
            gguf_arch="gemma", special_tokens={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}), 3),
        (_mt("gemma2", "llm", [
            _v("gemma-2-2b", _gemma2(2304, 9216, 26, 8, 4), 2.61e9, "gemma", "google/gemma-2-2b", (2024.6, 2025.45)),
            _v("gemma-2-9b", _gemma2(3584, 14336, 42, 16, 8), 9.24e9, "gemma", "google/gemma-2-9b", (2024.5, 2025.45)),
            _v("gemma-2-27b", _gemma2(4608, 36864, 46, 32, 16, 128, 144), 27.2e9, "gemma", "google/gemma-2-27b",
               (2024.5, 2025.45)),
        ], _Head.of("Gemma2ForCausalLM", _CAUSAL), _llm_heads("Gemma2"), _LLM_FILES + ("tokenizer.model",),
            gguf_arch="gemma2", special_tokens={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}), 3),
        (_mt("phi", "llm", [
            _v("phi-1_5", _phi(2048, 8192, 24), 1.42e9, "mit", "microsoft/phi-1_5", (2023.7, 2024.5)),
            _v("phi-2", _phi(2560, 10240, 32), 2.78e9, "mit", "microsoft/phi-2", (2024.0, 2024.8)),
        ], _Head.of("PhiForCausalLM", _CAUSAL), _llm_heads("Phi"), _LLM_FILES + ("vocab.json", "merges.txt"),
            gguf_arch="phi2", special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}), 2),
        (_mt("phi3", "llm", [
            _v("Phi-3-mini-4k", _phi3(3072, 8192, 32, 32, 32, 4096), 3.82e9, "mit",
               "microsoft/Phi-3-mini-4k-instruct", (2024.3, 2025.2)),
            _v("Phi-3-mini-128k", _phi3(3072, 8192, 32, 32, 32, 131072, _PHI3_LONGROPE), 3.82e9, "mit",
               "microsoft/Phi-3-mini-128k-instruct", (2024.3, 2025.2)),
            _v("Phi-3-medium-4k", _phi3(5120, 17920, 40, 40, 10, 4096), 13.96e9, "mit",
               "microsoft/Phi-3-medium-4k-instruct", (2024.4, 2025.2)),
        ], _Head.of("Phi3ForCausalLM", _CAUSAL), _llm_heads("Phi3"), _LLM_FILES + ("tokenizer.model",),
            gguf_arch="phi3", special_tokens={"bos_token": "<s>", "eos_token": "<|endoftext|>"}), 3),
        (_mt("falcon", "llm", [
            _v("falcon-7b", _falcon(4544, 32, 71), 6.92e9, "apache-2.0", "tiiuae/falcon-7b", (2023.45, 2024.3)),
            _v("falcon-40b", _falcon(8192, 60, 128, new_arch=True, kv=8), 41.3e9, "apache-2.0",
               "tiiuae/falcon-40b", (2023.45, 2024.3)),
            _v("falcon-rw-1b", _falcon(2048, 24, 32, alibi=True, multi_query=False, parallel=False, vocab=50304),
               1.31e9, "apache-2.0", "tiiuae/falcon-rw-1b", (2023.45, 2024.3)),
        ], _Head.of("FalconForCausalLM", _CAUSAL), _llm_heads("Falcon"), _LLM_FILES, gguf_arch="falcon",
            special_tokens={"eos_token": "<|endoftext|>"}), 1.5),
        (_mt("gpt2", "llm", [
            _v("gpt2", _gpt2(768, 12, 12), 124.4e6, "mit", "openai-community/gpt2", (2020.0, 2023.5)),
            _v("gpt2-medium", _gpt2(1024, 24, 16), 354.8e6, "mit", "openai-community/gpt2-medium", (2020.0, 2023.5)),
            _v("gpt2-large", _gpt2(1280, 36, 20), 774.0e6, "mit", "openai-community/gpt2-large", (2020.0, 2023.5)),
            _v("gpt2-xl", _gpt2(1600, 48, 25), 1.56e9, "mit", "openai-community/gpt2-xl", (2020.5, 2023.5)),
            _v("distilgpt2", {**_gpt2(768, 6, 12), "_num_labels": 1}, 81.9e6, "apache-2.0",
               "distilbert/distilgpt2", (2020.0, 2023.5)),
        ], _Head.of("GPT2LMHeadModel", _CAUSAL),
            _Weighted([(_Head.of("GPT2LMHeadModel", _CAUSAL), 0.9),
                       (_Head.of("GPT2ForSequenceClassification", "text-classification", "seq"), 0.1)]),
            ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
            gguf_arch="gpt2", special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}), 6),
        (_mt("gpt_neox", "llm", [
            _v("pythia-70m", _neox(512, 2048, 6, 8), 70.4e6, "apache-2.0", "EleutherAI/pythia-70m", (2023.1, 2024.3)),
            _v("pythia-410m", _neox(1024, 4096, 24, 16), 405.3e6, "apache-2.0", "EleutherAI/pythia-410m",
               (2023.1, 2024.3)),
            _v("pythia-1.4b", _neox(2048, 8192, 24, 16), 1.41e9, "apache-2.0", "EleutherAI/pythia-1.4b",
               (2023.1, 2024.3)),
            _v("pythia-6.9b", _neox(4096, 16384, 32, 32, 50432), 6.86e9, "apache-2.0", "EleutherAI/pythia-6.9b",
               (2023.1, 2024.3)),
            _v("gpt-neox-20b", _neox(6144, 24576, 44, 64, 50432), 20.55e9, "apache-2.0", "EleutherAI/gpt-neox-20b",
               (2022.3, 2024.0)),
        ], _Head.of("GPTNeoXForCausalLM", _CAUSAL), _llm_heads("GPTNeoX"), _LLM_FILES, gguf_arch="gptneox",
            special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}), 2),
        (_mt("gptj", "llm", [
            _v("gpt-j-6b", _GPTJ, 6.05e9, "apache-2.0", "EleutherAI/gpt-j-6b", (2021.8, 2023.8)),
        ], _Head.of("GPTJForCausalLM", _CAUSAL), _llm_heads("GPTJ"), ("vocab.json", "merges.txt", "tokenizer.json",
                                                                       "tokenizer_config.json"),
            gguf_arch="gptj"), 1),
        (_mt("bloom", "llm", [
            _v("bloom-560m", _bloom(1024, 24, 16), 559.2e6, "bigscience-bloom-rail-1.0",
               "bigscience/bloom-560m", (2022.6, 2024.0)),
            _v("bloom-1b7", _bloom(2048, 24, 16), 1.72e9, "bigscience-bloom-rail-1.0", "bigscience/bloom-1b7",
               (2022.6, 2024.0)),
            _v("bloom-7b1", _bloom(4096, 30, 32), 7.07e9, "bigscience-bloom-rail-1.0", "bigscience/bloom-7b1",
               (2022.6, 2024.0)),
            _v("bloomz-560m", _bloom(1024, 24, 16), 559.2e6, "bigscience-bloom-rail-1.0", "bigscience/bloomz-560m",
               (2022.8, 2024.0)),
        ], _Head.of("BloomForCausalLM", _CAUSAL), _llm_heads("Bloom"),
            ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"), languages=_MULTI,
            gguf_arch="bloom", special_tokens={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}), 1.5),
        (_mt("opt", "llm", [
            _v("opt-125m", _opt(768, 3072, 12, 12), 125.2e6, "other", "facebook/opt-125m", (2022.4, 2023.9)),
            _v("opt-350m", _opt(1024, 4096, 24, 16, 512, False), 331.2e6, "other", "facebook/opt-350m",
               (2022.4, 2023.9)),
            _v("opt-1.3b", _opt(2048, 8192, 24, 32), 1.32e9, "other", "facebook/opt-1.3b", (2022.4, 2023.9)),
            _v("opt-6.7b", _opt(4096, 16384, 32, 32), 6.66e9, "other", "facebook/opt-6.7b", (2022.4, 2023.9)),
        ], _Head.of("OPTForCausalLM", _CAUSAL), _llm_heads("OPT"),
            ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"), gguf_arch=None), 2),
        (_mt("gpt_bigcode", "llm", [
            _v("starcoderbase-1b", _bigcode(2048, 8192, 24, 16), 1.14e9, "bigcode-openrail-m",
               "bigcode/starcoderbase-1b", (2023.5, 2024.5)),
            _v("starcoderbase-3b", _bigcode(2816, 11264, 36, 22), 3.04e9, "bigcode-openrail-m",
               "bigcode/starcoderbase-3b", (2023.5, 2024.5)),
            _v("starcoder", _bigcode(6144, 24576, 40, 48), 15.5e9, "bigcode-openrail-m", "bigcode/starcoder",
               (2023.4, 2024.5)),
        ], _Head.of("GPTBigCodeForCausalLM", _CAUSAL), _llm_heads("GPTBigCode"),
            _LLM_FILES + ("vocab.json", "merges.txt"),
            gguf_arch="starcoder", special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}), 1),
        (_mt("t5", "seq2seq", [
            _v("t5-small", _t5(512, 2048, 6, 8), 60.5e6, "apache-2.0", "google-t5/t5-small", (2020.0, 2023.0)),
            _v("t5-base", _t5(768, 3072, 12, 12), 222.9e6, "apache-2.0", "google-t5/t5-base", (2020.0, 2023.0)),
            _v("t5-large", _t5(1024, 4096, 24, 16), 737.7e6, "apache-2.0", "google-t5/t5-large", (2020.0, 2023.0)),
            _v("flan-t5-base", _t5(768, 2048, 12, 12, flan=True), 247.6e6, "apache-2.0", "google/flan-t5-base",
               (2022.85, 2024.5)),
            _v("flan-t5-large", _t5(1024, 2816, 24, 16, flan=True), 783.2e6, "apache-2.0", "google/flan-t5-large",
               (2022.85, 2024.5)),
            _v("flan-t5-xl", _t5(2048, 5120, 24, 32, flan=True), 2.85e9, "apache-2.0", "google/flan-t5-xl",
               (2022.85, 2024.5)),
        ], _Head.of("T5ForConditionalGeneration", "text2text-generation"), seq2seq_heads,
            ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")), 4),
        (_mt("mt5", "seq2seq", [
            _v("mt5-small", _t5(512, 1024, 8, 6, flan=True, model_type="mt5", vocab=250112), 300.2e6, "apache-2.0",
               "google/mt5-small", (2021.0, 2023.5)),
            _v("mt5-base", _t5(768, 2048, 12, 12, flan=True, model_type="mt5", vocab=250112), 582.4e6, "apache-2.0",
               "google/mt5-base", (2021.0, 2023.5)),
            _v("mt5-large", _t5(1024, 2816, 24, 16, flan=True, model_type="mt5", vocab=250112), 1.23e9,
               "apache-2.0", "google/mt5-large", (2021.0, 2023.5)),
        ], _Head.of("MT5ForConditionalGeneration", "text2text-generation"), mt5_heads,
            ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"), languages=_MULTI), 1.5),
        (_mt("bart", "seq2seq", [
            _v("bart-base", _bart(768, 3072, 6, 12), 139.4e6, "apache-2.0", "facebook/bart-base", (2020.5, 2023.5)),
            _v("bart-large", _bart(1024, 4096, 12, 16), 406.3e6, "apache-2.0", "facebook/bart-large",
               (2020.5, 2023.5)),
            _v("bart-large-cnn", _bart(1024, 4096, 12, 16, "BartForConditionalGeneration"), 406.3e6, "mit",
               "facebook/bart-large-cnn", (2020.5, 2023.5),
               head=_Head.of("BartForConditionalGeneration", "summarization")),
        ], _Head.of("BartModel", "feature-extraction"), bart_heads,
            ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")), 2),
        (_mt("marian", "seq2seq", [
            _v(f"opus-mt-{src}-{tgt}", _marian(vocab), 74e6 + vocab * 512, {"cc-by-4.0": 3, "apache-2.0": 1},
               f"Helsinki-NLP/opus-mt-{src}-{tgt}", (2020.5, 2023.5),
               languages=tuple(x for x in (src, tgt) if len(x) == 2))
            for src, tgt, vocab in (("en", "de", 58101), ("en", "fr", 59514), ("en", "es", 65001),
                                    ("de", "en", 58101), ("fr", "en", 59514), ("en", "zh", 65001),
                                    ("zh", "en", 65001), ("en", "ru", 62518), ("ru", "en", 62518),
                                    ("mul", "en", 64110), ("en", "hi", 61950), ("ar", "en", 62834))
        ], _Head.of("MarianMTModel", "translation", auto_model="AutoModelForSeq2SeqLM"),
            _Weighted([(_Head.of("MarianMTModel", "translation", auto_model="AutoModelForSeq2SeqLM"), 1)]),
            ("source.spm", "target.spm", "vocab.json", "tokenizer_config.json")), 3),
        (_mt("pegasus", "seq2seq", [
            _v("pegasus-large", _pegasus(256), 568.7e6, "apache-2.0", "google/pegasus-large", (2020.5, 2023.0)),
            _v("pegasus-xsum", _pegasus(64), 568.7e6, "apache-2.0", "google/pegasus-xsum", (2020.5, 2023.0)),
            _v("pegasus-cnn_dailymail", _pegasus(128), 568.7e6, "apache-2.0", "google/pegasus-cnn_dailymail",
               (2020.5, 2023.0)),
        ], _Head.of("PegasusForConditionalGeneration", "summarization", auto_model="AutoModelForSeq2SeqLM"),
            _Weighted([(_Head.of("PegasusForConditionalGeneration", "summarization",
                                 auto_model="AutoModelForSeq2SeqLM"), 1)]),
            ("spiece.model", "tokenizer_config.json", "special_tokens_map.json")), 1),
        (_mt("bert", "encoder", [
            _v("bert-base-uncased", _bert(768, 12, 12, 3072, 30522), 109.5e6, "apache-2.0",
               "google-bert/bert-base-uncased", (2019.5, 2023.0)),
            _v("bert-base-cased", _bert(768, 12, 12, 3072, 28996), 108.3e6, "apache-2.0",
               "google-bert/bert-base-cased", (2019.5, 2023.0)),
            _v("bert-large-uncased", _bert(1024, 24, 16, 4096, 30522), 335.1e6, "apache-2.0",
               "google-bert/bert-large-uncased", (2019.5, 2023.0)),
            _v("bert-base-multilingual-cased", _bert(768, 12, 12, 3072, 119547, directionality="bidi",
                                                     pooler_fc_size=768, pooler_num_attention_heads=12,
                                                     pooler_type="first_token_transform"),
               177.9e6, "apache-2.0", "google-bert/bert-base-multilingual-cased", (2019.5, 2023.0),
               languages=("multilingual",)),
            _v("bert-base-chinese", _bert(768, 12, 12, 3072, 21128, directionality="bidi"), 102.3e6, "apache-2.0",
               "google-bert/bert-base-chinese", (2019.5, 2023.0), languages=("zh",)),
            _v("bert-mini", _bert(256, 4, 4, 1024, 30522), 11.2e6, "mit", "prajjwal1/bert-mini", (2020.5, 2023.0)),
            _v("bert-base-german-cased", _bert(768, 12, 12, 3072, 30000), 109.1e6, "mit",
               "google-bert/bert-base-german-cased", (2019.5, 2023.0), languages=("de",)),
        ], _Head.of("BertForMaskedLM", "fill-mask"), _encoder_heads("Bert"),
            ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")), 8),
        (_mt("roberta", "encoder", [
            _v("roberta-base", _roberta(768, 12, 12, 3072, 50265), 124.6e6, "mit", "FacebookAI/roberta-base",
               (2019.8, 2023.0)),
            _v("roberta-large", _roberta(1024, 24, 16, 4096, 50265), 355.4e6, "mit", "FacebookAI/roberta-large",
               (2019.8, 2023.0)),
            _v("distilroberta-base", _roberta(768, 6, 12, 3072, 50265), 82.1e6, "apache-2.0",
               "distilbert/distilroberta-base", (2020.0, 2023.0)),
        ], _Head.of("RobertaForMaskedLM", "fill-mask"), _encoder_heads("Roberta"),
            ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")), 4),
        (_mt("xlm-roberta", "encoder", [
            _v("xlm-roberta-base", _roberta(768, 12, 12, 3072, 250002, model_type="xlm-roberta",
                                            arch="XLMRobertaForMaskedLM"),
               278.0e6, "mit", "FacebookAI/xlm-roberta-base", (2020.0, 2023.5)),
            _v("xlm-roberta-large", _roberta(1024, 24, 16, 4096, 250002, model_type="xlm-roberta",
                                             arch="XLMRobertaForMaskedLM"),
               559.9e6, "mit", "FacebookAI/xlm-roberta-large", (2020.0, 2023.5)),
        ], _Head.of("XLMRobertaForMaskedLM", "fill-mask"), _encoder_heads("XLMRoberta"),
            ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json"), languages=_MULTI), 3),
        (_mt("distilbert", "encoder", [
            _v("distilbert-base-uncased", _distilbert(30522), 66.4e6, "apache-2.0",
               "distilbert/distilbert-base-uncased", (2019.8, 2023.0)),
            _v("distilbert-base-cased", _distilbert(28996), 65.2e6, "apache-2.0",
               "distilbert/distilbert-base-cased", (2019.8, 2023.0)),
            _v("distilbert-base-multilingual-cased", _distilbert(119547), 134.7e6, "apache-2.0",
               "distilbert/distilbert-base-multilingual-cased", (2019.8, 2023.0), languages=("multilingual",)),
        ], _Head.of("DistilBertForMaskedLM", "fill-mask"), _encoder_heads("DistilBert"),
            ("vocab.txt", "tokenizer.json", "tokenizer_config.json")), 4),
        (_mt("deberta-v2", "encoder", [
            _v("deberta-v3-base", _deberta(768, 12, 12, 3072, 128100), 184.4e6, "mit", "microsoft/deberta-v3-base",
               (2021.9, 2024.0)),
            _v("deberta-v3-large", _deberta(1024, 24, 16, 4096, 128100), 435.1e6, "mit",
               "microsoft/deberta-v3-large", (2021.9, 2024.0)),
            _v("deberta-v3-small", _deberta(768, 6, 12, 3072, 128100), 141.3e6, "mit",
               "microsoft/deberta-v3-small", (2021.9, 2024.0)),
            _v("mdeberta-v3-base", _deberta(768, 12, 12, 3072, 251000), 278.2e6, "mit",
               "microsoft/mdeberta-v3-base", (2021.9, 2024.0), languages=("multilingual",)),
        ], _Head(None, "fill-mask", "transformers", None, "AutoModelForMaskedLM"),
            _encoder_heads("DebertaV2", mlm=False), ("spm.model", "tokenizer_config.json")), 2),
        (_mt("electra", "encoder", [
            _v("electra-small-discriminator", _electra(128, 256, 12, 4, 1024), 13.5e6, "apache-2.0",
               "google/electra-small-discriminator", (2020.3, 2023.0)),
            _v("electra-base-discriminator", _electra(768, 768, 12, 12, 3072), 108.9e6, "apache-2.0",
               "google/electra-base-discriminator", (2020.3, 2023.0)),
            _v("electra-large-discriminator", _electra(1024, 1024, 24, 16, 4096), 334.1e6, "apache-2.0",
               "google/electra-large-discriminator", (2020.3, 2023.0)),
        ], _Head.of("ElectraForPreTraining", "fill-mask", auto_model="AutoModelForPreTraining"),
            _encoder_heads("Electra", mlm=False), ("vocab.txt", "tokenizer.json", "tokenizer_config.json")), 1),
        (_mt("albert", "encoder", [
            _v("albert-base-v2", _albert(768, 12, 3072), 11.7e6, "apache-2.0", "albert/albert-base-v2",
               (2019.8, 2023.0)),
            _v("albert-large-v2", _albert(1024, 16, 4096, 24), 17.7e6, "apache-2.0", "albert/albert-large-v2",
               (2019.8, 2023.0)),
            _v("albert-xxlarge-v2", _albert(4096, 64, 16384), 222.6e6, "apache-2.0", "albert/albert-xxlarge-v2",
               (2019.8, 2023.0)),
        ], _Head.of("AlbertForMaskedLM", "fill-mask"), _encoder_heads("Albert"),
            ("spiece.model", "tokenizer.json", "tokenizer_config.json")), 1),
        (_mt("mpnet", "encoder", [
            _v("mpnet-base", _mpnet("MPNetForMaskedLM"), 109.5e6, "mit", "microsoft/mpnet-base", (2020.8, 2023.0)),
            _v("all-mpnet-base-v2", _mpnet("MPNetModel"), 109.5e6, "apache-2.0",
               "sentence-transformers/all-mpnet-base-v2", (2021.5, 2024.0),
               head=_Head.of("MPNetModel", "sentence-similarity", library="sentence-transformers")),
        ], _Head.of("MPNetForMaskedLM", "fill-mask"),
            _Weighted([(_Head.of("MPNetModel", "sentence-similarity", library="sentence-transformers"), 6),
                       (_Head.of("MPNetForSequenceClassification", "text-classification", "seq"), 2),
                       (_Head.of("MPNetModel", "feature-extraction"), 1)]),
            ("vocab.txt", "tokenizer.json", "tokenizer_config.json")), 2),
        (_mt("vit", "vision", [
            _v("vit-base-patch16-224-in21k", _vit(768, 12, 12, 3072, 16), 86.4e6, "apache-2.0",
               "google/vit-base-patch16-224-in21k", (2021.0, 2024.0)),
            _v("vit-large-patch16-224-in21k", _vit(1024, 24, 16, 4096, 16), 304.4e6, "apache-2.0",
               "google/vit-large-patch16-224-in21k", (2021.0, 2024.0)),
            _v("vit-base-patch32-224-in21k", _vit(768, 12, 12, 3072, 32), 88.0e6, "apache-2.0",
               "google/vit-base-patch32-224-in21k", (2021.0, 2024.0)),
            _v("dino-vitb16", _vit(768, 12, 12, 3072, 16), 85.8e6, "apache-2.0", "facebook/dino-vitb16",
               (2021.3, 2024.0)),
        ], _Head.of("ViTModel", "image-feature-extraction"),
            _Weighted([(_Head.of("ViTForImageClassification", "image-classification", "image"), 1)]),
            ("preprocessor_config.json",), languages=_Weighted({(): 1})), 2),
        (_mt("swin", "vision", [
            _v("swin-tiny-patch4-window7-224", _swin(96, [2, 2, 6, 2], [3, 6, 12, 24]), 27.5e6, "apache-2.0",
               "microsoft/swin-tiny-patch4-window7-224", (2022.0, 2024.0)),
            _v("swin-base-patch4-window7-224", _swin(128, [2, 2, 18, 2], [4, 8, 16, 32]), 86.7e6, "apache-2.0",
               "microsoft/swin-base-patch4-window7-224", (2022.0, 2024.0)),
        ], _Head.of("SwinModel", "image-feature-extraction"),
            _Weighted([(_Head.of("SwinForImageClassification", "image-classification", "image"), 1)]),
            ("preprocessor_config.json",), languages=_Weighted({(): 1})), 1),
        (_mt("clip", "vision", [
            _v("clip-vit-base-patch32", _clip(512, 8, 768, 12, 12, 32, 512), 151.3e6, "mit",
               "openai/clip-vit-base-patch32", (2021.5, 2024.5)),
            _v("clip-vit-base-patch16", _clip(512, 8, 768, 12, 12, 16, 512), 149.6e6, "mit",
               "openai/clip-vit-base-patch16", (2021.5, 2024.5)),
            _v("clip-vit-large-patch14", _clip(768, 12, 1024, 24, 16, 14, 768), 427.6e6, "mit",
               "openai/clip-vit-large-patch14", (2021.5, 2024.5)),
        ], _Head.of("CLIPModel", "zero-shot-image-classification",
                    auto_model="AutoModelForZeroShotImageClassification"),
            _Weighted([(_Head.of("CLIPModel", "zero-shot-image-classification",
                                 auto_model="AutoModelForZeroShotImageClassification"), 1)]),
            ("preprocessor_config.json", "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")), 1.5),
        (_mt("whisper", "audio", [
            _v("whisper-tiny", _whisper(384, 4, 6), 37.8e6, "apache-2.0", "openai/whisper-tiny", (2022.75, 2025.0)),
            _v("whisper-base", _whisper(512, 6, 8), 72.6e6, "apache-2.0", "openai/whisper-base", (2022.75, 2025.0)),
            _v("whisper-small", _whisper(768, 12, 12), 241.7e6, "apache-2.0", "openai/whisper-small",
               (2022.75, 2025.0)),
            _v("whisper-medium", _whisper(1024, 24, 16), 763.9e6, "apache-2.0", "openai/whisper-medium",
               (2022.75, 2025.0)),
            _v("whisper-large-v3", _whisper(1280, 32, 20, mels=128, vocab=51866), 1.54e9, "apache-2.0",
               "openai/whisper-large-v3", (2023.85, 2025.4)),
        ], _Head.of("WhisperForConditionalGeneration", "automatic-speech-recognition",
                    auto_model="AutoModelForSpeechSeq2Seq"),
            _Weighted([(_Head.of("WhisperForConditionalGeneration", "automatic-speech-recognition",
                                 auto_model="AutoModelForSpeechSeq2Seq"), 1)]),
            ("preprocessor_config.json", "normalizer.json", "added_tokens.json", "vocab.json", "merges.txt",
             "tokenizer_config.json"), languages=_MULTI), 3),
        (_mt("wav2vec2", "audio", [
            _v("wav2vec2-base", _wav2vec2(768, 12, 12), 95.0e6, "apache-2.0", "facebook/wav2vec2-base",
               (2021.0, 2023.5)),
            _v("wav2vec2-large-xlsr-53", _wav2vec2(1024, 24, 16, large=True), 315.4e6, "apache-2.0",
               "facebook/wav2vec2-large-xlsr-53", (2021.0, 2023.5), languages=("multilingual",)),
            _v("wav2vec2-xls-r-300m", _wav2vec2(1024, 24, 16, large=True), 300.0e6, "apache-2.0",
               "facebook/wav2vec2-xls-r-300m", (2021.8, 2023.8), languages=("multilingual",)),
        ], _Head.of("Wav2Vec2ForPreTraining", "feature-extraction"),
            _Weighted([(_Head.of("Wav2Vec2ForCTC", "automatic-speech-recognition"), 0.85),
                       (_Head.of("Wav2Vec2ForSequenceClassification", "audio-classification", "audio",
                                 auto_model="AutoModelForAudioClassification"), 0.15)]),
            ("preprocessor_config.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json"),
            languages=_MULTI), 3),
        (_mt("diffusers", "diffusion", [
            _v("stable-diffusion-v1-5", None, 1.07e9, {"creativeml-openrail-m": 9, "openrail": 1},
               "stable-diffusion-v1-5/stable-diffusion-v1-5", (2022.9, 2024.6)),
            _v("stable-diffusion-2-1", None, 1.3e9, "openrail++", "stabilityai/stable-diffusion-2-1",
               (2022.95, 2024.3)),
            _v("stable-diffusion-xl-base-1.0", None, 3.5e9, "openrail++", "stabilityai/stable-diffusion-xl-base-1.0",
               (2023.55, 2025.0)),
            _v("FLUX.1-dev", None, 11.9e9, "other", "black-forest-labs/FLUX.1-dev", (2024.6, 2025.45)),
        ], _Head(None, "text-to-image", "diffusers"), _Weighted([(_Head(None, "text-to-image", "diffusers"), 1)]),
            (), languages=_Weighted({(): 3, ("en",): 1})), 4),
        (_mt("timm", "timm", [
            _v("resnet50.a1_in1k", _timm("resnet50", 2048, "a1_in1k", [7, 7], "conv1", "fc"), 25.6e6,
               "apache-2.0", "timm/resnet50.a1_in1k", (2023.0, 2024.8)),
            _v("convnext_tiny.fb_in1k", _timm("convnext_tiny", 768, "fb_in1k", [7, 7], "stem.0", "head.fc"),
               28.6e6, "apache-2.0", "timm/convnext_tiny.fb_in1k", (2023.0, 2024.8)),
            _v("efficientnet_b0.ra_in1k", _timm("efficientnet_b0", 1280, "ra_in1k", [7, 7], "conv_stem",
                                                "classifier"),
               5.3e6, "apache-2.0", "timm/efficientnet_b0.ra_in1k", (2023.0, 2024.8)),
        ], _Head(None, "image-classification", "timm"), _Weighted([(_Head(None, "image-classification", "timm"), 1)]),
            (), languages=_Weighted({(): 1})), 1.5),
    ]


_TYPES_WEIGHTED = _model_types()
#: Every generated model type (``model_type`` of config.json; ``diffusers`` and ``timm``
#: repos have none) with its weight among family roots.
MODEL_TYPES: dict[str, float] = {mt.name: w for mt, w in _TYPES_WEIGHTED}
_TYPES = _Weighted(_TYPES_WEIGHTED)

# =========================================================================== licences

_GENERAL_LICENCES = _Weighted({
    "apache-2.0": 40, "mit": 25, "cc-by-4.0": 6, "cc-by-nc-4.0": 5, "other": 8, "openrail": 4,
    "cc-by-sa-4.0": 3, "gpl-3.0": 3, "bsd-3-clause": 2, "cc-by-nc-sa-4.0": 2, "afl-3.0": 1,
    "agpl-3.0": 1, "unknown": 1, "cc0-1.0": 1, "artistic-2.0": 0.5, "wtfpl": 0.5,
    "creativeml-openrail-m": 1, "bigscience-openrail-m": 1, "lgpl-3.0": 0.5})
#: Licences whose terms bind derivatives; a child that drifts from one to mit/apache-2.0
#: is a licence conflict.
_RESTRICTIVE = frozenset({"cc-by-nc-4.0", "cc-by-nc-sa-4.0", "llama2", "llama3", "llama3.1",
                          "llama3.2", "gemma", "other", "openrail", "openrail++",
                          "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
                          "bigcode-openrail-m", "bigscience-openrail-m", "gpl-3.0", "agpl-3.0",
                          "cc-by-sa-4.0"})
_PERMISSIVE = _Weighted({"apache-2.0": 1, "mit": 1})
_SPELLINGS: dict[str, tuple[str, ...]] = {
    "apache-2.0": ("Apache 2.0", "apache2", "Apache-2.0", "Apache License 2.0", "apache 2"),
    "mit": ("MIT", "MIT License", "Mit"),
    "cc-by-nc-4.0": ("CC-BY-NC-4.0", "cc by-nc 4.0", "CC BY-NC 4.0"),
    "cc-by-4.0": ("CC-BY-4.0", "cc by 4.0"),
    "cc-by-sa-4.0": ("CC-BY-SA-4.0",),
    "llama2": ("Llama2", "llama-2", "LLaMA 2"),
    "llama3": ("Llama3", "llama-3", "Llama 3"),
    "llama3.1": ("llama-3.1", "Llama 3.1"),
    "gpl-3.0": ("GPL-3.0", "gplv3", "GPL v3"),
    "gemma": ("Gemma",),
    "openrail": ("OpenRAIL",),
    "bsd-3-clause": ("BSD-3-Clause",),
    "creativeml-openrail-m": ("CreativeML OpenRAIL-M",),
}


def _drift_licence(rng: random.Random, parent: str) -> str:
    if parent in _RESTRICTIVE and rng.random() < LICENSE_CONFLICT_SHARE:
        new = _PERMISSIVE.pick(rng)
    else:
        new = _GENERAL_LICENCES.pick(rng)
    return new if new != parent else ("mit" if parent != "mit" else "apache-2.0")


# =========================================================================== names


def _name_pools() -> tuple[list[str], list[str], list[str], list[str]]:
    # A fixed seed: the pools are part of the generator, the same on every executor.
    rng = random.Random(20240501)
    syl = ["ka", "lo", "mi", "ra", "te", "nu", "vo", "zi", "pe", "sa", "do", "ri", "an", "el",
           "or", "us", "ix", "en", "ta", "bo", "ky", "ma", "ne", "ju", "li", "qu", "ha", "gi"]

    def word(k: int) -> str:
        return "".join(rng.choice(syl) for _ in range(k))

    users = [word(rng.randint(2, 4)) + (str(rng.randint(1, 999)) if rng.random() < 0.3 else "")
             for _ in range(3000)]
    org_suffixes = ["-ai", "-labs", "-research", "AI", "-nlp", "-ml", ""]
    orgs = [f"{word(rng.randint(2, 3)).capitalize()}{rng.choice(org_suffixes)}" for _ in range(300)]
    quantizers = [f"{word(2)}-{rng.choice(['quants', 'gguf', 'quantized', 'community'])}" for _ in range(16)]
    mergers = [word(rng.randint(2, 3)) + rng.choice(["", "-merges", "mix"]) for _ in range(80)]
    return users, orgs, quantizers, mergers


_USERS, _ORGS, _QUANTIZERS, _MERGERS = _name_pools()

_FINETUNE_WORDS: dict[str | None, tuple[str, ...]] = {
    "text-generation": ("Instruct", "chat", "sft", "dpo", "orpo", "alpaca", "medical", "code",
                        "math", "roleplay", "uncensored", "v2", "it", "ultrachat", "reasoning",
                        "finance", "legal", "tr", "ko", "ja", "grpo", "distill"),
    "text-classification": ("finetuned-imdb", "sentiment", "emotion", "finetuned-sst2", "toxicity",
                            "spam-detector", "finetuned-tweet", "news-classifier"),
    "zero-shot-classification": ("mnli", "nli", "xnli", "zeroshot"),
    "token-classification": ("ner", "finetuned-ner", "pos", "conll03", "wikiann"),
    "question-answering": ("squad", "finetuned-squad", "squad2", "qa"),
    "fill-mask": ("domain-adapted", "legal", "bio", "finetuned-wikitext", "clinical"),
    "sentence-similarity": ("sentence-embeddings", "sts", "nli-mean-tokens", "retrieval", "embedder"),
    "feature-extraction": ("embeddings", "encoder", "features"),
    "summarization": ("summarizer", "cnn", "xsum", "samsum", "finetuned-news"),
    "translation": ("finetuned", "opus-books", "kde4", "custom"),
    "text2text-generation": ("finetuned", "qg", "paraphrase", "grammar", "keywords"),
    "automatic-speech-recognition": ("finetuned-common-voice", "hi", "ar", "de", "fr", "es",
                                     "turkish", "medical", "large-finetuned"),
    "audio-classification": ("speech-commands", "emotion", "gtzan", "gender"),
    "image-classification": ("finetuned-eurosat", "cats-vs-dogs", "food101", "beans", "xray",
                             "emotion", "brain-tumor", "deepfake"),
    "image-feature-extraction": ("features", "ssl"),
    "zero-shot-image-classification": ("finetuned", "fashion", "remote-sensing", "medical"),
    "text-to-image": ("dreambooth", "anime", "pixel-art", "realistic", "style", "portrait", "v2"),
    None: ("finetuned", "v1"),
}
_ISOLATED_WORDS = ("my-model", "test", "demo", "model", "experiment", "checkpoint", "run",
                   "trained", "project", "baseline", "final", "new-model", "assignment")
_MERGE_WORDS = ("slerp", "ties", "dare-ties", "merge", "passthrough", "franken", "linear",
                "model-stock", "della")
_GGUF_QUANTS = ("Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q4_K_S", "Q5_K_M", "Q5_K_S", "Q6_K",
                "Q8_0", "f16")
_ARXIV = ("arxiv:1810.04805", "arxiv:1907.11692", "arxiv:1910.10683", "arxiv:2307.09288",
          "arxiv:2302.13971", "arxiv:2106.09685", "arxiv:2305.18290", "arxiv:2212.04356",
          "arxiv:2010.11929", "arxiv:2103.00020", "arxiv:2006.11477", "arxiv:1910.13461",
          "arxiv:2403.08295", "arxiv:2407.10671", "arxiv:2404.14219", "arxiv:1910.09700")

_DATASETS: dict[str | None, tuple[str, ...]] = {
    "text-generation": ("HuggingFaceH4/ultrachat_200k", "teknium/OpenHermes-2.5", "Open-Orca/SlimOrca",
                        "tatsu-lab/alpaca", "argilla/dpo-mix-7k", "yahma/alpaca-cleaned",
                        "open-r1/OpenR1-Math-220k", "HuggingFaceH4/ultrafeedback_binarized",
                        "databricks/databricks-dolly-15k", "timdettmers/openassistant-guanaco"),
    "text-classification": ("imdb", "glue", "sst2", "tweet_eval", "emotion", "yelp_review_full",
                            "ag_news", "amazon_polarity"),
    "zero-shot-classification": ("multi_nli", "snli", "xnli", "anli"),
    "token-classification": ("conll2003", "wikiann", "wnut_17", "ncbi_disease"),
    "question-answering": ("squad", "squad_v2", "adversarial_qa"),
    "fill-mask": ("wikipedia", "bookcorpus", "c4", "oscar"),
    "sentence-similarity": ("sentence-transformers/all-nli", "stsb_multi_mt", "ms_marco",
                            "sentence-transformers/stsb"),
    "summarization": ("cnn_dailymail", "xsum", "samsum", "billsum", "multi_news"),
    "translation": ("wmt16", "opus_books", "kde4", "opus100", "wmt14"),
    "text2text-generation": ("squad", "c4", "jfleg", "paws"),
    "automatic-speech-recognition": ("mozilla-foundation/common_voice_11_0", "librispeech_asr",
                                     "mozilla-foundation/common_voice_8_0", "google/fleurs"),
    "audio-classification": ("speech_commands", "superb", "marsyas/gtzan"),
    "image-classification": ("imagefolder", "cifar10", "food101", "beans", "eurosat"),
    "text-to-image": ("lambdalabs/pokemon-blip-captions", "diffusers/dog-example"),
}


# =========================================================================== nodes


class _Node:
    """One model of a block, true facts first; :meth:`_Block._record` renders it."""

    __slots__ = ("id", "idx", "owner", "descr", "mtype", "variant", "config", "head",
                 "library", "pipeline", "licence", "relation", "parents", "depth", "created",
                 "leaf", "quant", "virtual", "merge_method", "isolated_lib")

    def __init__(self) -> None:
        self.idx = -1
        self.parents: list[_Node] = []
        self.relation: str | None = None
        self.depth = 0
        self.leaf = False
        self.quant: str | None = None
        self.virtual = False
        self.merge_method: str | None = None
        self.isolated_lib: tuple | None = None


#: Non-transformers libraries of isolated models: (library, pipeline, files, tags).
_OTHER_LIBRARIES = _Weighted([
    (("stable-baselines3", "reinforcement-learning", ("ppo-LunarLander-v2.zip", "results.json",
                                                      "replay.mp4", "config.json"),
      ("LunarLander-v2", "deep-reinforcement-learning", "reinforcement-learning")), 5),
    (("ml-agents", "reinforcement-learning", ("Huggy.onnx", "configuration.yaml", "run_logs/timers.json"),
      ("Huggy", "deep-reinforcement-learning", "reinforcement-learning", "ML-Agents-Huggy")), 2),
    (("keras", "image-classification", ("saved_model.pb", "keras_metadata.pb",
                                        "variables/variables.index",
                                        "variables/variables.data-00000-of-00001"), ("tf-keras",)), 2),
    (("spacy", "token-classification", ("meta.json", "config.cfg", "ner/model", "vocab/strings.json"),
      ("spacy",)), 1.5),
    (("fastai", None, ("model.pkl",), ("fastai",)), 1),
    (("sklearn", "tabular-classification", ("model.joblib", "config.json"), ("skops", "tabular-classification")), 1),
    (("espnet", "automatic-speech-recognition", ("exp/asr_train/valid.acc.ave.pth", "meta.yaml"),
      ("espnet", "audio")), 1),
    (("flair", "token-classification", ("pytorch_model.bin", "loss.tsv", "training.log"),
      ("flair", "sequence-tagger-model")), 1),
    ((None, None, (), ()), 4),
])

_DTYPE_CODE = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}
_TRANSFORMERS_BY_YEAR = {
    2019: ("2.1.1", "2.3.0", "2.8.0"), 2020: ("3.0.2", "3.4.0", "4.0.0"),
    2021: ("4.5.1", "4.9.2", "4.12.5"), 2022: ("4.17.0", "4.21.1", "4.25.1"),
    2023: ("4.30.2", "4.34.0", "4.35.2", "4.36.2"),
    2024: ("4.38.2", "4.40.2", "4.42.3", "4.44.2", "4.46.3"),
    2025: ("4.48.2", "4.49.0", "4.51.3", "4.52.4")}

_GPTQ = {"bits": 4, "damp_percent": 0.1, "desc_act": True, "group_size": 128,
         "model_file_base_name": "model", "model_name_or_path": None, "quant_method": "gptq",
         "static_groups": False, "sym": True, "true_sequential": True}
_AWQ = {"bits": 4, "group_size": 128, "modules_to_not_convert": None, "quant_method": "awq",
        "version": "gemm", "zero_point": True}
_BNB = {"_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True, "llm_int8_enable_fp32_cpu_offload": False,
        "llm_int8_has_fp16_weight": False, "llm_int8_skip_modules": None,
        "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False,
        "quant_method": "bitsandbytes"}
_MLX = {"group_size": 64, "bits": 4}

_LLM_QUANTS = _Weighted(LLM_QUANT_METHODS)
_RELATIONS = {kind: _Weighted(w) for kind, w in RELATION_WEIGHTS.items()}
_DECLARATION = _Weighted(DECLARATION_MODES)
_FAMILY_SIZES = _Weighted([(s, s ** -1.5) for s in range(2, MAX_FAMILY_SIZE + 1)])
_MEAN_FAMILY = sum(s * s ** -1.5 for s in range(2, MAX_FAMILY_SIZE + 1)) / \
    sum(s ** -1.5 for s in range(2, MAX_FAMILY_SIZE + 1))
# The chance that the next unit of a block is an isolated model, such that isolated models
# are ISOLATED_SHARE of all models: p / (p + (1 - p) * mean_family_size) = ISOLATED_SHARE.
_ISOLATED_UNIT = ISOLATED_SHARE * _MEAN_FAMILY / (1 - ISOLATED_SHARE + ISOLATED_SHARE * _MEAN_FAMILY)


# =========================================================================== the block


class _Block:
    """The generator state of one block: its rng, its models so far, merge candidates."""

    def __init__(self, rng: random.Random, start: int, end: int):
        self.rng = rng
        self.start = start
        self.end = end
        self.next_idx = start
        self.records: list[dict] = []
        # Non-leaf models (and virtual roots) of the block by model type: merge parents.
        self.mergeable: dict[str, list[_Node]] = {}

    # ----------------------------------------------------------------- structure

    def run(self) -> list[dict]:
        rng = self.rng
        while self.next_idx < self.end:
            left = self.end - self.next_idx
            if left == 1 or rng.random() < _ISOLATED_UNIT:
                self._isolated()
            else:
                self._family(min(_FAMILY_SIZES.pick(rng), left))
        return self.records

    def _family(self, size: int) -> None:
        rng = self.rng
        mtype: _ModelType = _TYPES.pick(rng)
        variant: _Variant = mtype.variants.pick(rng)
        root = self._root(mtype, variant, virtual=rng.random() < EXTERNAL_ROOT_RATE)
        members = [root]
        made = 0
        if not root.virtual:
            self._emit(root)
            made = 1
        kind_relations = _RELATIONS[mtype.kind]
        while made < size:
            eligible = [m for m in members if not m.leaf and m.depth < MAX_DEPTH]
            weights = [ROOT_PARENT_WEIGHT if m is root else 1.0 for m in eligible]
            parent = rng.choices(eligible, weights)[0]
            relation = kind_relations.pick(rng)
            extra: list[_Node] = []
            if relation == "merge":
                # Merges combine models of one size (one variant); rarely of one type only.
                same_type = [m for m in self.mergeable.get(mtype.name, ())
                             if m is not parent and m.depth < MAX_DEPTH]
                pool = [m for m in same_type if m.variant is parent.variant and m.pipeline == parent.pipeline]
                if not pool and rng.random() < 0.3:
                    pool = same_type
                if pool:
                    extra = rng.sample(pool, min(len(pool), 1 if rng.random() < 0.7 else 2))
                else:
                    relation = "finetune"
            child = self._child(parent, relation, extra)
            self._emit(child)
            members.append(child)
            made += 1

    def _new_idx(self) -> int:
        idx = self.next_idx
        self.next_idx += 1
        return idx

    def _root(self, mtype: _ModelType, variant: _Variant, *, virtual: bool) -> _Node:
        rng = self.rng
        node = _Node()
        node.mtype, node.variant = mtype, variant
        node.head = variant.base_head or mtype.base_head
        node.library, node.pipeline = node.head.library, node.head.pipeline
        node.licence = variant.licences.pick(rng)
        lo, hi = variant.years
        node.created = rng.randint(_epoch(lo), _epoch(hi))
        node.config = variant.config
        node.virtual = virtual
        if virtual:
            node.id = variant.external
        else:
            node.idx = self._new_idx()
            node.owner = rng.choice(_ORGS) if rng.random() < 0.6 else rng.choice(_USERS)
            name = variant.stem if rng.random() < 0.7 else f"{variant.stem}-{rng.choice(('base', 'v1', 'pt', 'hf'))}"
            node.id = f"{node.owner}/{_clean_name(name)}-{node.idx}"
        node.descr = variant.stem
        self.mergeable.setdefault(mtype.name, []).append(node)
        return node

    def _child(self, parent: _Node, relation: str, extra: list[_Node]) -> _Node:
        rng = self.rng
        mtype = parent.mtype
        node = _Node()
        node.mtype, node.variant = mtype, parent.variant
        node.relation = relation
        node.parents = [parent, *extra]
        node.depth = max(p.depth for p in node.parents) + 1
        node.idx = self._new_idx()
        gap = int(rng.expovariate(1 / 75) * _DAY) + _DAY
        node.created = min(max(p.created for p in node.parents) + gap, _HUB_END)
        node.licence = parent.licence if rng.random() >= LICENSE_DRIFT_RATE \
            else _drift_licence(rng, parent.licence)
        stem = parent.descr
        if relation == "finetune":
            keep = parent.relation is not None and rng.random() < 0.6
            node.head = parent.head if keep or mtype.kind in ("diffusion", "timm") else mtype.heads.pick(rng)
            node.library, node.pipeline = node.head.library, node.head.pipeline
            node.config = self._derived_config(parent, node)
            node.descr = f"{stem}-{rng.choice(_FINETUNE_WORDS.get(node.pipeline, _FINETUNE_WORDS[None]))}"
            node.owner = rng.choice(_USERS) if rng.random() < 0.85 else rng.choice(_ORGS)
            suffix = ""
        elif relation == "adapter":
            node.head, node.pipeline = parent.head, parent.pipeline
            node.library = "diffusers" if mtype.kind == "diffusion" else "peft"
            node.config = parent.config
            node.leaf = True
            word = "lora" if mtype.kind == "diffusion" else rng.choice(("lora", "qlora", "adapter", "peft-lora"))
            node.descr = f"{stem}-{rng.choice(_FINETUNE_WORDS.get(node.pipeline, _FINETUNE_WORDS[None]))}-{word}"
            node.owner = rng.choice(_USERS)
            suffix = ""
        elif relation == "quantized":
            node.head, node.pipeline = parent.head, parent.pipeline
            node.leaf = True
            node.quant = _LLM_QUANTS.pick(rng) if mtype.kind == "llm" else "onnx"
            node.library = {"gguf": "gguf" if rng.random() < 0.7 else "transformers", "mlx": "mlx",
                            "onnx": "transformers.js"}.get(node.quant, "transformers")
            node.config = self._quantized_config(parent, node.quant)
            node.descr = stem
            node.owner = rng.choice(_QUANTIZERS) if rng.random() < 0.5 else rng.choice(_USERS)
            suffix = {"gguf": "-GGUF", "gptq": "-GPTQ", "awq": "-AWQ", "bitsandbytes": "-bnb-4bit",
                      "mlx": "-4bit", "onnx": "-onnx"}[node.quant]
        else:  # merge
            node.head = parent.head
            node.library, node.pipeline = "diffusers" if mtype.kind == "diffusion" else "transformers", parent.pipeline
            node.config = self._derived_config(parent, node)
            node.merge_method = rng.choice(_MERGE_WORDS)
            node.descr = f"{stem}-{node.merge_method}"
            node.owner = rng.choice(_MERGERS)
            suffix = ""
        node.id = f"{node.owner}/{_clean_name(node.descr)}-{node.idx}{suffix}"
        if not node.leaf:
            self.mergeable.setdefault(mtype.name, []).append(node)
        return node

    def _isolated(self) -> None:
        rng = self.rng
        node = _Node()
        node.idx = self._new_idx()
        node.owner = rng.choice(_USERS)
        if rng.random() < ISOLATED_NON_TRANSFORMERS_SHARE:
            lib = _OTHER_LIBRARIES.pick(rng)
            node.isolated_lib = lib
            node.mtype = node.variant = node.config = node.head = None
            node.library, node.pipeline = lib[0], lib[1]
            node.licence = _GENERAL_LICENCES.pick(rng)
            node.created = rng.randint(_epoch(2020.5), _HUB_END)
            node.descr = f"{lib[0] or 'model'}-{rng.choice(_ISOLATED_WORDS)}"
        else:
            mtype: _ModelType = _TYPES.pick(rng)
            variant: _Variant = mtype.variants.pick(rng)
            node.mtype, node.variant = mtype, variant
            # The unnamed base it was trained from: its config, and its id in _name_or_path.
            base = _Node()
            base.mtype, base.variant, base.config = mtype, variant, variant.config
            base.head = variant.base_head or mtype.base_head
            base.id = variant.external
            keep_head = rng.random() < 0.4 or mtype.kind in ("diffusion", "timm")
            node.head = base.head if keep_head else mtype.heads.pick(rng)
            node.library, node.pipeline = node.head.library, node.head.pipeline
            lo, hi = variant.years
            node.created = rng.randint(_epoch(lo), _epoch(hi))
            node.config = self._derived_config(base, node) if variant.config is not None else None
            node.licence = variant.licences.pick(rng) if rng.random() < 0.6 else _GENERAL_LICENCES.pick(rng)
            node.descr = f"{variant.stem.split('-')[0]}-{rng.choice(_ISOLATED_WORDS)}" if rng.random() < 0.5 \
                else rng.choice(_ISOLATED_WORDS)
        node.id = f"{node.owner}/{_clean_name(node.descr)}-{node.idx}"
        self._emit(node)

    # ----------------------------------------------------------------- configs

    def _year(self, t: int) -> int:
        return min(max(time.gmtime(t).tm_year, 2019), 2025)

    def _derived_config(self, parent: _Node, node: _Node) -> dict | None:
        """The child's config.json: the parent's with a new head, dtype, version, tweaks."""
        base = parent.config
        if base is None:
            return None
        rng = self.rng
        cfg = dict(base)
        head = node.head
        if "model_type" not in cfg:  # timm: only the classifier changes
            if head is not None and rng.random() < 0.8:
                labels = _LABEL_SETS["image"].pick(rng)[0]
                cfg["num_classes"] = len(labels)
                cfg["label_names"] = list(labels.values())
            return cfg
        if head.architecture is not None and head.architecture != (base.get("architectures") or [None])[0]:
            cfg["architectures"] = [head.architecture]
        if head.labels is not None and (head is not parent.head or "id2label" not in cfg):
            id2label, label2id = _LABEL_SETS[head.labels].pick(rng)
            cfg["id2label"], cfg["label2id"] = id2label, label2id
            if rng.random() < 0.5:
                cfg["problem_type"] = "single_label_classification"
        name_roll = rng.random()
        if name_roll < 0.5:
            cfg["_name_or_path"] = parent.id
        elif name_roll < 0.6:
            cfg["_name_or_path"] = rng.choice(("/content/drive/MyDrive/model", "./results/checkpoint-500",
                                               "output", "/kaggle/working/model"))
        year = self._year(node.created)
        cfg["transformers_version"] = rng.choice(_TRANSFORMERS_BY_YEAR[year])
        kind = node.mtype.kind
        if kind == "llm":
            cfg["torch_dtype"] = "bfloat16" if rng.random() < 0.7 else rng.choice(("float16", "float32"))
            roll = rng.random()
            if roll < 0.2:
                cfg["use_cache"] = False
            elif roll < 0.28 and "vocab_size" in cfg:
                cfg["vocab_size"] = cfg["vocab_size"] + rng.choice((1, 2, 8, 64, 256))
            elif roll < 0.40:
                cfg["pad_token_id"] = cfg.get("eos_token_id") if not isinstance(cfg.get("eos_token_id"), list) else 0
            elif roll < 0.43 and "rope_scaling" in cfg and cfg["rope_scaling"] is None:
                cfg["rope_scaling"] = {"factor": rng.choice((2.0, 4.0)), "type": rng.choice(("linear", "dynamic"))}
        else:
            cfg["torch_dtype"] = "float32" if rng.random() < 0.75 else rng.choice(("float16", "bfloat16"))
            if head.pipeline == "automatic-speech-recognition" and kind == "audio" \
                    and cfg["model_type"] == "wav2vec2":
                cfg["vocab_size"] = rng.randint(28, 120)
                cfg["ctc_loss_reduction"] = "mean"
        return cfg

    def _quantized_config(self, parent: _Node, method: str) -> dict | None:
        base = parent.config
        if base is None:
            return None
        cfg = dict(base)
        if method == "gptq":
            cfg["quantization_config"] = _GPTQ
            cfg["torch_dtype"] = "float16"
        elif method == "awq":
            cfg["quantization_config"] = _AWQ
            cfg["torch_dtype"] = "float16"
        elif method == "bitsandbytes":
            cfg["quantization_config"] = _BNB
        elif method == "mlx":
            cfg["quantization"] = _MLX
            cfg["quantization_config"] = _MLX
        cfg["_name_or_path"] = parent.id
        return cfg

    # ----------------------------------------------------------------- rendering

    def _emit(self, node: _Node) -> None:
        self.records.append(self._record(node))

    def _record(self, node: _Node) -> dict:  # noqa: C901 - one linear recipe, kept together
        rng = self.rng
        mtype = node.mtype
        kind = mtype.kind if mtype is not None else "other"
        relation = node.relation
        quant = node.quant
        has_card = rng.random() >= CARD_DATA_MISSING_RATE
        card: dict[str, Any] = {}
        tags: list[str] = []
        files: list[str] = [".gitattributes"]
        if has_card or rng.random() < 0.5:
            files.append("README.md")

        # ---- config.json: structural absence, then the random drop
        config = node.config
        special_tokens = None
        if kind == "llm":
            special_tokens = node.variant.special_tokens or mtype.special_tokens
        ships_config = config is not None and relation != "adapter" and \
            (quant != "gguf" or rng.random() < 0.05) and rng.random() >= CONFIG_DROP_RATE
        config_text = None
        summary = None
        if ships_config:
            config_text = orjson.dumps(config, option=orjson.OPT_SORT_KEYS).decode()
            files.append("config.json")
            if "model_type" in config:
                summary = {}
                if "architectures" in config:
                    summary["architectures"] = config["architectures"]
                summary["model_type"] = config["model_type"]
                qc = config.get("quantization_config")
                if qc is not None:
                    summary["quantization_config"] = {k: qc[k] for k in ("bits", "quant_method") if k in qc}
                if "task_specific_params" in config and rng.random() < 0.8:
                    summary["task_specific_params"] = config["task_specific_params"]
                if special_tokens and rng.random() < 0.5:
                    summary["tokenizer_config"] = special_tokens

        # ---- weights and other files
        params = node.variant.params if node.variant is not None else 0
        dtype = config.get("torch_dtype", "float32") if isinstance(config, dict) else "float32"
        safetensors = None
        gguf = None
        year = self._year(node.created)
        if node.isolated_lib is not None:
            files.extend(node.isolated_lib[2])
        elif relation == "adapter":
            if kind == "diffusion":
                files.append("pytorch_lora_weights.safetensors")
                files.extend(f"image_{i}.png" for i in range(rng.randint(0, 3)))
                tags.extend(("lora", "template:sd-lora"))
            else:
                files.extend(("adapter_config.json",
                              "adapter_model.safetensors" if rng.random() < 0.8 else "adapter_model.bin"))
                if rng.random() < 0.5:
                    files.extend(mtype.tokenizer_files)
                if rng.random() < 0.4:
                    files.append("training_args.bin")
        elif quant == "gguf":
            stem = _clean_name(node.descr, 48)
            lower = rng.random() < 0.35
            for q in rng.sample(_GGUF_QUANTS, rng.randint(1, 5)):
                files.append(f"{stem.lower()}-{q.lower()}.gguf" if lower else f"{stem}.{q}.gguf")
            if rng.random() < 0.1:
                files.append("imatrix.dat")
            gguf = {"total": params, "architecture": mtype.gguf_arch or mtype.name,
                    "context_length": (config or {}).get("max_position_embeddings", 4096)}
            if special_tokens:
                gguf.update({k: v for k, v in special_tokens.items() if k in ("bos_token", "eos_token") and v})
        elif quant == "onnx":
            files.extend(("onnx/model.onnx", "onnx/model_quantized.onnx"))
            files.extend(mtype.tokenizer_files)
        elif kind == "diffusion":
            files.extend(("model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                          "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/vocab.json",
                          "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                          "vae/diffusion_pytorch_model.safetensors"))
            if rng.random() < 0.3:
                files.append(f"{_clean_name(node.descr, 48)}.safetensors")
        elif kind == "timm":
            files.extend(("model.safetensors", "pytorch_model.bin") if rng.random() < 0.7 else ("model.safetensors",))
            safetensors = {"parameters": {"F32": params}, "total": params}
        else:
            byte_width = 4 if dtype == "float32" else 2
            if quant in ("gptq", "awq", "bitsandbytes", "mlx"):
                byte_width = 0.55
            size = params * byte_width
            use_st = year >= 2023 or rng.random() < 0.3
            if size > 5e9 and use_st:
                shards = min(math.ceil(size / 4.9e9), 99)
                files.extend(f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1))
                files.append("model.safetensors.index.json")
            elif size > 10e9:
                shards = min(math.ceil(size / 9.9e9), 99)
                files.extend(f"pytorch_model-{i:05d}-of-{shards:05d}.bin" for i in range(1, shards + 1))
                files.append("pytorch_model.bin.index.json")
            elif use_st:
                files.append("model.safetensors")
                if year < 2024 and rng.random() < 0.25:
                    files.append("pytorch_model.bin")
            else:
                files.append("pytorch_model.bin")
                if rng.random() < 0.2:
                    files.append("tf_model.h5")
                if rng.random() < 0.1:
                    files.append("flax_model.msgpack")
            if use_st:
                code = _DTYPE_CODE.get(dtype, "F32")
                if quant in ("gptq", "awq"):
                    safetensors = {"parameters": {"I32": int(params * 0.11), "F16": int(params * 0.03)},
                                   "total": int(params * 0.14)}
                else:
                    safetensors = {"parameters": {code: params}, "total": params}
            if quant == "gptq":
                files.append("quantize_config.json")
            files.extend(mtype.tokenizer_files)
            if kind in ("llm", "seq2seq") and rng.random() < 0.7:
                files.append("generation_config.json")
            if node.head is not None and node.head.library == "sentence-transformers":
                files.extend(("modules.json", "sentence_bert_config.json",
                              "config_sentence_transformers.json", "1_Pooling/config.json"))
            if relation == "finetune" and rng.random() < 0.4:
                files.append("training_args.bin")
            if relation == "finetune" and rng.random() < 0.2:
                files.append(f"runs/Jan01_00-00-00_{node.idx}/events.out.tfevents.{node.created}.0")
                tags.append("tensorboard")
            if relation == "merge" and rng.random() < 0.9:
                files.append("mergekit_config.yml")
            if ships_config and "auto_map" in config:
                files.extend((f"configuration_{mtype.name}.py", f"modeling_{mtype.name}.py"))
                tags.append("custom_code")
            elif ships_config and rng.random() < 0.03:
                files.extend((f"configuration_{mtype.name}.py", f"modeling_{mtype.name}.py"))
                tags.append("custom_code")

        # ---- library, pipeline, format tags
        library = node.library if rng.random() >= LIBRARY_NAME_MISSING_RATE else None
        pipeline = node.pipeline if rng.random() >= PIPELINE_TAG_MISSING_RATE else None
        head_tags: list[str] = []
        if library is not None:
            head_tags.append(library)
        if safetensors is not None or any(f.endswith(".safetensors") for f in files):
            head_tags.append("safetensors")
        if "pytorch_model.bin" in files:
            head_tags.append("pytorch")
        if "tf_model.h5" in files:
            head_tags.append("tf")
        if "flax_model.msgpack" in files:
            head_tags.append("jax")
        if quant == "gguf" and library != "gguf":
            head_tags.append("gguf")
        if quant == "onnx":
            head_tags.append("onnx")
        if summary is not None and node.library == "transformers":
            head_tags.append(summary["model_type"])
        if pipeline is not None:
            head_tags.append(pipeline)
        if node.isolated_lib is not None:
            head_tags.extend(node.isolated_lib[3])

        card_tags: list[str] = []
        if relation == "adapter" and kind != "diffusion":
            if library is None and rng.random() < 0.85:
                card_tags.append("peft")
            if rng.random() < 0.7:
                card_tags.append("lora")
            if rng.random() < 0.3:
                card_tags.extend(("trl", "sft"))
        elif relation == "merge":
            if rng.random() < 0.85:
                card_tags.extend(("mergekit", "merge"))
        elif quant == "gguf":
            card_tags.extend(("llama-cpp", "gguf-my-repo") if rng.random() < 0.4 else ("quantized",))
        elif quant in ("gptq", "awq"):
            card_tags.extend((quant, "4-bit"))
        elif quant == "bitsandbytes":
            card_tags.extend(("4-bit", "bitsandbytes"))
        elif quant == "mlx":
            card_tags.extend(("mlx", "4-bit") if library is None else ("4-bit",))
        elif relation == "finetune":
            roll = rng.random()
            if roll < 0.35:
                card_tags.append("generated_from_trainer")
            elif roll < 0.55 and kind == "llm":
                card_tags.extend(rng.choice((("trl", "sft"), ("trl", "dpo"), ("unsloth", "trl"),
                                             ("alignment-handbook", "trl", "orpo"))))
            elif kind == "diffusion":
                card_tags.extend(("stable-diffusion", "dreambooth"))
        tags.extend(card_tags)
        if kind == "diffusion":
            tags.append("stable-diffusion")

        # ---- languages, datasets, arxiv
        languages = node.variant.languages if node.variant is not None and node.variant.languages else \
            (mtype.languages.pick(rng) if mtype is not None else ())
        datasets: tuple[str, ...] = ()
        if relation in ("finetune", "adapter") or (relation is None and rng.random() < 0.3):
            pool = _DATASETS.get(node.pipeline)
            if pool and rng.random() < 0.5:
                datasets = tuple(rng.sample(pool, 1 if rng.random() < 0.8 else 2))
        arxiv = rng.choice(_ARXIV) if relation is None and mtype is not None and rng.random() < 0.25 else None
        if kind == "llm" and node.pipeline == _CAUSAL and ("Instruct" in node.descr or "chat" in node.descr
                                                          or "it" in node.descr.split("-") or rng.random() < 0.3):
            tags.append("conversational")

        # ---- parents: what is declared, where
        parents = node.parents
        self_loop = rng.random() < SELF_LOOP_RATE
        mode = _DECLARATION.pick(rng) if parents else ("full" if self_loop else "undeclared")
        if not parents and self_loop:
            parent_ids = [node.id]
            relation_declared = "finetune"
        else:
            parent_ids = [p.id for p in parents]
            relation_declared = relation
            if self_loop:
                parent_ids.append(node.id)
        base_tags: list[str] = []
        if mode != "undeclared":
            in_card = mode in ("full", "card_relation", "plain", "card_only")
            card_relation = mode == "card_relation"
            plain_tag = mode in ("full", "card_relation", "plain", "plain_tag")
            relation_tag = mode in ("full", "relation_tag")
            if in_card and not has_card:  # the Hub keeps the tag it derived from the card
                plain_tag = True
            if plain_tag:
                base_tags.extend(f"base_model:{p}" for p in parent_ids)
            if relation_tag:
                base_tags.extend(f"base_model:{relation_declared}:{p}" for p in parent_ids)
            if in_card and has_card:
                card["base_model"] = parent_ids[0] if len(parent_ids) == 1 and rng.random() < 0.8 else parent_ids
                if card_relation:
                    card["base_model_relation"] = relation_declared

        # ---- licence
        licence_declared = rng.random() >= LICENSE_MISSING_RATE
        licence_tag = None
        if licence_declared:
            lic = node.licence
            if has_card:
                spellings = _SPELLINGS.get(lic)
                if spellings and rng.random() < LICENSE_VARIANT_RATE:
                    card["license"] = rng.choice(spellings)
                else:
                    card["license"] = lic if rng.random() >= 0.01 else [lic]
                    if rng.random() < 0.9:
                        licence_tag = f"license:{lic}"
                if lic == "other" and rng.random() < 0.5:
                    family = node.variant.stem.split("-")[0].lower() if node.variant else "custom"
                    card["license_name"] = f"{family}-license"
                    card["license_link"] = "LICENSE"
            else:
                licence_tag = f"license:{lic}"

        # ---- card data
        if has_card:
            if languages and rng.random() < 0.6:
                card["language"] = list(languages) if len(languages) > 1 or rng.random() < 0.6 else languages[0]
            if datasets:
                card["datasets"] = list(datasets)
            if card_tags:
                card["tags"] = card_tags
            if pipeline is not None and rng.random() < 0.25:
                card["pipeline_tag"] = pipeline
            if library is not None and rng.random() < 0.25:
                card["library_name"] = library
            if quant is not None and rng.random() < 0.3:
                card["quantized_by"] = node.owner
            if relation is None and rng.random() < 0.15:
                card["metrics"] = ["accuracy"]
            if not card:
                card["tags"] = [rng.choice(("generated_from_trainer", "autotrain", "text", "demo"))]
        else:
            datasets = datasets if rng.random() < 0.3 else ()
            languages = ()

        # ---- tag order as the Hub writes it
        out_tags = head_tags + tags
        out_tags.extend(lang for lang in languages if has_card and "language" in card)
        out_tags.extend(f"dataset:{d}" for d in datasets)
        if arxiv:
            out_tags.append(arxiv)
        out_tags.extend(base_tags)
        if licence_tag:
            out_tags.append(licence_tag)
        if node.library == "transformers" and ships_config:
            if rng.random() < 0.6:
                out_tags.append("autotrain_compatible")
            if kind == "llm" and rng.random() < 0.7:
                out_tags.append("text-generation-inference")
            if rng.random() < 0.6:
                out_tags.append("endpoints_compatible")
        elif quant == "gguf" and rng.random() < 0.8:
            out_tags.append("endpoints_compatible")
        if kind == "diffusion" and relation != "adapter" and library is not None:
            out_tags.append("diffusers:StableDiffusionPipeline" if "stable-diffusion-v1" in node.variant.stem
                            else "diffusers:StableDiffusionXLPipeline" if "xl" in node.variant.stem
                            else "diffusers:FluxPipeline" if "FLUX" in node.variant.stem
                            else "diffusers:StableDiffusionPipeline")
        out_tags.append("region:us")
        # A tag list holds each tag once, first position kept.
        out_tags = list(dict.fromkeys(out_tags))

        # ---- Hub fields
        created = node.created
        modified = min(created + int(rng.expovariate(1 / 20) * _DAY), _HUB_END + 30 * _DAY)
        created_at = None if (year < 2022 and rng.random() < CREATED_AT_MISSING_BEFORE_2022) else _iso(created)
        if relation is None and mtype is not None:
            downloads = int(rng.lognormvariate(5.0, 2.8))
        else:
            downloads = 0 if rng.random() < 0.25 else int(rng.lognormvariate(2.5, 2.2))
        likes = int(downloads ** 0.5 * rng.random() * 0.3) if downloads else 0
        gated: bool | str = False
        if relation is None and node.licence in ("llama2", "llama3", "llama3.1", "llama3.2", "gemma") \
                and rng.random() < 0.5:
            gated = "manual" if rng.random() < 0.5 else "auto"
        transformers_info = None
        if ships_config and node.library in ("transformers", "sentence-transformers") and summary is not None \
                and node.head is not None and rng.random() < 0.85:
            transformers_info = {"auto_model": node.head.auto_model, "custom_class": None,
                                 "pipeline_tag": node.pipeline,
                                 "processor": "AutoTokenizer" if kind in ("llm", "encoder", "seq2seq")
                                 else "AutoProcessor" if kind == "audio" else "AutoImageProcessor"}

        return {
            "id": node.id,
            "author": node.owner,
            "sha": f"{rng.getrandbits(160):040x}",
            "lastModified": _iso(modified),
            "createdAt": created_at,
            "private": False,
            "gated": gated,
            "disabled": False,
            "downloads": downloads,
            "likes": likes,
            "library_name": library,
            "pipeline_tag": pipeline,
            "tags": out_tags,
            "cardData": card if has_card else None,
            "config": summary,
            "siblings": [{"rfilename": f} for f in dict.fromkeys(files)],
            "safetensors": safetensors,
            "gguf": gguf,
            "transformersInfo": transformers_info,
            "config_json": config_text,
        }


# =========================================================================== public API


def block_seed(seed: int, block: int) -> int:
    """The integer seeding block ``block`` of the Hub generated with ``seed``.

    SHA-256 of ``"<seed>:<block>"`` (never Python's ``hash()``, which changes per process),
    so a block is the same on every machine.

    Examples:
        >>> block_seed(0, 0) == block_seed(0, 0), block_seed(0, 0) == block_seed(1, 0)
        (True, False)
    """
    digest = hashlib.sha256(f"semfin-synthetic:{seed}:{block}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


def generate_block(seed: int, block: int, block_size: int, n_total: int) -> list[dict]:
    """The snapshot records of the models ``[block*block_size, min(n_total, (block+1)*block_size))``.

    Args:
        seed: the Hub's seed; the same seed gives the same Hub.
        block: block number, from 0.
        block_size: models per block (also the largest possible family).
        n_total: models in the whole Hub; the last block is cut there.

    Returns:
        One dict per model, in index order, with the Hub's ``/api/models`` keys plus
        ``config_json`` (config.json text or None); empty past the end of the Hub.

    Raises:
        ValueError: a negative block or n_total, or block_size < 1.

    Examples:
        >>> records = generate_block(0, 0, 64, 100)
        >>> len(records), records == generate_block(0, 0, 64, 100)
        (64, True)
        >>> len(generate_block(0, 1, 64, 100)), generate_block(0, 2, 64, 100)
        (36, [])

    Implementation details:
        Pure Python (stdlib + orjson), no Spark: :func:`synthetic_records` calls it on the
        executors, once per block. A block is self-contained (its families, merges and
        their parents all live in it), so blocks can be generated in any order anywhere.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if block < 0 or n_total < 0:
        raise ValueError(f"block and n_total must not be negative, got block={block}, n_total={n_total}")
    start = block * block_size
    end = min(n_total, start + block_size)
    if start >= end:
        return []
    return _Block(random.Random(block_seed(seed, block)), start, end).run()


def generate_block_lines(seed: int, block: int, block_size: int, n_total: int) -> list[str]:
    """:func:`generate_block` as compact JSON lines, the text of a snapshot file's lines.

    Examples:
        >>> import json
        >>> json.loads(generate_block_lines(3, 0, 8, 8)[0])["id"] == generate_block(3, 0, 8, 8)[0]["id"]
        True
    """
    return [orjson.dumps(r).decode() for r in generate_block(seed, block, block_size, n_total)]


def _partitions(n: int, num_blocks: int, default_parallelism: int) -> int:
    wanted = max(default_parallelism, math.ceil(n / MODELS_PER_PARTITION))
    return max(1, min(wanted, num_blocks))


def _block_lines_batches(seed: int, block_size: int, n: int):
    """The ``mapInArrow`` function: blocks numbers in, batches of ``value`` lines out."""

    def generate(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        pending: list[str] = []
        for batch in batches:
            for block in batch.column(0).to_pylist():
                pending.extend(generate_block_lines(seed, block, block_size, n))
                if len(pending) >= RECORDS_PER_BATCH:
                    yield pa.RecordBatch.from_arrays([pa.array(pending, pa.string())], names=["value"])
                    pending = []
        if pending:
            yield pa.RecordBatch.from_arrays([pa.array(pending, pa.string())], names=["value"])

    return generate


def synthetic_records(spark: SparkSession, n: int, seed: int = 0, *, block_size: int = 64) -> DataFrame:
    """A generated Hub of ``n`` models as snapshot lines: one string column ``value``.

    Args:
        spark: the session (injected; never built here).
        n: number of models (>= 0).
        seed: the Hub's seed; the same (n, seed, block_size) gives the same lines.
        block_size: models per generation block; bounds the size of a family.

    Returns:
        A DataFrame with exactly one column, ``value`` (string): one compact JSON record
        per row, as a line of a snapshot file holds it. Row order is by model index within
        a partition but is not part of the contract.

    Raises:
        ValueError: n < 0 or block_size < 1.

    Examples:
        >>> df = synthetic_records(spark, 100, seed=1)       # doctest: +SKIP
        >>> df.columns, df.count()                          # doctest: +SKIP
        (['value'], 100)

    Implementation details:
        The driver only plans: ``spark.range(num_blocks, numPartitions=p)`` with
        ``p = max(defaultParallelism, ceil(n / MODELS_PER_PARTITION))`` (at most one
        partition per block), then ``mapInArrow``. Each executor task turns its block
        numbers into records with :func:`generate_block_lines` (pure Python, Arrow
        batches of :data:`RECORDS_PER_BATCH` lines); nothing is collected and no record is
        built on the driver. The lazy plan is recomputed by every action, identically.
    """
    if n < 0:
        raise ValueError(f"the number of models must not be negative, got {n}")
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    num_blocks = math.ceil(n / block_size)
    if num_blocks == 0:
        return spark.createDataFrame([], "value string")
    parts = _partitions(n, num_blocks, spark.sparkContext.defaultParallelism)
    blocks = spark.range(num_blocks, numPartitions=parts)
    return blocks.mapInArrow(_block_lines_batches(seed, block_size, n), "value string")


_SPEC = re.compile(r"^\s*(\d[\d_]*)\s*(?:,\s*seed\s*=\s*(-?\d+)\s*)?$")


def parse_spec(spec: str) -> tuple[int, int]:
    """``(n, seed)`` of a synthetic source spec: ``"N"`` or ``"N,seed=S"`` (seed 0 by default).

    Args:
        spec: what follows ``synthetic:`` in ``--source synthetic:N[,seed=S]``.

    Returns:
        The number of models (>= 1) and the seed.

    Raises:
        ValueError: anything else, with the expected form in the message.

    Examples:
        >>> parse_spec("300000"), parse_spec("300000,seed=7"), parse_spec("1_000, seed=2")
        ((300000, 0), (300000, 7), (1000, 2))
        >>> parse_spec("ten")
        Traceback (most recent call last):
        ...
        ValueError: bad synthetic spec 'ten': expected N or N,seed=S (e.g. synthetic:300000,seed=7)
    """
    match = _SPEC.match(spec or "")
    if not match or match.group(1).endswith("_") or "__" in match.group(1):
        raise ValueError(f"bad synthetic spec {spec!r}: expected N or N,seed=S "
                         "(e.g. synthetic:300000,seed=7)")
    n = int(match.group(1).replace("_", ""))
    if n < 1:
        raise ValueError(f"bad synthetic spec {spec!r}: N must be at least 1")
    return n, int(match.group(2) or 0)
