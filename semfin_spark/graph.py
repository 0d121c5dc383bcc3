"""The graph seam: connected components, root-to-leaf paths and cycles, on DataFrames.

Everything graph in SemFin goes through this module; callers never ask which backend runs.

* :func:`connected_components`: GraphFrames' ``connectedComponents`` when its jar is in the
  JVM (a cluster started with ``--packages io.graphframes:graphframes-spark4_2.13:<v>``),
  otherwise the same large-star / small-star algorithm GraphFrames uses (Kiveris et al.,
  "Connected Components in MapReduce and Beyond", SoCC 2014) written with DataFrame joins.
  Both return the smallest member id as the component id, so results are identical.
* :func:`root_to_leaf_paths`: breadth-first expansion from every root, one join per level,
  bounded by ``max_depth``; a path that would revisit a node stops there (a cycle) and is
  marked ``truncated``. GraphFrames' ``bfs`` finds shortest paths between two vertex sets,
  not every root-to-leaf path, so this runs on DataFrames with either backend.
* :func:`find_cycles`: nodes that lie on directed cycles, found by repeatedly trimming nodes
  without a parent or without a child, which can never loop forever.

Implementation details:
    All work is DataFrame joins and aggregations on the executors. The driver only sees
    scalar counts to decide convergence, and cuts the lineage of iterative plans with
    checkpoints (``checkpoint`` when a checkpoint folder is set, else ``localCheckpoint``).
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

EDGE_VALUES_COLUMN = "edge_values"
"""Column of :func:`root_to_leaf_paths`: per edge on the path, a struct of its extra columns."""

CYCLE_GROUP_COLUMN = "cycle_group"
"""Column of :func:`find_cycles`: the smallest node id of the cycle group a node is on."""


class GraphError(RuntimeError):
    """A graph backend was asked for but is not available, or an algorithm did not converge."""


def graphframes_available(spark: SparkSession) -> bool:
    """True when GraphFrames' classes are in the JVM of ``spark`` (never on Spark Connect)."""
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        jvm.java.lang.Class.forName("org.graphframes.GraphFrame")
        return True
    except Exception:
        return False


def _cut(df: DataFrame) -> DataFrame:
    """Materialise ``df`` and drop its lineage, so iterative plans stay small."""
    spark = df.sparkSession
    if spark.sparkContext.getCheckpointDir():
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


# ------------------------------------------------------------------ connected components

def connected_components(spark: SparkSession, edges: DataFrame, nodes: DataFrame | None = None, *,
                         backend: str = "auto", max_iterations: int = 100) -> DataFrame:
    """Connected components of an undirected graph.

    Args:
        spark: the session.
        edges: string columns ``src``, ``dst``; direction, duplicates and self-loops are ignored.
        nodes: optional column ``id``: nodes without edges become their own component.
        backend: ``auto`` (GraphFrames when present), ``graphframes`` or ``dataframe``.
        max_iterations: bound on large-star/small-star rounds (each halves the work; real
            graphs converge in a handful).

    Returns:
        ``(id, component)``: every node once, ``component`` the smallest id of its component.

    Raises:
        GraphError: ``graphframes`` asked for without its jar, or no convergence.

    Examples:
        >>> e = spark.createDataFrame([("b", "a"), ("c", "b"), ("y", "x")], ["src", "dst"])  # doctest: +SKIP
        >>> sorted(map(tuple, connected_components(spark, e).collect()))                     # doctest: +SKIP
        [('a', 'a'), ('b', 'a'), ('c', 'a'), ('x', 'x'), ('y', 'x')]
    """
    if backend not in ("auto", "graphframes", "dataframe"):
        raise ValueError(f"graph backend must be auto, graphframes or dataframe, not {backend!r}")
    use_gf = graphframes_available(spark) if backend == "auto" else backend == "graphframes"
    if use_gf and not graphframes_available(spark):
        raise GraphError("graph backend 'graphframes' asked for, but the GraphFrames jar is not in "
                         "the JVM: start Spark with --packages io.graphframes:graphframes-spark4_2.13:<v>")
    pairs = (edges.select(F.col("src").cast("string").alias("src"), F.col("dst").cast("string").alias("dst"))
             .where(F.col("src").isNotNull() & F.col("dst").isNotNull()))
    all_nodes = pairs.select(F.col("src").alias("id")).union(pairs.select(F.col("dst").alias("id")))
    if nodes is not None:
        all_nodes = all_nodes.union(nodes.select(F.col("id").cast("string")).where(F.col("id").isNotNull()))
    all_nodes = all_nodes.distinct()
    if use_gf:
        return _components_graphframes(all_nodes, pairs)
    return _components_dataframe(all_nodes, pairs, max_iterations)


