"""AI Bills of Materials: a CycloneDX 1.6 ML-BOM per model, with its whole lineage.

``semfin aibom MODEL_ID [--out FILE]`` writes one JSON BOM whose main component is the
model (``type: machine-learning-model``, a ``pkg:huggingface/...`` purl, a ``modelCard``),
with:

* **licences** as SPDX ids where the licence is one (``apache-2.0`` -> ``Apache-2.0``),
  else by name (``llama3.1``), each with ``acknowledgement``: ``declared`` for what the
  model declares, ``concluded`` for what SemFin imputed. Imputed fields carry their
  confidence, the imputing registered model and version and the MLflow run as
  ``semfin:imputed:<field>:...`` properties, so a reader tells declared from inferred.
* **lineage** in ``pedigree.ancestors``: every parent as a component with its own
  licence and reuse method, each with its own ``pedigree`` up to the roots (a merge lists
  all its parents); parents not on the Hub are kept and marked ``semfin:external``; a
  cycle is cut where it closes and marked ``semfin:lineage:cycle``.
* **licence conflicts** along the chain as ``semfin:license-conflict`` properties on the
  child, naming the rule of ``conf/licenses.yaml`` that fired.

Every BOM is validated against the official CycloneDX 1.6 JSON schema (shipped by
``cyclonedx-python-lib``) before it is written; an invalid one is an error, never a file.

Implementation details:
    The document is built here as plain JSON: ``cyclonedx-python-lib``'s object model has
    no ``modelCard`` yet, so the library is used for its schemas, its validator and its
    SPDX licence list. The facts of the model and its ancestors are read with Spark
    (the ancestors one lineage level per query, so the driver holds only the model's own
    lineage), then the document is assembled on the driver.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from semfin_spark import __version__
from semfin_spark.delta import DeltaStore
from semfin_spark.schemas import HUB_MODELS, LICENSE_CONFLICTS, LINEAGE_EDGES, MODEL_FIELDS
from semfin_spark.session import write_text

FIELDS = ("license", "reuse_method", "pipeline_tag", "library_name", "model_type")
_NAMESPACE = uuid.UUID("6f1c7c5e-1f0b-5d6b-9a43-5e3f1a2b7c11")  # serial numbers per model


class AibomError(LookupError):
    """The model is not in the warehouse, or a table the BOM needs is missing."""


class InvalidBomError(ValueError):
    """The BOM does not validate against the CycloneDX 1.6 schema (a bug: never written)."""


@dataclass
class ModelFacts:
    """What the warehouse knows of one model (or of an external parent: ``external``)."""

    model_id: str
    external: bool = False
    sha: str | None = None
    author: str | None = None
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    architecture: str | None = None
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)  # field -> model_fields row
    parents: list[dict[str, Any]] = field(default_factory=list)  # lineage_edges rows
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # license_conflicts rows


def gather_facts(spark: SparkSession, store: DeltaStore, model_id: str, *,
                 max_depth: int = 32) -> dict[str, ModelFacts]:
    """The facts of ``model_id`` and of every ancestor, keyed by id.

    Raises:
        AibomError: the model is not in ``hub_models``, or the lineage tables are missing.
    """
    for table in (HUB_MODELS, MODEL_FIELDS, LINEAGE_EDGES):
        if not store.exists(table):
            raise AibomError(f"table {table.name} is not in the warehouse {store.warehouse}: "
                             "run the nightly (or ingest, flatten, impute, lineage) first")
    hub = store.read(HUB_MODELS)
    found = hub.where(F.lower("id") == model_id.lower()).select("id").first()
    if found is None:
        raise AibomError(f"model {model_id!r} is not in hub_models of {store.warehouse}")
    model_id = found["id"]
    edges = store.read(LINEAGE_EDGES)
    parents: dict[str, list[dict[str, Any]]] = {}
    frontier, seen = {model_id}, {model_id}
    for _ in range(max_depth):
        rows = [r.asDict() for r in edges.where(F.col("child").isin(sorted(frontier))).collect()]
        for row in rows:
            parents.setdefault(row["child"], []).append(row)
        frontier = {r["parent"] for r in rows} - seen
        seen |= frontier
        if not frontier:
            break
    ids = sorted(seen)
    facts = {i: ModelFacts(i, external=True) for i in ids}
    for row in hub.where(F.col("id").isin(ids)).select(
            "id", "sha", "author", "tags", "card_data", "config").collect():
        facts[row["id"]] = _hub_facts(row)
    for row in store.read(MODEL_FIELDS).where(F.col("model_id").isin(ids)).collect():
        facts[row["model_id"]].fields[row["field"]] = row.asDict()
    if store.exists(LICENSE_CONFLICTS):
        for row in (store.read(LICENSE_CONFLICTS)
                    .where((F.col("variant") == "with_imputed") & F.col("child").isin(ids))
                    .collect()):
            facts[row["child"]].conflicts.append(row.asDict())
    for child, rows in parents.items():
        facts[child].parents = sorted(rows, key=lambda r: r["parent"])
    for item in facts.values():
        item.conflicts.sort(key=lambda r: r["parent"])
    return facts


def _hub_facts(row: Any) -> ModelFacts:
    card = _json_object(row["card_data"])
    config = _json_object(row["config"])
    datasets = card.get("datasets") or []
    if isinstance(datasets, str):
        datasets = [datasets]
    architectures = config.get("architectures") or []
    return ModelFacts(
        row["id"], sha=row["sha"], author=row["author"], tags=list(row["tags"] or []),
        datasets=[d for d in datasets if isinstance(d, str) and d],
        architecture=architectures[0] if architectures and isinstance(architectures[0], str) else None)


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# ------------------------------------------------------------------ the document


def build_bom(model_id: str, facts: dict[str, ModelFacts], *,
              timestamp: dt.datetime | None = None) -> dict[str, Any]:
    """The CycloneDX 1.6 document (a dict) for ``model_id``, from :func:`gather_facts`.

    Examples:
        >>> facts = {"o/child": ModelFacts("o/child", sha="a" * 40, fields={"license": {
        ...     "value": "apache-2.0", "value_source": "declared"}}, parents=[
        ...     {"parent": "o/base", "relation": "finetune", "relation_source": "declared"}]),
        ...     "o/base": ModelFacts("o/base", fields={"license": {
        ...     "value": "llama3.1", "value_source": "imputed", "imputed_confidence": 0.97}})}
        >>> bom = build_bom("o/child", facts)
        >>> component = bom["metadata"]["component"]
        >>> print(component["purl"], component["licenses"][0]["license"]["id"])
        pkg:huggingface/o/child@aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa Apache-2.0
        >>> base = component["pedigree"]["ancestors"][0]
        >>> print(base["name"], base["licenses"][0]["license"]["name"],
        ...       base["licenses"][0]["license"]["acknowledgement"])
        o/base llama3.1 concluded
    """
    main = facts[model_id]
    when = (timestamp or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    used_refs: set[str] = set()
    component = _component(main, facts, used_refs, path=(model_id,))
    return {
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{model_id}@{main.sha}')}",
        "version": 1,
        "metadata": {
            "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "semfin-spark",
                                      "version": __version__}]},
            "component": component,
        },
    }


def _component(facts: ModelFacts, everything: dict[str, ModelFacts], used_refs: set[str], *,
               path: tuple[str, ...], reused_as: dict[str, Any] | None = None) -> dict[str, Any]:
    owner, _, name = facts.model_id.rpartition("/")
    out: dict[str, Any] = {"type": "machine-learning-model", "name": facts.model_id}
    ref = f"{facts.model_id}@{facts.sha}" if facts.sha else facts.model_id
    if ref not in used_refs:  # a model reached twice (a diamond) keeps one bom-ref
        used_refs.add(ref)
        out["bom-ref"] = ref
    if owner:
        out["group"] = owner
    if facts.sha:
        out["version"] = facts.sha
    out["purl"] = _purl(owner, name, facts.sha)
    licenses = _licenses(facts.fields.get("license"))
    if licenses:
        out["licenses"] = licenses
    card = _model_card(facts)
    if card:
        out["modelCard"] = card
    properties = _properties(facts, reused_as)
    if properties:
        out["properties"] = properties
    ancestors = []
    for edge in facts.parents:
        parent = edge["parent"]
        if parent in path:  # a cycle closes here: mark it, do not follow it again
            ancestors.append({"type": "machine-learning-model", "name": parent,
                              "properties": [{"name": "semfin:lineage:cycle", "value": "true"}]})
            continue
        ancestors.append(_component(everything.get(parent) or ModelFacts(parent, external=True),
                                    everything, used_refs, path=(*path, parent), reused_as=edge))
    if ancestors:
        out["pedigree"] = {"ancestors": ancestors}
    return out


def _purl(owner: str, name: str, sha: str | None) -> str:
    """``pkg:huggingface/<owner>/<name>@<sha>`` (purl spec: the commit, lower case)."""
    parts = [quote(p, safe=".-_") for p in (owner, name) if p]
    version = f"@{sha.lower()}" if sha else ""
    return f"pkg:huggingface/{'/'.join(parts)}{version}"


def _licenses(row: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not row or not row.get("value"):
        return []
    from cyclonedx.spdx import fixup_id

    value = row["value"]
    acknowledgement = "declared" if row.get("value_source") == "declared" else "concluded"
    spdx = fixup_id(value)
    license_ = {"id": spdx} if spdx else {"name": value}
    license_["acknowledgement"] = acknowledgement
    return [{"license": license_}]


def _model_card(facts: ModelFacts) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    task = _value(facts, "pipeline_tag")
    if task:
        parameters["task"] = task
    family = _value(facts, "model_type")
    if family:
        parameters["architectureFamily"] = family
    if facts.architecture:
        parameters["modelArchitecture"] = facts.architecture
    if facts.datasets:
        parameters["datasets"] = [{"type": "dataset", "name": d} for d in facts.datasets]
    return {"modelParameters": parameters} if parameters else {}


def _value(facts: ModelFacts, name: str) -> str | None:
    row = facts.fields.get(name)
    return row.get("value") if row else None


def _properties(facts: ModelFacts, reused_as: dict[str, Any] | None) -> list[dict[str, str]]:
    props: list[tuple[str, Any]] = []
    if facts.external:
        props.append(("semfin:external", "true"))
    if reused_as is not None:
        props.append(("semfin:reused-as", reused_as.get("relation") or "unknown"))
        if reused_as.get("relation_source"):
            props.append(("semfin:reused-as:source", reused_as["relation_source"]))
    for name in FIELDS:
        row = facts.fields.get(name)
        if not row or not row.get("value"):
            continue
        props.append((f"semfin:{name}", row["value"]))
        props.append((f"semfin:{name}:source", row.get("value_source") or "unknown"))
        if row.get("value_source") == "imputed":
            confidence = row.get("imputed_confidence")
            props += [(f"semfin:imputed:{name}:confidence",
                       None if confidence is None else f"{confidence:.4f}"),
                      (f"semfin:imputed:{name}:model", row.get("imputed_model")),
                      (f"semfin:imputed:{name}:model_version", row.get("imputed_model_version")),
                      (f"semfin:imputed:{name}:mlflow_run", row.get("imputed_run_id"))]
    for conflict in facts.conflicts:
        props.append(("semfin:license-conflict",
                      f"{conflict['verdict']} with {conflict['parent']} "
                      f"({conflict.get('parent_license') or 'unknown'} -> "
                      f"{conflict.get('child_license') or 'unknown'}): rule "
                      f"{conflict.get('rule')}: {conflict.get('reason')}"))
    return [{"name": k, "value": str(v)} for k, v in props if v is not None]


# ------------------------------------------------------------------ validation


def validate_bom(bom: dict[str, Any]) -> None:
    """Validate against the official CycloneDX 1.6 JSON schema.

    Raises:
        InvalidBomError: with the validator's first message.
    """
    error = _validator().validate_str(json.dumps(bom))
    if error is not None:
        raise InvalidBomError(f"the BOM does not validate against CycloneDX 1.6: "
                              f"{str(error).splitlines()[0][:500]}")


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    """The schema validator, built once per process (building it takes seconds; one
    validation, 2 ms)."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    return JsonStrictValidator(SchemaVersion.V1_6)


