"""The lineage stage: edges, components, chains, licence conflicts, and the report.

Reads ``model_parents``, ``model_fields`` and ``hub_models``; writes ``lineage_edges``,
``lineage_components``, ``lineage_chains`` and ``license_conflicts`` (each overwritten in
one commit); returns the report that ``semfin lineage --report FILE.json`` writes.

Definitions (also in the README):

* edge: child -> parent from ``model_parents``. Its relation is the declared one
  (a ``base_model:<relation>:`` tag or the card's ``base_model_relation``), else the
  child's ``reuse_method`` from ``model_fields``: declared (including the Hub's rule on
  files) or, failing that, imputed (``relation_source = 'imputed'``). Self-loops are
  dropped and counted; parents not in ``hub_models`` stay as external nodes.
* component: a connected component of the undirected graph of edges.
* chain: a root-to-leaf path (root: a node with no parent; leaf: a node with no child);
  a merge lies on one chain per parent path. Its reuse *pattern* is the sequence of edge
  relations, its licence sequence the licences of its nodes, root first.
* a chain is *complete* for a variant when every relation (reuse chains) or every licence
  (licence chains) on it is known: ``declared`` uses declared values only,
  ``with_imputed`` also imputed ones.
* a chain has a *licence conflict* when one of its edges does (``license_conflicts``); the
  incompatible share is the part of the complete licence chains that have one.

Implementation details:
    Everything runs as DataFrame jobs: connected components and path search through the
    graph seam (:mod:`semfin_spark.graph`), licence verdicts by a broadcast join against
    the small table of (parent licence, child licence) verdicts built from
    ``conf/licenses.yaml`` (:func:`judge_edges`, once per edge). The path search carries
    each edge's licences and verdicts, so a chain's licences and its ``license_conflict``
    come with its path, and the conflicts table is the judged edges' conflicts. Only
    aggregate figures reach the driver.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from semfin_spark import graph
from semfin_spark.delta import DeltaStore
from semfin_spark.schemas import (HUB_MODELS, LICENSE_CONFLICTS, LINEAGE_CHAINS,
                                  LINEAGE_COMPONENTS, LINEAGE_EDGES, MODEL_FIELDS, MODEL_PARENTS)
from semfin_spark.session import cut_lineage, read_text, write_text
from semfin_spark.settings import Settings

VARIANTS = ("declared", "with_imputed")

_CHAIN_ROWS_PER_FILE = 2_000_000
"""Chain rows per file when there are enough for several (about 64 MB at 33 bytes a row,
the real graph's), written without the optimized write's shuffle."""
_SEP = " > "


@dataclass(frozen=True)
class LineageInputs:
    """The stage's inputs, read once: edges (self-loops removed), node licences, counts."""

    edges: DataFrame
    nodes: DataFrame
    self_loops: int


def build_edges(store: DeltaStore) -> tuple[DataFrame, DataFrame]:
    """Lineage edges (LINEAGE_EDGES columns) and the self-loops that were dropped.

    Returns:
        ``(edges, self_loops)``; ``self_loops`` has columns child, parent.
    """
    parents = store.read(MODEL_PARENTS)
    fields = store.read(MODEL_FIELDS).where(F.col("field") == "reuse_method").select(
        F.col("model_id").alias("child"),
        F.col("declared_value").alias("_declared_reuse"),
        F.col("imputed_value").alias("_imputed_reuse"))
    known = store.read(HUB_MODELS).select(F.col("id").alias("parent"), F.lit(False).alias("parent_external"))
    raw = parents.select(F.col("model_id").alias("child"), F.col("parent_id").alias("parent"),
                         F.col("relation").alias("_edge_relation"))
    loops = raw.where(F.col("child") == F.col("parent")).select("child", "parent")
    edges = (raw.where(F.col("child") != F.col("parent"))
             .dropDuplicates(["child", "parent"])
             .join(fields, "child", "left")
             .join(known, "parent", "left")
             .select(
                 "child", "parent",
                 F.coalesce("_edge_relation", "_declared_reuse", "_imputed_reuse").alias("relation"),
                 F.when(F.col("_edge_relation").isNotNull() | F.col("_declared_reuse").isNotNull(),
                        F.lit("declared"))
                 .when(F.col("_imputed_reuse").isNotNull(), F.lit("imputed")).alias("relation_source"),
                 F.coalesce("parent_external", F.lit(True)).alias("parent_external")))
    return edges, loops


def node_licenses(store: DeltaStore) -> DataFrame:
    """Per model: ``license_declared`` and ``license_with_imputed`` (declared, else imputed)."""
    return (store.read(MODEL_FIELDS).where(F.col("field") == "license")
            .select(F.col("model_id").alias("id"),
                    F.col("declared_value").alias("license_declared"),
                    F.coalesce("declared_value", "imputed_value").alias("license_with_imputed")))


OUTPUT_TABLES = (LINEAGE_EDGES, LINEAGE_COMPONENTS, LINEAGE_CHAINS, LICENSE_CONFLICTS)


def run_lineage(spark: SparkSession, store: DeltaStore, settings: Settings, *,
                progress: Callable[[str], None] = print,
                last_report: str | None = None) -> dict[str, Any]:
    """Rebuild the lineage tables and return the report (see the module docstring).

    Args:
        spark: the session.
        store: the warehouse's Delta store; ``model_parents`` and ``model_fields`` must exist
            (run ``semfin flatten`` first).
        settings: ``lineage.*`` limits and the licence rules file.
        progress: where progress lines go.
        last_report: the report file an earlier run wrote (the nightly's). When it was
            built from the same inputs as now and the four tables still hold what that
            run wrote, nothing is rebuilt and that report is returned (``unchanged``).

    Returns:
        The report: a JSON-ready dict with ``components``, ``largest_component``,
        ``isolated_models``, ``self_loops``, ``cycles``, ``chains``, ``reuse_patterns``,
        ``license_chains``, ``incompatible_share``, the Delta versions written and
        ``inputs``, the fingerprint of what it was built from (:func:`inputs_fingerprint`).

    Implementation details:
        Each of the four tables' commits carries the fingerprint in its metadata, so a
        run killed between two of them leaves tables whose fingerprints differ, and the
        next run rebuilds them all.
    """
    from semfin_spark.licenses import load_license_rules

    rules_file = settings.conf_file(settings.lineage.licenses_file)
    rules = load_license_rules(rules_file)
    edges, loops = build_edges(store)
    edges = edges.persist(StorageLevel.MEMORY_AND_DISK)
    licences = node_licenses(store).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        inputs = inputs_fingerprint(store, edges, loops, licences, settings, rules_file)
        standing = _standing_report(store, inputs, last_report)
        if standing is not None:
            progress(f"lineage: edges, licences and settings unchanged since the report of "
                     f"{last_report}; its tables stand")
            return standing
        metadata = {"inputs": inputs}
        n_loops = loops.count()
        n_edges = edges.count()
        progress(f"lineage: {n_edges} edges, {n_loops} self-loops dropped")
        store.overwrite(LINEAGE_EDGES, edges, operation="LINEAGE", metadata=metadata)

        report: dict[str, Any] = {"edges": n_edges, "self_loops": n_loops}
        figures, components = _components(spark, store, edges, settings, metadata, progress)
        report.update(figures)
        report["cycles"] = _cycles(spark, edges, components)
        judged = cut_lineage(judge_edges(spark, edges, licences, rules))
        report.update(_chains(spark, store, judged, licences, components, settings, metadata,
                              progress))
        report.update(_conflicts(store, judged, metadata, progress))
        report["table_versions"] = {t.name: store.version(t) for t in OUTPUT_TABLES}
        report["inputs"] = inputs
        return report
    finally:
        edges.unpersist()
        licences.unpersist()


def inputs_fingerprint(store: DeltaStore, edges: DataFrame, loops: DataFrame,
                       licences: DataFrame, settings: Settings, rules_file: Any) -> str:
    """A digest of everything the lineage tables are built from: the edges with their
    relations, the self-loops, every model's licences, the Hub's model ids (isolated
    models are components too), the ``lineage`` and ``graph`` settings and the licence
    rules file, and the output tables' schemas. One Spark job: an order-free sum of row
    hashes."""
    import dataclasses
    import hashlib
    from pathlib import Path

    def hashed(tag: str, frame: DataFrame) -> DataFrame:
        row = F.xxhash64(F.lit(tag), *[F.col(c) for c in frame.columns])
        return frame.select(row.cast("decimal(38,0)").alias("h"))

    rows = (hashed("edge", edges).unionByName(hashed("loop", loops))
            .unionByName(hashed("licence", licences))
            .unionByName(hashed("model", store.read(HUB_MODELS).select("id"))))
    total = rows.agg(F.count("*").alias("n"), F.sum("h").alias("sum")).first()
    digest = hashlib.sha256()
    digest.update(json.dumps([dataclasses.asdict(settings.lineage), dataclasses.asdict(settings.graph)],
                             sort_keys=True).encode())
    digest.update(Path(rules_file).read_bytes())
    # The tables' columns: a release that adds one rebuilds tables an older one wrote.
    digest.update("|".join(t.schema.simpleString() for t in OUTPUT_TABLES).encode())
    digest.update(f"{total['n']}:{total['sum']}".encode())
    return digest.hexdigest()


def _standing_report(store: DeltaStore, inputs: str, last_report: str | None) -> dict[str, Any] | None:
    """The report at ``last_report`` when it and every lineage table's last data commit
    were built from ``inputs`` and the tables hold the versions it names; else None."""
    if not last_report:
        return None
    try:
        text = read_text(last_report, store.spark)
        report = json.loads(text) if text is not None else None
    except (OSError, ValueError, Py4JJavaError):  # unreadable: rebuild, and write it anew
        return None
    if not isinstance(report, dict) or report.get("inputs") != inputs:
        return None
    for table in OUTPUT_TABLES:
        last = store.last_data_commit(table)
        if last is None or last.get("inputs") != inputs \
                or report.get("table_versions", {}).get(table.name) != last["version"]:
            return None
    return {**report, "unchanged": True}


def _components(spark: SparkSession, store: DeltaStore, edges: DataFrame, settings: Settings,
                metadata: dict[str, str],
                progress: Callable[[str], None]) -> tuple[dict[str, Any], DataFrame]:
    models = store.read(HUB_MODELS).select("id")
    external = edges.where("parent_external").select(F.col("parent").alias("id")).distinct()
    nodes = models.unionByName(external).distinct()
    comps = graph.connected_components(spark, edges.select(F.col("child").alias("src"),
                                                           F.col("parent").alias("dst")), nodes,
                                        backend=settings.graph.backend,
                                        local_max_edges=settings.graph.local_max_edges)
    sizes = comps.groupBy("component").agg(F.count("*").alias("component_size"))
    table = (comps.join(sizes, "component")
             .join(external.withColumn("external", F.lit(True)), "id", "left")
             .select(F.col("id").alias("model_id"), F.col("component").alias("component_id"),
                     "component_size", F.coalesce("external", F.lit(False)).alias("external")))
    store.overwrite(LINEAGE_COMPONENTS, table, operation="LINEAGE", metadata=metadata)
    stored = store.read(LINEAGE_COMPONENTS)
    figures = (stored.where("component_size > 1").groupBy("component_id")
               .agg(F.max("component_size").alias("size"))
               .agg(F.count("*").alias("components"), F.max("size").alias("largest"))).collect()[0]
    isolated = stored.where("component_size = 1 AND NOT external").count()
    progress(f"lineage: {figures['components']} components (largest {figures['largest']}), "
             f"{isolated} isolated models")
    return ({"components": figures["components"], "largest_component": figures["largest"] or 0,
             "isolated_models": isolated},
            stored.select(F.col("model_id").alias("id"), F.col("component_id").alias("component")))


def _cycles(spark: SparkSession, edges: DataFrame, components: DataFrame) -> dict[str, Any]:
    on_cycles = graph.find_cycles(spark, edges.select("child", "parent"), components=components)
    return {"nodes_on_cycles": on_cycles.count(),
            "count": on_cycles.select(graph.CYCLE_GROUP_COLUMN).distinct().count()}


def judge_edges(spark: SparkSession, edges: DataFrame, licences: DataFrame, rules: Any) -> DataFrame:
    """Every edge with its ends' licences and the rules' verdict on them, per variant.

    Returns:
        ``edges``' columns and, for each variant ``v`` of :data:`VARIANTS`,
        ``child_license_v``, ``parent_license_v`` (null where unknown or the parent is
        external) and ``verdict_v``, ``rule_v``, ``reason_v`` (``conf/licenses.yaml``'s
        verdict on the pair: ``ok``, ``conflict`` or ``unknown``).

    Implementation details:
        The rules are evaluated on the driver for each pair of the few distinct licences
        (:meth:`~semfin_spark.licenses.LicenseRules.verdict_rows`) and broadcast-joined with
        ``eqNullSafe`` on both licences. The chains and the conflicts table both read
        this one frame, so each edge meets its licences once.
    """
    judged = (edges.join(_licences_as(licences, "child"), "child", "left")
              .join(_licences_as(licences, "parent"), "parent", "left"))
    distinct = sorted({r[0] for r in licences.select("license_with_imputed").distinct().collect()},
                      key=lambda v: (v is None, v or ""))
    verdicts = spark.createDataFrame(
        rules.verdict_rows(distinct),
        "v_parent string, v_child string, verdict string, rule string, reason string")
    for variant in VARIANTS:
        table = verdicts.select(*[F.col(c).alias(f"_{c}") for c in ("v_parent", "v_child")],
                                *[F.col(c).alias(f"{c}_{variant}") for c in ("verdict", "rule", "reason")])
        judged = (judged.join(F.broadcast(table),
                              F.col(f"parent_license_{variant}").eqNullSafe(F.col("_v_parent"))
                              & F.col(f"child_license_{variant}").eqNullSafe(F.col("_v_child")), "left")
                  .drop("_v_parent", "_v_child"))
    return judged


def _licences_as(licences: DataFrame, role: str) -> DataFrame:
    """``licences`` (:func:`node_licenses`) with the id named ``role`` and each variant's
    licence ``{role}_license_{variant}``, to join on a ``role`` column."""
    return licences.select(F.col("id").alias(role),
                           *[F.col(f"license_{v}").alias(f"{role}_license_{v}") for v in VARIANTS])


def _chains(spark: SparkSession, store: DeltaStore, judged: DataFrame, licences: DataFrame,
            components: DataFrame, settings: Settings, metadata: dict[str, str],
            progress: Callable[[str], None]) -> dict[str, Any]:
    limits = settings.lineage
    # Each edge carries its ends' licences and whether it is a conflict, so a path's
    # licences are its first edge's parent's followed by its edges' children's, and its
    # conflict flag is any of its edges': no join of the paths with the licences, and no
    # explode of the paths against the conflicting edges afterwards.
    relations = judged.select(
        "child", "parent",
        F.when(F.col("relation_source") == "declared", F.col("relation")).alias("relation_declared"),
        F.col("relation").alias("relation_with_imputed"),
        *[f"{role}_license_{v}" for v in VARIANTS for role in ("child", "parent")],
        *[F.coalesce(F.col(f"verdict_{v}") == "conflict", F.lit(False)).alias(f"conflict_{v}")
          for v in VARIANTS])
    paths = graph.root_to_leaf_paths(spark, relations, max_depth=limits.max_depth,
                                     max_fanout=limits.max_fanout, components=components,
                                     unique_pairs=True)  # build_edges keeps one per pair
    edge_values = F.col(graph.EDGE_VALUES_COLUMN)
    counts = paths.agg(F.count(F.lit(1)).alias("paths"),
                       F.count(F.when(F.col("depth") == 0, 1)).alias("edgeless")).first()
    # A root's licences are its first edge's parent's. A root with more children than
    # lineage.max_fanout is a path without edges: those few read the licences table.
    # F.get: null past the end of an array whatever spark.sql.ansi.enabled says.
    chains = paths.select("*", *[F.get(edge_values, 0).getField(f"parent_license_{v}")
                                 .alias(f"root_license_{v}") for v in VARIANTS])
    if counts["edgeless"]:
        chains = chains.where(F.col("depth") > 0).unionByName(
            paths.where(F.col("depth") == 0).join(_licences_as(licences, "root"), "root", "left"))
    variants = []
    # A field of an array of structs is read as an array (no F.transform: Spark evaluates
    # higher-order functions interpreted, row by row, and there are millions of paths).
    for variant in VARIANTS:
        rel_values = edge_values.getField(f"relation_{variant}")
        lic_values = F.concat(F.array(F.col(f"root_license_{variant}")),
                              edge_values.getField(f"child_license_{variant}"))
        variants.append(chains.select(
            F.lit(variant).alias("variant"), "root", "leaf", "path", F.col("depth").cast("int"),
            rel_values.alias("relations"),
            _pattern(rel_values).alias("pattern"),
            lic_values.alias("licenses"),
            _pattern(lic_values).alias("license_pattern"),
            F.array_contains(edge_values.getField(f"conflict_{variant}"), True).alias("license_conflict"),
            "truncated"))
    table = variants[0].unionByName(variants[1])
    files = len(VARIANTS) * counts["paths"] // _CHAIN_ROWS_PER_FILE
    # Fewer files than the session has cores would build the rows in fewer tasks than
    # cores: there (a cluster) the optimized write's shuffle costs less than idle cores.
    direct = files > 1 and files >= spark.sparkContext.defaultParallelism
    store.overwrite(LINEAGE_CHAINS, table, operation="LINEAGE", metadata=metadata,
                    files=files if direct else None)
    stored = store.read(LINEAGE_CHAINS)
    stats = {r["variant"]: r for r in stored.groupBy("variant").agg(
        F.count("*").alias("paths"),
        F.count("pattern").alias("reuse_chains"),
        F.count("license_pattern").alias("license_chains"),
        F.countDistinct("pattern").alias("patterns"),
        # A licence chain is incompatible when one of its edges is a conflict.
        F.count(F.when(F.col("license_pattern").isNotNull() & F.col("license_conflict"), 1))
        .alias("incompatible")).collect()}
    declared_patterns = stored.where("variant = 'declared' AND pattern IS NOT NULL").select("pattern").distinct()
    new_patterns = (stored.where("variant = 'with_imputed' AND pattern IS NOT NULL").select("pattern")
                    .distinct().join(declared_patterns, "pattern", "left_anti"))
    n_new = new_patterns.count()
    examples = [r[0] for r in new_patterns.orderBy("pattern").limit(20).collect()]
    d, i = stats.get("declared"), stats.get("with_imputed")
    get = lambda row, key: row[key] if row else 0  # noqa: E731
    progress(f"lineage: {get(d, 'paths')} root-to-leaf paths; complete reuse chains "
             f"{get(d, 'reuse_chains')} declared -> {get(i, 'reuse_chains')} with imputed")
    share = {v: (round(get(stats.get(v), "incompatible") / get(stats.get(v), "license_chains"), 4)
                 if get(stats.get(v), "license_chains") else None) for v in VARIANTS}
    return {
        "paths": get(d, "paths"),
        "chains": {"declared": get(d, "reuse_chains"), "with_imputed": get(i, "reuse_chains"),
                   "expansion_pct": _pct_gain(get(d, "reuse_chains"), get(i, "reuse_chains"))},
        "reuse_patterns": {"declared": get(d, "patterns"), "with_imputed": get(i, "patterns"),
                           "new": n_new, "new_examples": examples},
        "license_chains": {"declared": get(d, "license_chains"), "with_imputed": get(i, "license_chains"),
                           "expansion_pct": _pct_gain(get(d, "license_chains"), get(i, "license_chains"))},
        "incompatible_share": share,
    }


def _pattern(values: Any) -> Any:
    """``a > b > c``, or null when any value is unknown (an incomplete chain).

    ``sort_array`` puts nulls first, so the array holds a null when its sorted first
    element is one: the same test as ``F.forall(values, isNotNull)``, without a
    higher-order function (evaluated interpreted, row by row)."""
    has_null = (F.size(values) > 0) & F.get(F.sort_array(values), 0).isNull()
    return F.when(~has_null, F.array_join(values, _SEP))


def _pct_gain(before: int, after: int) -> float | None:
    return round(100.0 * (after - before) / before, 2) if before else None


def _conflicts(store: DeltaStore, judged: DataFrame, metadata: dict[str, str],
               progress: Callable[[str], None]) -> dict[str, Any]:
    per_variant = [
        judged.where(F.col(f"verdict_{variant}") == "conflict").select(
            F.lit(variant).alias("variant"), "child", "parent",
            *[F.col(f"{c}_{variant}").alias(c) for c in ("child_license", "parent_license",
                                                         "verdict", "rule", "reason")])
        for variant in VARIANTS]
    store.overwrite(LICENSE_CONFLICTS, per_variant[0].unionByName(per_variant[1]),
                    operation="LINEAGE", metadata=metadata)
    n_conf = {r[0]: r[1] for r in store.read(LICENSE_CONFLICTS).groupBy("variant").count().collect()}
    progress(f"lineage: licence conflicts on {n_conf.get('declared', 0)} edges declared, "
             f"{n_conf.get('with_imputed', 0)} with imputed")
    return {"license_conflicts": {v: n_conf.get(v, 0) for v in VARIANTS}}


def write_report(report: dict[str, Any], path: str, spark: SparkSession | None = None) -> None:
    """Write the report as indented JSON, whole, at a local path or (with ``spark``) any
    location Spark reaches, as the warehouse's ``<warehouse>/reports/lineage.json`` on an
    object store (:func:`~semfin_spark.session.write_text`)."""
    write_text(path, json.dumps(report, indent=2, sort_keys=True, default=str), spark)