def _components_graphframes(nodes: DataFrame, pairs: DataFrame) -> DataFrame:
    from graphframes import GraphFrame  # optional: only with the jar on the classpath

    labelled = GraphFrame(nodes, pairs).connectedComponents()
    smallest = labelled.groupBy("component").agg(F.min("id").alias("_min"))
    return (labelled.join(smallest, "component")
            .select("id", F.col("_min").alias("component")))


def _components_dataframe(nodes: DataFrame, pairs: DataFrame, max_iterations: int) -> DataFrame:
    # Oriented, deduplicated edges (larger id -> smaller id), self-loops gone.
    current = _cut(pairs.where(F.col("src") != F.col("dst"))
                   .select(F.greatest("src", "dst").alias("u"), F.least("src", "dst").alias("v"))
                   .distinct())
    signature = _signature(current)
    for iteration in range(1, max_iterations + 1):
        current = _cut(_small_star(_large_star(current)))
        new_signature = _signature(current)
        log.info("connected components: round %d, %d edges", iteration, new_signature[0])
        if new_signature == signature:
            break
        signature = new_signature
    else:
        raise GraphError(f"connected components did not converge in {max_iterations} rounds")
    # Converged: a star per component, every edge (member -> smallest member).
    labelled = current.select(F.col("u").alias("id"), F.col("v").alias("component"))
    roots = current.select(F.col("v").alias("id"), F.col("v").alias("component"))
    labels = labelled.union(roots).distinct()
    return (nodes.join(labels, "id", "left")
            .select("id", F.coalesce("component", "id").alias("component")))


def _large_star(edges: DataFrame) -> DataFrame:
    """Connect every larger neighbour of u to the smallest node of u's neighbourhood."""
    both = edges.select("u", "v").union(edges.select(F.col("v").alias("u"), F.col("u").alias("v")))
    smallest = both.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
    out = (both.join(smallest, "u").where(F.col("v") > F.col("u"))
           .select(F.col("v").alias("a"), F.col("m").alias("b")))
    return _oriented(out)


def _small_star(edges: DataFrame) -> DataFrame:
    """Connect u and its smaller neighbours to the smallest of them."""
    smallest = edges.groupBy("u").agg(F.min("v").alias("m"))
    joined = edges.join(smallest, "u")
    out = (joined.select(F.col("v").alias("a"), F.col("m").alias("b"))
           .union(joined.select(F.col("u").alias("a"), F.col("m").alias("b"))))
    return _oriented(out)


def _oriented(pairs: DataFrame) -> DataFrame:
    return (pairs.where(F.col("a") != F.col("b"))
            .select(F.greatest("a", "b").alias("u"), F.least("a", "b").alias("v")).distinct())


def _signature(edges: DataFrame) -> tuple[int, int]:
    row = edges.agg(F.count("*").alias("n"),
                    F.coalesce(F.sum(F.xxhash64("u", "v").cast("decimal(38,0)")), F.lit(0)).alias("h")).collect()[0]
    return int(row["n"]), int(row["h"])


# ------------------------------------------------------------------ paths

def drop_self_loops(edges: DataFrame) -> DataFrame:
    """``edges`` (``child``, ``parent``, ...) without rows whose child is its own parent."""
    return edges.where(F.col("child") != F.col("parent"))