def model_bom(spark: SparkSession, store: DeltaStore, model_id: str, *,
              max_depth: int = 32) -> dict[str, Any]:
    """The validated BOM of one model.

    Raises:
        AibomError: the model or a needed table is missing.
        InvalidBomError: the document does not validate (nothing should be written).
    """
    facts = gather_facts(spark, store, model_id, max_depth=max_depth)
    resolved = next(i for i in facts if i.lower() == model_id.lower() and not facts[i].external)
    bom = build_bom(resolved, facts)
    validate_bom(bom)
    return bom


def ancestors_of(bom: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (child, parent) pair in the BOM's pedigree, for comparing with lineage tables."""
    pairs: set[tuple[str, str]] = set()

    def walk(component: dict[str, Any]) -> None:
        for parent in component.get("pedigree", {}).get("ancestors", []):
            pairs.add((component["name"], parent["name"]))
            walk(parent)

    walk(bom["metadata"]["component"])
    return pairs


# ------------------------------------------------------------------ every model


def bom_path(out_dir: str, model_id: str) -> str:
    """``<out_dir>/<owner>/<name>.cdx.json`` (an id without owner: ``<out_dir>/<name>...``).

    Examples:
        >>> bom_path("/boms", "meta-llama/Llama-3.1-8B")
        '/boms/meta-llama/Llama-3.1-8B.cdx.json'
    """
    parts = model_id.split("/")
    if any(p in ("", ".", "..") for p in parts):  # ids are checked at ingest; never escape out_dir
        raise AibomError(f"model id {model_id!r} cannot name a file")
    return os.path.join(out_dir, *parts[:-1], parts[-1] + ".cdx.json")


def bom_digest(bom: dict[str, Any]) -> str:
    """SHA-256 of the BOM without its timestamp: equal digests, equal BOMs.

    Examples:
        >>> a = build_bom("o/m", {"o/m": ModelFacts("o/m")}, timestamp=dt.datetime(2026, 1, 1))
        >>> b = build_bom("o/m", {"o/m": ModelFacts("o/m")}, timestamp=dt.datetime(2026, 6, 1))
        >>> bom_digest(a) == bom_digest(b)
        True
    """
    timeless = {**bom, "metadata": {k: v for k, v in bom["metadata"].items() if k != "timestamp"}}
    text = json.dumps(timeless, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def component_boms(rows: list[dict[str, Any]], *, out_dir: str, max_depth: int,
                   timestamp: dt.datetime,
                   previous: dict[str, tuple[str | None, str | None]] | None = None,
                   ) -> list[tuple[str, str, str | None, str | None, str]]:
    """Write the BOM of every Hub model among ``rows`` (the facts of one lineage component,
    as :func:`write_all_boms` gathers them).

    Each model's ancestors are found exactly as :func:`gather_facts` finds them (breadth
    first along its parents, ``max_depth`` levels), so a BOM equals ``semfin aibom``'s.

    Args:
        previous: ``{model_id: (digest, path)}`` of the BOMs written before; a model whose
            BOM has the same digest and whose file is still at the same path is not
            rewritten (status ``unchanged``). None: every BOM is written.

    Returns:
        ``(model_id, status, error, digest, path)`` per model; status ``written``,
        ``unchanged``, or ``invalid`` (the BOM did not validate and was not written).
    """
    facts = {row["model_id"]: _facts_of(row) for row in rows}
    out = []
    for model_id, own in facts.items():
        if own.external:
            continue
        path = bom_path(out_dir, model_id)
        bom = build_bom(model_id, _ancestry(model_id, facts, max_depth), timestamp=timestamp)
        digest = bom_digest(bom)
        if previous is not None and previous.get(model_id) == (digest, path) \
                and os.path.exists(path):
            out.append((model_id, "unchanged", None, digest, path))
            continue
        try:
            validate_bom(bom)
        except InvalidBomError as exc:
            out.append((model_id, "invalid", str(exc), None, path))
            continue
        # Whole (temp file and rename): a reader never sees half a BOM.
        write_text(path, json.dumps(bom, indent=2, ensure_ascii=False) + "\n")
        out.append((model_id, "written", None, digest, path))
    return out


def _ancestry(model_id: str, facts: dict[str, ModelFacts], max_depth: int) -> dict[str, ModelFacts]:
    """The facts :func:`gather_facts` would return for ``model_id``: its ancestors within
    ``max_depth`` levels, the last level without parents."""
    chosen: dict[str, ModelFacts] = {}
    frontier, seen = [model_id], {model_id}
    for _ in range(max_depth):
        following = []
        for node in frontier:
            item = facts.get(node) or ModelFacts(node, external=True)
            chosen[node] = item
            for edge in item.parents:
                if edge["parent"] not in seen:
                    seen.add(edge["parent"])
                    following.append(edge["parent"])
        frontier = following
        if not frontier:
            break
    for node in frontier:  # reached at the last level: listed, parents not followed
        item = facts.get(node) or ModelFacts(node, external=True)
        chosen[node] = ModelFacts(**{**item.__dict__, "parents": []})
    return chosen


def _facts_of(row: dict[str, Any]) -> ModelFacts:
    if row.get("external"):
        return ModelFacts(row["model_id"], external=True)
    # to_json leaves null columns out: each is read with its default.
    facts = _hub_facts({"id": row["model_id"], **{k: row.get(k) for k in (
        "sha", "author", "tags", "card_data", "config")}})
    facts.fields = {f["field"]: f for f in row.get("fields") or []}
    facts.parents = sorted(row.get("parents") or [], key=lambda r: r["parent"])
    facts.conflicts = sorted(row.get("conflicts") or [], key=lambda r: r["parent"])
    return facts


def write_all_boms(spark: SparkSession, store: DeltaStore, out_dir: str, *, max_depth: int = 32,
                   incremental: bool = False, progress: Any = print) -> dict[str, Any]:
    """Write the validated BOM of every model of ``hub_models`` (not deleted) into
    ``out_dir`` (see :func:`bom_path`), built on the executors.

    Args:
        incremental: keep the BOMs of ``out_dir`` in step with the warehouse, as the
            nightly does: a BOM whose content (:func:`bom_digest`) is unchanged since
            ``aibom_state`` recorded it is not rewritten, and the BOMs of models no longer
            on the Hub (or whose BOM no longer validates) are removed. False: every BOM
            is written and ``aibom_state`` is left alone.

    Returns:
        ``written``, ``unchanged``, ``invalid`` and ``removed`` counts, and up to ten
        ``invalid_examples``.

    Raises:
        AibomError: a table the BOMs need is missing, or ``out_dir`` is not a local path
            (``file://`` included).

    Implementation details:
        The facts of every node (its Hub row, its five fields, its parent edges and its
        licence conflicts) are joined into one row per node and grouped by lineage
        component: every ancestor of a model is in its component, so each group builds
        its models' BOMs alone (``applyInPandas``; the largest component of the
        300,000-model generated Hub has 752 nodes). The executors write the files, so
        ``out_dir`` must be a folder they all reach (any local folder in ``local[*]``).
        Files are written before ``aibom_state`` records them: a run killed in between
        rewrites them next time, and converges.
    """
    from pyspark.sql.types import StringType, StructField, StructType

    from semfin_spark.schemas import AIBOM_STATE, LINEAGE_COMPONENTS
    from semfin_spark.settings import local_path

    if local_path(out_dir) is None:  # files are written with open(), not a Hadoop client
        raise AibomError(f"BOMs are written to a local or shared folder, not {out_dir}: "
                         "set aibom.dir (or --out) to a folder every executor reaches")
    out_dir = local_path(out_dir)
    for table in (HUB_MODELS, MODEL_FIELDS, LINEAGE_EDGES, LINEAGE_COMPONENTS):
        if not store.exists(table):
            raise AibomError(f"table {table.name} is not in the warehouse {store.warehouse}: "
                             "run the nightly (or ingest, flatten, impute, lineage) first")
    os.makedirs(out_dir, exist_ok=True)
    hub = (store.read(HUB_MODELS).where(F.col("deleted_at").isNull())
           .select(F.col("id").alias("model_id"), F.lit(True).alias("_on_hub"), "sha", "author",
                   "tags", "card_data", "config"))
    facts = (hub
             .join(store.read(MODEL_FIELDS).groupBy("model_id").agg(F.collect_list(F.struct(
                 *[c for c in MODEL_FIELDS.columns if c != "model_id"])).alias("fields")),
                 "model_id", "left")
             .join(store.read(LINEAGE_EDGES).groupBy(F.col("child").alias("model_id"))
                   .agg(F.collect_list(F.struct(*LINEAGE_EDGES.columns)).alias("parents")),
                   "model_id", "left"))
    if store.exists(LICENSE_CONFLICTS):
        facts = facts.join(
            store.read(LICENSE_CONFLICTS).where(F.col("variant") == "with_imputed")
            .groupBy(F.col("child").alias("model_id"))
            .agg(F.collect_list(F.struct(*LICENSE_CONFLICTS.columns)).alias("conflicts")),
            "model_id", "left")
    # Every node of the lineage (external parents included), and models ingested after
    # the lineage stage last ran, each alone.
    ids = (store.read(LINEAGE_COMPONENTS).select("model_id", "component_id")
           .join(hub.select("model_id"), "model_id", "full_outer")
           .select("model_id", F.coalesce("component_id", "model_id").alias("component_id")))
    state = store.read(AIBOM_STATE) if incremental and store.exists(AIBOM_STATE) else None
    if state is not None:
        ids = ids.join(state.select("model_id", F.col("digest").alias("_digest"),
                                    F.col("path").alias("_path")), "model_id", "left")
    else:
        ids = ids.withColumn("_digest", F.lit(None).cast("string")) \
                 .withColumn("_path", F.lit(None).cast("string"))
    carried = [c for c in facts.columns if c not in ("model_id", "_on_hub")]
    nodes = ids.join(facts, "model_id", "left").select(
        "component_id", "_digest", "_path",
        F.to_json(F.struct("model_id", F.col("_on_hub").isNull().alias("external"), *carried))
        .alias("facts"))
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    columns = ("model_id", "status", "error", "digest", "path")
    schema = StructType([StructField(n, StringType()) for n in columns])

    def build(frame: Any) -> Any:
        import pandas as pd

        rows = [json.loads(text) for text in frame["facts"]]
        # The recorded digest and path: null when not incremental or never recorded, and
        # such a BOM is written.
        previous = {row["model_id"]: (d, p) for row, d, p in
                    zip(rows, frame["_digest"], frame["_path"]) if isinstance(d, str)}
        done = component_boms(rows, out_dir=out_dir, max_depth=max_depth, timestamp=when,
                              previous=previous)
        return pd.DataFrame(done, columns=list(columns))

    # Checkpointed: the queries below must not build every BOM twice.
    outcome = nodes.groupBy("component_id").applyInPandas(build, schema).localCheckpoint(eager=True)
    counts = {r["status"]: r["n"] for r in outcome.groupBy("status")
              .agg(F.count("*").alias("n")).collect()}
    invalid = [r.asDict() for r in outcome.where("status = 'invalid'").select(
        "model_id", "status", "error").limit(10).collect()]
    removed = 0
    if incremental:
        removed = _record_boms(store, outcome, state, when, written=counts.get("written", 0))
    figures = {"written": counts.get("written", 0), "unchanged": counts.get("unchanged", 0),
               "invalid": counts.get("invalid", 0), "removed": removed}
    progress(f"aibom: {figures['written']} BOMs written to {out_dir}, {figures['unchanged']} "
             f"unchanged, {figures['invalid']} invalid (not written), {removed} removed")
    return {**figures, "invalid_examples": invalid}


def _record_boms(store: DeltaStore, outcome: Any, state: Any, when: dt.datetime, *,
                 written: int) -> int:
    """Record the BOMs just written in ``aibom_state``; delete the files and rows of models
    that no longer have a valid BOM there. Returns how many files were removed."""
    from semfin_spark.schemas import AIBOM_STATE

    kept = outcome.where("status IN ('written', 'unchanged')").select("model_id")
    gone = [] if state is None else state.join(kept, "model_id", "left_anti").collect()
    for row in gone:  # a model deleted from the Hub, or whose BOM no longer validates
        with contextlib.suppress(FileNotFoundError):
            os.remove(row["path"])
    if written == 0 and not gone and state is not None:
        return 0  # nothing to record: no empty commit
    rows = outcome.where("status = 'written'").select(
        "model_id", "path", "digest", F.lit(when).cast("timestamp").alias("written_at"))
    keys = rows.select("model_id")
    if gone:
        keys = keys.unionByName(outcome.sparkSession.createDataFrame(
            [(r["model_id"],) for r in gone], "model_id string"))
    store.replace_keys(AIBOM_STATE, rows, keys, operation="AIBOM")
    return len(gone)
