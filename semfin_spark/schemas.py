"""Every SemFin table, declared once: its Spark schema, its key and what each column means.

Writers cast to these schemas, readers and tests check against them, and the README's
table reference is generated from them (``python -m semfin_spark.schemas``). A column's
description is kept in the field's metadata as ``comment``, which Delta also stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


FLATTEN_FORMAT = 1
"""The version of what flatten derives from a ``hub_models`` record: the rows of its
tables (``config_features``, ``model_tags``, ``model_files``, ``model_fields``' declared
values, ``model_parents``) and the token bags of ``model_tokens``.

Bump it with any change that gives a model other rows or another bag than the release
before (a new token kind, another tag kind, another flatten limit's meaning). It is part
of ``flatten_state.change_key``, so the next flatten reprocesses every model, not only the
changed ones (an incremental run would leave old and new bags side by side), and of a
training's fingerprint, so the next train does not keep a model fitted on the old bags;
impute refuses a registered model trained on another format (run ``semfin train``, which
the nightly does)."""


@dataclass(frozen=True)
class Table:
    """A SemFin table: name (its folder under the warehouse), schema, key, and what it holds."""

    name: str
    schema: StructType
    key: tuple[str, ...]
    doc: str

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.schema.fields]


def _col(name: str, dtype: DataType, doc: str, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable, metadata={"comment": doc})


STR, LONG, INT, DBL, BOOL, TS = (
    StringType(), LongType(), IntegerType(), DoubleType(), BooleanType(), TimestampType()
)
STRS = ArrayType(StringType(), True)


HUB_MODELS = Table(
    "hub_models",
    StructType([
        _col("id", STR, "Hub repo id, `owner/name` (or a legacy id without owner). Key.", False),
        _col("author", STR, "Owner of the repo as the Hub reports it."),
        _col("sha", STR, "Git commit of the repo the metadata describes."),
        _col("last_modified", TS, "Last commit time (UTC)."),
        _col("created_at", TS, "Repo creation time (UTC)."),
        _col("private", BOOL, "Private repo flag."),
        _col("gated", STR, "Gating: `false`, `auto`, `manual` (text as the Hub gives it)."),
        _col("disabled", BOOL, "Disabled repo flag."),
        _col("downloads", LONG, "Downloads in the last 30 days, as reported."),
        _col("likes", LONG, "Likes, as reported."),
        _col("library_name", STR, "`library_name` as the Hub reports it (not normalised)."),
        _col("pipeline_tag", STR, "`pipeline_tag` as the Hub reports it (not normalised)."),
        _col("tags", STRS, "Hub tags, in the Hub's order."),
        _col("card_data", STR, "The model card's YAML header, as JSON text."),
        _col("config", STR, "The Hub's summary of config.json, as JSON text."),
        _col("config_json", STR, "Raw text of the full config.json when crawled, else null."),
        _col("siblings", STRS, "File names of the repo (`rfilename`)."),
        _col("safetensors", STR, "The Hub's safetensors summary, as JSON text."),
        _col("gguf", STR, "The Hub's GGUF summary, as JSON text."),
        _col("transformers_info", STR, "The Hub's transformersInfo, as JSON text."),
        _col("record_hash", STR, "SHA-256 of the normalised record; a change means the model changed."),
        _col("source", STR, "Where the record came from: `snapshot:<file>`, `synthetic:<n>,seed=<s>` or `hub:<endpoint>`."),
        _col("ingested_at", TS, "When this version of the record was written (UTC)."),
        _col("raw", STR, "The record as read, JSON text without config_json (truncated past ingest.raw_max_chars)."),
        _col("deleted_at", TS, "When a crawl of the Hub first missed this model from its complete listing (UTC); null while listed. A model that reappears is listed again with null."),
    ]),
    ("id",),
    "One row per Hub model: its metadata as the Hub (or a snapshot of it) describes it.",
)

INGEST_REJECTS = Table(
    "ingest_rejects",
    StructType([
        _col("reject_id", STR, "SHA-256 of source file and raw text. Key: a re-ingest adds no duplicate.", False),
        _col("source", STR, "Source of the run (`snapshot:...`, `synthetic:...`, `hub:...`)."),
        _col("source_file", STR, "File (or URL) the record came from."),
        _col("model_id", STR, "The record's id when one could be read, else null (always null for a refused file)."),
        _col("reason", STR, "Why: the record is not stored (`invalid_json`, `not_an_object`, `missing_id`, `invalid_id`, `wrong_type`, `too_large`, `unparseable`, `unstorable`); the model is stored without or with a repaired value (`invalid_card_data`, `fetch_error`, `invalid_utf8`, `invalid_unicode`, `number_out_of_range`, `time_out_of_range`); a whole file is not read (`unreadable_file`, `foreign_schema`)."),
        _col("detail", STR, "The specifics (which key had which type, the parser's message)."),
        _col("raw", STR, "The raw text, truncated past ingest.reject_raw_max_chars."),
        _col("raw_length", LONG, "Length of the raw text in characters before truncation."),
        _col("rejected_at", TS, "When the record was first rejected (UTC)."),
    ]),
    ("reject_id",),
    "Records an ingest could not accept, with the reason; the good records around them are kept.",
)

CONFIG_FEATURES = Table(
    "config_features",
    StructType([
        _col("model_id", STR, "Hub repo id.", False),
        _col("sha", STR, "Repo commit the config was read from."),
        _col("key", STR, "Dotted key path without list positions (`text_config.hidden_size`, `architectures`)."),
        _col("key_path", STR, "Key path with list positions (`layers[2].type`); unique per model.", False),
        _col("position", INT, "Position in the innermost enclosing list, null outside lists."),
        _col("value", STR, "The value as text (JSON spelling for bool and null); truncated strings end with the marker."),
        _col("value_type", STR, "`string`, `int`, `float`, `bool` or `null`; `object`/`list` for empty containers."),
        _col("value_num", DBL, "The value as a number for int and float (and bool as 0/1), else null."),
        _col("truncated", BOOL, "True when the string value was cut at flatten.max_string_chars."),
        _col("source", STR, "`config_json` (full file) or `config_summary` (the Hub's summary)."),
    ]),
    ("model_id", "key_path"),
    "The semantic fingerprint: config.json flattened to one row per (model, key path, value).",
)

FLATTEN_REJECTS = Table(
    "flatten_rejects",
    StructType([
        _col("model_id", STR, "Hub repo id.", False),
        _col("sha", STR, "Repo commit."),
        _col("source", STR, "`config_json` or `config_summary`."),
        _col("reason", STR, "`invalid_json`, `not_an_object`, `non_finite_number`, `duplicate_key`, `too_deep`, `too_many_keys`, `too_large`, `invalid_utf8`, `binary`, `list_too_long`, `key_collision` (see semfin_spark.flatten)."),
        _col("detail", STR, "The specifics (parser message, depth, key count)."),
        _col("raw", STR, "Start of the offending text (flatten.reject_raw_max_chars)."),
        _col("rejected_at", TS, "When the flatten run rejected it (UTC)."),
    ]),
    ("model_id", "source", "reason"),
    "Configs that could not be flattened (whole or in part), with the reason.",
)

FLATTEN_STATE = Table(
    "flatten_state",
    StructType([
        _col("model_id", STR, "Hub repo id.", False),
        _col("change_key", STR, "`<sha>:<hash>:f<format>` at the model's last flatten: its sha, a hash of every hub_models column flatten reads, and the flatten format (FLATTEN_FORMAT) it was flattened with."),
        _col("flattened_at", TS, "When the model was last flattened (UTC)."),
    ]),
    ("model_id",),
    "Which version of each model the flatten tables hold; flatten reprocesses only models whose sha or flattened inputs changed.",
)

MODEL_TAGS = Table(
    "model_tags",
    StructType([
        _col("model_id", STR, "Hub repo id.", False),
        _col("tag", STR, "The tag as the Hub gives it.", False),
        _col("kind", STR, "`library`, `task`, `license`, `base_model`, `dataset`, `language`, `region`, `arxiv`, `doi`, `endpoints`, `format`, `other`."),
        _col("value", STR, "The tag's value: after the `kind:` prefix, or the tag itself."),
        _col("relation", STR, "For `base_model:<relation>:<parent>` tags, the relation; else null."),
    ]),
    ("model_id", "tag"),
    "Hub tags, one row per (model, tag), classified by kind.",
)

MODEL_FILES = Table(
    "model_files",
    StructType([
        _col("model_id", STR, "Hub repo id.", False),
        _col("path", STR, "File path in the repo.", False),
        _col("extension", STR, "Lower-case extension without the dot (`safetensors`), or null."),
        _col("kind", STR, "`weights`, `adapter`, `gguf`, `quantized`, `merge`, `tokenizer`, `config`, `card`, `code`, `other`."),
    ]),
    ("model_id", "path"),
    "Repo files, one row per (model, path), classified by kind.",
)

MODEL_FIELDS = Table(
    "model_fields",
    StructType([
        _col("model_id", STR, "Hub repo id.", False),
        _col("field", STR, "`license`, `reuse_method`, `pipeline_tag`, `library_name` or `model_type`.", False),
        _col("declared_value", STR, "The normalised value the model declares, or null."),
        _col("declared_raw", STR, "The declared value as spelled at its source."),
        _col("declared_source", STR, "Where it was declared: `card_data`, `tag`, `config`, `hub` (API field), `rule` (Hub rule on files)."),
        _col("imputed_value", STR, "The classifier's value where nothing is declared and confidence reaches the threshold."),
        _col("imputed_confidence", DBL, "The classifier's probability for its best class (kept below the threshold too)."),
        _col("imputed_model", STR, "Registered model name that imputed (`semfin-license`)."),
        _col("imputed_model_version", STR, "Registered model version."),
        _col("imputed_run_id", STR, "MLflow run id of the imputing model."),
        _col("imputed_at", TS, "When the value was imputed (UTC)."),
        _col("features_hash", STR, "Hash of the features the imputation saw; incremental impute skips unchanged ones."),
        _col("value", STR, "What downstream uses: declared_value, else imputed_value."),
        _col("value_source", STR, "`declared`, `imputed` or null."),
        _col("sha", STR, "Repo commit the declared value was read from."),
    ]),
    ("model_id", "field"),
    "The five fields per model: declared, imputed, and the value downstream uses.",
)

IMPUTE_COLUMNS = ("imputed_value", "imputed_confidence", "imputed_model", "imputed_model_version",
                  "imputed_run_id", "imputed_at", "features_hash")
"""The ``model_fields`` columns impute writes. Flatten writes the declared ones and keeps
these where nothing is declared; ``value`` and ``value_source`` follow from both."""

MODEL_PARENTS = Table(
    "model_parents",
    StructType([
        _col("model_id", STR, "The child's Hub repo id.", False),
        _col("parent_id", STR, "A declared parent (may be a repo not on the Hub or not ingested).", False),
        _col("relation", STR, "`finetune`, `adapter`, `quantized`, `merge`, or null when undeclared."),
        _col("source", STR, "`tag` (base_model:<relation>:<parent>), `tag_plain` (base_model:<parent>), `card_data`."),
    ]),
    ("model_id", "parent_id"),
    "Declared lineage: one row per (child, parent); merges have several.",
)

MODEL_TOKENS = Table(
    "model_tokens",
    StructType([
        _col("model_id", STR, "Hub repo id.", False),
        _col("tokens", STRS,
             "The model's fingerprint tokens (config keys and values, architectures, tags, "
             "files, author and name words), sorted and distinct; leaking tokens included "
             "(each field's classifier drops its own, see the leakage table).", False),
    ]),
    ("model_id",),
    "What train, evaluate and impute read: one token bag per flattened model, written by "
    "flatten for the models it reprocessed.",
)

LINEAGE_EDGES = Table(
    "lineage_edges",
    StructType([
        _col("child", STR, "Child model id.", False),
        _col("parent", STR, "Parent model id.", False),
        _col("relation", STR, "Declared relation, else the child's imputed reuse method."),
        _col("relation_source", STR, "`declared`, `imputed` or null (unknown)."),
        _col("parent_external", BOOL, "True when the parent is not in hub_models."),
    ]),
    ("child", "parent"),
    "The lineage graph, child -> parent, self-loops removed.",
)

LINEAGE_COMPONENTS = Table(
    "lineage_components",
    StructType([
        _col("model_id", STR, "A node: a model, or an external parent.", False),
        _col("component_id", STR, "Smallest node id of its connected component.", False),
        _col("component_size", LONG, "Number of nodes in the component."),
        _col("external", BOOL, "True for parents not in hub_models."),
    ]),
    ("model_id",),
    "Connected components of the lineage graph (undirected).",
)

LINEAGE_CHAINS = Table(
    "lineage_chains",
    StructType([
        _col("variant", STR, "`declared` (declared values only) or `with_imputed`.", False),
        _col("root", STR, "First model of the chain (no parent).", False),
        _col("leaf", STR, "Last model of the chain (no child).", False),
        _col("path", STRS, "Model ids from root to leaf."),
        _col("depth", INT, "Number of edges on the path."),
        _col("relations", STRS, "Reuse method of each edge, root to leaf (null where unknown)."),
        _col("pattern", STR, "Relations joined with ` > `; null when any is unknown."),
        _col("licenses", STRS, "Licence of each model on the path (null where unknown)."),
        _col("license_pattern", STR, "Licences joined with ` > `; null when any is unknown."),
        _col("license_conflict", BOOL, "True when an edge of the chain is a licence conflict in this "
             "variant (a row of `license_conflicts`)."),
        _col("truncated", BOOL, "True when the path was cut at lineage.max_depth or hit a cycle."),
    ]),
    ("variant", "path"),
    "Root-to-leaf paths of the lineage graph, with their reuse-method and licence sequences.",
)

LICENSE_CONFLICTS = Table(
    "license_conflicts",
    StructType([
        _col("variant", STR, "`declared` or `with_imputed`.", False),
        _col("child", STR, "Child model id.", False),
        _col("parent", STR, "Parent model id.", False),
        _col("child_license", STR, "Child licence (normalised)."),
        _col("parent_license", STR, "Parent licence (normalised)."),
        _col("verdict", STR, "`conflict` or `unknown`."),
        _col("rule", STR, "Name of the rule in conf/licenses.yaml that fired."),
        _col("reason", STR, "The rule's reason."),
    ]),
    ("variant", "child", "parent"),
    "Lineage edges whose child licence breaks (or cannot be checked against) the parent's terms.",
)

CRAWL_STATE = Table(
    "crawl_state",
    StructType([
        _col("model_key", STR, "Lower-cased repo id (the Hub matches ids ignoring case). Key.", False),
        _col("id", STR, "The repo id as the last listing spelled it."),
        _col("sha", STR, "Commit the last listing reported."),
        _col("last_modified", TS, "`lastModified` the last listing reported (UTC)."),
        _col("first_listed_at", TS, "When a crawl first listed the model (UTC)."),
        _col("listed_at", TS, "When a crawl last listed it (the crawl's start, UTC)."),
        _col("deleted_at", TS, "When a complete listing first missed it (UTC); null while listed."),
        _col("config_status", STR, "Last config.json outcome: `fetched`, `not_json`, `absent` (no config.json), `gated`, `too_large`, `refused` (another 4xx), `failed` (429/5xx/timeout after retries: fetched again next crawl)."),
        _col("config_sha", STR, "Commit the config outcome belongs to; a listing with another sha fetches again."),
        _col("config_at", TS, "When that outcome was obtained (UTC)."),
        _col("config_error", STR, "The reason, for outcomes other than fetched/not_json/absent."),
        _col("crawl_id", STR, "The crawl that last listed the model (its folder under `<warehouse>/_crawl`)."),
    ]),
    ("model_key",),
    "One row per model a crawl of the Hub has listed: what the crawler saw, so the next crawl fetches only what changed.",
)

AIBOM_STATE = Table(
    "aibom_state",
    StructType([
        _col("model_id", STR, "The model whose BOM the nightly keeps.", False),
        _col("path", STR, "The BOM file (`<aibom.dir>/<owner>/<name>.cdx.json`)."),
        _col("digest", STR, "SHA-256 of the BOM without its timestamp: an equal digest means an unchanged BOM, which is not rewritten."),
        _col("written_at", TS, "When the file was last written (UTC)."),
    ]),
    ("model_id",),
    "One row per BOM the nightly keeps (`aibom.nightly`), so the next night rewrites only the BOMs whose content changed.",
)

RUNS = Table(
    "runs",
    StructType([
        _col("run_id", STR, "The nightly run (a UUID); a resumed run keeps its id.", False),
        _col("stage", STR, "`ingest`, `flatten`, `train`, `impute`, `lineage`, `aibom` (with `aibom.nightly`), `upkeep`, or `nightly` for the whole run.", False),
        _col("attempt", INT, "1 for the first try; a resumed run's stages count on.", False),
        _col("source", STR, "The run's `--source`."),
        _col("status", STR, "`succeeded` or `failed` (a killed stage leaves no row: the next run redoes it)."),
        _col("started_at", TS, "When the stage started (UTC)."),
        _col("ended_at", TS, "When it ended (UTC)."),
        _col("input_versions", STR, "JSON: each table's version when the stage started."),
        _col("output_versions", STR, "JSON: each table's version when it ended."),
        _col("counts", STR, "JSON: the stage's result (rows read, written, rejected, ...)."),
        _col("error", STR, "For a failed stage: the error, secrets redacted."),
    ]),
    ("run_id", "stage", "attempt"),
    "One row per stage of each nightly run: when, how it ended, the table versions it read and wrote.",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        HUB_MODELS, INGEST_REJECTS, CONFIG_FEATURES, FLATTEN_REJECTS, FLATTEN_STATE, MODEL_TAGS,
        MODEL_FILES, MODEL_FIELDS, MODEL_PARENTS, MODEL_TOKENS, LINEAGE_EDGES, LINEAGE_COMPONENTS,
        LINEAGE_CHAINS, LICENSE_CONFLICTS, CRAWL_STATE, AIBOM_STATE, RUNS,
    )
}


def markdown_reference() -> str:
    """The README's table reference, generated from the schemas above."""
    out: list[str] = []
    for t in TABLES.values():
        out.append(f"### `{t.name}`\n\n{t.doc} Key: `{', '.join(t.key)}`.\n")
        out.append("| column | type | meaning |\n|---|---|---|")
        for f in t.schema.fields:
            out.append(f"| `{f.name}` | {f.dataType.simpleString()} | {f.metadata.get('comment', '')} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_reference())