def root_to_leaf_paths(spark: SparkSession, edges: DataFrame, *, max_depth: int = 32,
                       max_fanout: int | None = None) -> DataFrame:
    """Every root-to-leaf path of a directed graph given as child -> parent edges.

    Args:
        spark: the session.
        edges: columns ``child``, ``parent`` and any extra columns (e.g. ``relation``),
            carried along per edge. Self-loops and duplicate (child, parent) pairs are dropped.
        max_depth: paths stop after this many edges (``truncated``).
        max_fanout: a node with more children than this ends its paths there
            (``truncated``); None for no limit.

    Returns:
        ``root``, ``leaf``, ``path`` (ids root..leaf), ``depth`` (edges), ``edge_values``
        (array of structs of the extra columns, one per edge, root side first) and
        ``truncated`` (cut at ``max_depth``/``max_fanout``, or stopped before a node already
        on the path: a cycle). A root has no parent, a leaf no child; nodes on a cycle with
        no root above them yield no path.

    Examples:
        >>> e = spark.createDataFrame([("b", "a", "finetune"), ("c", "b", "quantized")],
        ...                           ["child", "parent", "relation"])        # doctest: +SKIP
        >>> root_to_leaf_paths(spark, e).first().path                          # doctest: +SKIP
        ['a', 'b', 'c']
    """
    extras = [c for c in edges.columns if c not in ("child", "parent")]
    clean = drop_self_loops(edges.where(F.col("child").isNotNull() & F.col("parent").isNotNull())) \
        .dropDuplicates(["child", "parent"])
    edge_struct = F.struct(*[F.col(c) for c in extras]) if extras else F.struct(F.lit(True).alias("edge"))
    step = clean.select("child", "parent", edge_struct.alias("_edge"))
    step = _cut(step)
    fanout = step.groupBy("parent").agg(F.count("*").alias("_children"))
    children_of = fanout.select(F.col("parent").alias("node"), "_children")
    roots = (step.select(F.col("parent").alias("node")).distinct()
             .join(step.select(F.col("child").alias("node")), "node", "left_anti"))
    edge_type = step.schema["_edge"].dataType
    frontier = roots.select(
        F.col("node"), F.array("node").alias("path"),
        F.array().cast(f"array<{edge_type.simpleString()}>").alias(EDGE_VALUES_COLUMN))
    done: list[DataFrame] = [_finish(frontier.where(F.lit(False)), truncated=False)]
    for depth in range(0, max_depth + 1):
        frontier = _cut(frontier.join(children_of, "node", "left"))
        if frontier.limit(1).count() == 0:
            break
        is_leaf = F.col("_children").isNull()
        too_wide = F.lit(False) if max_fanout is None else F.col("_children") > F.lit(max_fanout)
        stop = F.lit(depth >= max_depth)
        done.append(_finish(frontier.where(is_leaf), truncated=False))
        done.append(_finish(frontier.where(~is_leaf & (too_wide | stop)), truncated=True))
        going = frontier.where(~is_leaf & ~too_wide & ~stop).drop("_children")
        expanded = going.join(step, going.node == step.parent).select(
            F.col("child"), "path", EDGE_VALUES_COLUMN, "_edge",
            F.array_contains("path", F.col("child")).alias("_cycle"))
        done.append(_finish(expanded.where("_cycle").select(
            F.element_at("path", -1).alias("node"), "path", EDGE_VALUES_COLUMN), truncated=True)
            .dropDuplicates(["path"]))
        frontier = expanded.where(~F.col("_cycle")).select(
            F.col("child").alias("node"), F.concat("path", F.array("child")).alias("path"),
            F.concat(EDGE_VALUES_COLUMN, F.array("_edge")).alias(EDGE_VALUES_COLUMN))
    result = done[0]
    for part in done[1:]:
        result = result.unionByName(part)
    return result


def _finish(rows: DataFrame, *, truncated: bool) -> DataFrame:
    return rows.select(
        F.element_at("path", 1).alias("root"), F.element_at("path", -1).alias("leaf"), "path",
        (F.size("path") - 1).cast("int").alias("depth"), EDGE_VALUES_COLUMN,
        F.lit(truncated).alias("truncated"))


# ------------------------------------------------------------------ cycles

def find_cycles(spark: SparkSession, edges: DataFrame, *, max_depth: int = 32,
                max_iterations: int = 1000) -> DataFrame:
    """Nodes on directed cycles, grouped.

    Repeatedly removes nodes that have no parent or no child among the remaining edges
    (such a node cannot be on a cycle); what remains is the cycles and any node on a path
    from one cycle to another. Groups are connected components of what remains.

    Args:
        spark: the session.
        edges: columns ``child``, ``parent``; self-loops are ignored (counted elsewhere).
        max_depth: unused by the trimming; kept so callers pass the lineage limits uniformly.
        max_iterations: bound on trimming rounds.

    Returns:
        ``(id, cycle_group)``: each node on a cycle once; ``cycle_group`` the smallest id of
        its group, so ``count(distinct cycle_group)`` counts the cycles' groups.
    """
    current = _cut(drop_self_loops(edges.select("child", "parent")).distinct())
    size = current.count()
    for _ in range(max_iterations):
        has_parent = current.select(F.col("child").alias("n")).distinct()
        has_child = current.select(F.col("parent").alias("n")).distinct()
        both = has_parent.join(has_child, "n")
        trimmed = _cut(current.join(both.select(F.col("n").alias("child")), "child", "left_semi")
                       .join(both.select(F.col("n").alias("parent")), "parent", "left_semi"))
        new_size = trimmed.count()
        current = trimmed
        if new_size == size:
            break
        size = new_size
    else:
        raise GraphError(f"cycle trimming did not converge in {max_iterations} rounds")
    groups = connected_components(spark, current.select(F.col("child").alias("src"),
                                                         F.col("parent").alias("dst")),
                                  backend="dataframe")
    return groups.select("id", F.col("component").alias(CYCLE_GROUP_COLUMN))
