"""The graph seam: connected components, root-to-leaf paths and cycles, on DataFrames.

Everything graph in SemFin goes through this module; callers never ask which backend runs.

* :func:`connected_components`: GraphFrames' ``connectedComponents`` when its jar is in the
  JVM (a session started with ``--packages io.graphframes:graphframes-spark4_2.13:<v>``),
  otherwise the large-star / small-star algorithm GraphFrames itself uses (Kiveris et al.,
  "Connected Components in MapReduce and Beyond", SoCC 2014), written with DataFrame joins.
  Both backends name a component by its smallest member id, so their results are identical.
* :func:`root_to_leaf_paths`: every maximal path from a root down to a leaf, found by
  breadth-first expansion, one join per level, bounded by ``max_depth``. GraphFrames'
  ``bfs`` finds shortest paths between two vertex sets, not every root-to-leaf path, so this
  runs on DataFrames whichever backend is present.
* :func:`find_cycles`: the nodes on directed cycles, grouped by strongly connected
  component; trimming plus forward/backward colouring, which always terminates.
* :func:`self_loops` and :func:`drop_self_loops`: the rows a child names itself as parent.

Edge conventions: components take undirected ``src``/``dst`` pairs; paths and cycles take
directed ``child`` -> ``parent`` rows (a model and the model it derives from). Ids are
strings; rows with a null id are ignored. "Smallest" is Spark's string order (UTF-8 bytes),
which equals Python's ``min`` on ``str``.

Implementation details:
    Everything runs as DataFrame joins and aggregations on the executors; no Python UDF, no
    ``collect``. The driver only receives the scalars that decide whether a loop goes on
    (how many rows changed or go on), mostly as ``DataFrame.observe`` metrics of the job
    that materialises a step. Iterative plans would grow with every round, so their
    lineage is cut: ``DataFrame.checkpoint`` on a cluster whose session has a checkpoint
    folder (``semfin_spark.session.build_session`` sets one in the warehouse), else
    ``localCheckpoint`` (in local mode it is as safe, and one job cheaper). Returned
    DataFrames read those materialised pieces, so using them twice computes nothing again.
    Reliable checkpoint files stay in the checkpoint folder unless
    ``spark.cleaner.referenceTracking.cleanCheckpoints`` is on.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType

log = logging.getLogger(__name__)

BACKENDS = ("auto", "graphframes", "dataframe")
"""Values of ``backend`` (and of the ``graph.backend`` setting)."""

COMPONENT_COLUMNS = ("id", "component")
"""Columns of :func:`connected_components`."""

EDGE_VALUES_COLUMN = "edge_values"
"""Column of :func:`root_to_leaf_paths`: per edge on the path, a struct of its extra columns."""

PATH_COLUMNS = ("root", "leaf", "path", "depth", EDGE_VALUES_COLUMN, "truncated")
"""Columns of :func:`root_to_leaf_paths`."""

CYCLE_GROUP_COLUMN = "cycle_group"
"""Column of :func:`find_cycles`: the smallest node id of the node's cycle group."""

_GRAPHFRAMES_CLASS = "org.graphframes.GraphFrame"
_GRAPHFRAMES_CHECKPOINT_INTERVAL = 2  # GraphFrames' default
_STORAGE = StorageLevel.MEMORY_AND_DISK


class GraphError(RuntimeError):
    """Base class of the graph seam's errors."""


class GraphFramesUnavailableError(GraphError):
    """``backend="graphframes"`` was asked for, but GraphFrames is not in this session."""


class GraphConvergenceError(GraphError):
    """An iterative algorithm hit its iteration bound before converging."""


# ------------------------------------------------------------------ backend

def graphframes_available(spark: SparkSession) -> bool:
    """True when GraphFrames can run in ``spark``: its classes are in the JVM and its
    Python package is importable.

    Never raises: on Spark Connect (no JVM gateway) or on any error the answer is False.
    The ``graphframes`` package is not imported here, only looked up.

    Args:
        spark: the session to probe.

    Returns:
        Whether ``connected_components(..., backend="auto")`` will use GraphFrames.

    Examples:
        >>> graphframes_available(spark)   # doctest: +SKIP
        False

    Implementation details:
        One ``Class.forName`` call on the driver's JVM through the Py4J gateway, with the
        thread's context class loader (the one ``--packages``/``--jars`` extend).
    """
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
        if jvm is None:
            return False
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(_GRAPHFRAMES_CLASS, False, loader)
        return importlib.util.find_spec("graphframes") is not None
    except Exception:  # noqa: BLE001 - a probe: anything going wrong means "not available"
        return False


def _use_graphframes(spark: SparkSession, backend: str) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"graph backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "dataframe":
        return False
    available = graphframes_available(spark)
    if backend == "graphframes" and not available:
        raise GraphFramesUnavailableError(
            "graph backend 'graphframes' was asked for, but GraphFrames is not in this session "
            "(its classes are not in the JVM or the graphframes Python package is missing): "
            "start Spark with --packages io.graphframes:graphframes-spark4_2.13:<version>, "
            "or use backend 'auto' or 'dataframe'")
    return available


# ------------------------------------------------------------------ materialising

def _checkpoint_dir(spark: SparkSession) -> str | None:
    try:
        return spark.sparkContext.getCheckpointDir()
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return None


def _reliable_checkpoints(spark: SparkSession) -> bool:
    """Reliable checkpoints on a cluster with a checkpoint folder; local ones otherwise.

    In local mode the driver is the only executor: a local checkpoint is as safe as a
    reliable one, and costs one job instead of two (count, then write the files).
    """
    try:
        local = spark.sparkContext.master.startswith("local")
    except Exception:  # noqa: BLE001 - Spark Connect: no SparkContext to ask
        return False
    return not local and bool(_checkpoint_dir(spark))


def _cut(df: DataFrame) -> DataFrame:
    """Materialise ``df`` now and drop its lineage, so iterative plans stay small."""
    if not _reliable_checkpoints(df.sparkSession):
        return df.localCheckpoint(eager=True)
    # A reliable checkpoint computes its input twice (count, then write) unless cached.
    df.persist(_STORAGE)
    try:
        return df.checkpoint(eager=True)
    finally:
        df.unpersist()


def _cut_counted(df: DataFrame, **counts: Column) -> tuple[DataFrame, dict[str, int]]:
    """:func:`_cut`, also returning the given aggregates (``F.count`` expressions) computed
    in the same job (``DataFrame.observe``): a loop learns whether to go on without
    reading its data again."""
    observation = Observation()
    cut = _cut(df.observe(observation, *[expr.alias(name) for name, expr in counts.items()]))
    return cut, {name: int(value or 0) for name, value in observation.get.items()}


def _rows() -> Column:
    return F.count(F.lit(1))


def _rows_where(condition: Column) -> Column:
    return F.count(F.when(condition, 1))


# ------------------------------------------------------------------ connected components

def connected_components(spark: SparkSession, edges: DataFrame, nodes: DataFrame | None = None, *,
                         backend: str = "auto", max_iterations: int = 100) -> DataFrame:
    """Connected components of an undirected graph, each named by its smallest node id.

    Args:
        spark: the session.
        edges: columns ``src`` and ``dst`` (cast to string). Direction does not matter;
            self-loops, duplicate edges and rows with a null end are harmless.
        nodes: optional, column ``id``: nodes without any edge become their own component.
            Other columns are ignored.
        backend: ``"auto"`` (GraphFrames when :func:`graphframes_available`, else the
            DataFrame algorithm), ``"graphframes"`` or ``"dataframe"``.
        max_iterations: bound on large-star/small-star rounds. The algorithm needs
            O(log² n) rounds; the real Hub lineage graph converges in a handful.

    Returns:
        Columns ``id`` (string), ``component`` (string): every node once (from ``edges``
        and ``nodes``), ``component`` the smallest id of its connected component. Both
        backends return exactly the same rows.

    Raises:
        ValueError: unknown ``backend``.
        GraphFramesUnavailableError: ``backend="graphframes"`` without GraphFrames.
        GraphConvergenceError: not converged within ``max_iterations`` rounds.

    Examples:
        >>> e = spark.createDataFrame([("b", "a"), ("c", "b"), ("y", "x")], ["src", "dst"])  # doctest: +SKIP
        >>> n = spark.createDataFrame([("lonely",)], ["id"])                                  # doctest: +SKIP
        >>> sorted(map(tuple, connected_components(spark, e, n).collect()))                  # doctest: +SKIP
        [('a', 'a'), ('b', 'a'), ('c', 'a'), ('lonely', 'lonely'), ('x', 'x'), ('y', 'x')]

    Implementation details:
        DataFrame backend: the input is read once, node ids are numbered once
        (``distinct`` then ``monotonically_increasing_id``, checkpointed so the numbers
        never change) and the rounds run on pairs of longs. Each round is a large-star then
        a small-star step (``groupBy`` + join pairs on the executors) and is checkpointed;
        the edge table never outgrows the input. After each round one aggregation checks
        whether the edges form stars (every node linked to its component's smallest node
        only); just that yes/no reaches the driver. The final id -> smallest-member mapping
        is a join and a window ``min`` per component. GraphFrames backend:
        ``GraphFrame.connectedComponents`` (the same algorithm, with its own long ids), then
        the same smallest-member mapping.
    """
    use_graphframes = _use_graphframes(spark, backend)
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be at least 1, not {max_iterations}")
    # Read the input once: it is used twice below and may be an expensive plan.
    pairs = _cut(edges.select(F.col("src").cast("string").alias("src"),
                              F.col("dst").cast("string").alias("dst"))
                 .where(F.col("src").isNotNull() & F.col("dst").isNotNull()))
    ids = pairs.select(F.col("src").alias("id")).union(pairs.select(F.col("dst").alias("id")))
    if nodes is not None:
        ids = ids.union(nodes.select(F.col("id").cast("string").alias("id"))
                        .where(F.col("id").isNotNull()))
    ids = ids.distinct()
    if use_graphframes:
        return _components_graphframes(spark, ids, pairs, max_iterations)
    return _components_dataframe(ids, pairs, max_iterations)


def _components_graphframes(spark: SparkSession, ids: DataFrame, pairs: DataFrame,
                            max_iterations: int) -> DataFrame:
    from graphframes import GraphFrame  # optional: only with GraphFrames in the session

    method = GraphFrame.connectedComponents
    accepts = inspect.signature(method).parameters
    options: dict[str, object] = {"algorithm": "graphframes", "broadcastThreshold": 1_000_000}
    if _checkpoint_dir(spark):
        options["checkpointInterval"] = _GRAPHFRAMES_CHECKPOINT_INTERVAL
    elif "use_local_checkpoints" in accepts:
        options.update(checkpointInterval=_GRAPHFRAMES_CHECKPOINT_INTERVAL, use_local_checkpoints=True)
    else:
        options["checkpointInterval"] = 0  # older GraphFrames: no folder, no checkpoints
    if "max_iter" in accepts:
        options["max_iter"] = max_iterations
    labelled = GraphFrame(ids, pairs).connectedComponents(**options)
    return _smallest_member(labelled.select("id", F.col("component").alias("_label")))


def _smallest_member(labelled: DataFrame) -> DataFrame:
    """``(id, _label)`` -> ``(id, component)``: the label replaced by its smallest id."""
    smallest = F.min("id").over(Window.partitionBy("_label"))
    return labelled.select("id", smallest.alias("component"))


def _components_dataframe(ids: DataFrame, pairs: DataFrame, max_iterations: int) -> DataFrame:
    # The numbering must be computed once: monotonically_increasing_id is not stable
    # if Spark recomputes the plan, so it is checkpointed right away.
    numbered = _cut(ids.withColumn("vid", F.monotonically_increasing_id()))
    left = numbered.select(F.col("id").alias("src"), F.col("vid").alias("a"))
    right = numbered.select(F.col("id").alias("dst"), F.col("vid").alias("b"))
    star = _cut(pairs.join(left, "src").join(right, "dst")
                .where(F.col("a") != F.col("b"))
                .select(F.least("a", "b").alias("src"), F.greatest("a", "b").alias("dst"))
                .distinct())
    rounds = 0
    # A round on edges that already form stars returns them unchanged, so the first
    # round needs no check before it.
    while rounds == 0 or not _is_star_forest(star):
        if rounds == max_iterations:
            raise GraphConvergenceError(
                f"connected components did not converge in {max_iterations} rounds; "
                "raise max_iterations")
        rounds += 1
        # Cut every round: a round reads its input about nine times, and reading a
        # checkpoint measured several times faster than reading a persisted DataFrame.
        star = _cut(_small_star(_large_star(star)))
        log.info("connected components: round %d done", rounds)
    labels = star.select(F.col("dst").alias("vid"), F.col("src").alias("_label"))
    labelled = (numbered.join(labels, "vid", "left")
                .select("id", F.coalesce("_label", "vid").alias("_label")))
    return _smallest_member(labelled)


def _large_star(star: DataFrame) -> DataFrame:
    """Edges ``src < dst`` -> edges ``src > dst``: for every node u, each neighbour larger
    than u is linked to the smallest node of u's closed neighbourhood."""
    both = star.union(star.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    smallest = both.groupBy("src").agg(F.least(F.min("dst"), F.col("src")).alias("m"))
    # One row per input edge; duplicates are harmless to the small-star step, which ends
    # with its own distinct, so none is paid for here.
    return star.join(smallest, "src").select(F.col("dst").alias("src"), F.col("m").alias("dst"))


def _small_star(star: DataFrame) -> DataFrame:
    """Edges ``src > dst`` -> edges ``src < dst``: every node u and its smaller neighbours
    are linked to the smallest of those neighbours."""
    smallest = star.groupBy("src").agg(F.min("dst").alias("m"))
    neighbours = (star.join(smallest, "src")
                  .select(F.col("m").alias("src"), F.col("dst"))
                  .where(F.col("src") != F.col("dst")))
    itself = smallest.select(F.col("m").alias("src"), F.col("src").alias("dst"))
    return neighbours.union(itself).distinct()


def _is_star_forest(star: DataFrame) -> bool:
    """Converged: every node hangs from exactly one centre, and no centre hangs from another.

    Edges keep ``src < dst`` after a small-star step, so each star's centre is its smallest
    node; the large-star/small-star steps never change connectivity, so the stars are the
    components. One aggregation job; only its single count reaches the driver.
    """
    roles = (star.select(F.col("src").alias("node"), F.lit(1).alias("_centre"), F.lit(0).alias("_member"))
             .union(star.select(F.col("dst").alias("node"), F.lit(0), F.lit(1))))
    wrong = (roles.groupBy("node")
             .agg(F.max("_centre").alias("_centre"), F.sum("_member").alias("_member"))
             .where((F.col("_member") > 1) | ((F.col("_centre") == 1) & (F.col("_member") > 0))))
    return wrong.isEmpty()


# ------------------------------------------------------------------ self-loops

def self_loops(edges: DataFrame) -> DataFrame:
    """The rows of ``edges`` whose ``child`` is its own ``parent`` (all columns kept).

    Examples:
        >>> e = spark.createDataFrame([("a", "a"), ("b", "a")], ["child", "parent"])  # doctest: +SKIP
        >>> self_loops(e).count()                                                    # doctest: +SKIP
        1
    """
    return edges.where(F.col("child") == F.col("parent"))


def drop_self_loops(edges: DataFrame) -> DataFrame:
    """``edges`` without the rows of :func:`self_loops` (rows with a null id stay)."""
    return edges.where(F.col("child").isNull() | F.col("parent").isNull()
                       | (F.col("child") != F.col("parent")))


# ------------------------------------------------------------------ paths

def root_to_leaf_paths(spark: SparkSession, edges: DataFrame, *, max_depth: int = 32,
                       max_fanout: int | None = None) -> DataFrame:
    """Every root-to-leaf path of a directed graph given as ``child -> parent`` rows.

    A root is a node that is a parent but never a child; a leaf is a node that is never a
    parent. Paths run from the root down to the leaf (parent to child). A node with two
    parents (a merge) lies on one path per parent path, a diamond gives two paths. Isolated
    nodes and nodes whose only edge is a self-loop give no path; so do nodes on a cycle with
    no root above them (see :func:`find_cycles` for those).

    A path ends, with ``truncated`` true, where it cannot be followed any further though
    its last node has children:

    * after ``max_depth`` edges;
    * at a node with more than ``max_fanout`` children (none of them is followed);
    * at a node all of whose children are already on the path (a cycle).

    So the output is every maximal simple path from a root within those limits, and
    ``truncated`` is false exactly when ``leaf`` is a real leaf.

    Args:
        spark: the session.
        edges: columns ``child``, ``parent`` (strings) and any extra columns, e.g.
            ``relation``, carried along per edge. Self-loops and rows with a null id are
            dropped (count self-loops with :func:`self_loops`); duplicate (child, parent)
            rows collapse into one, keeping the smallest extra values (extra columns must
            therefore be orderable: no map columns).
        max_depth: longest path, in edges (at least 1).
        max_fanout: when set, a node with more children ends its paths there; ``None``
            follows every child.

    Returns:
        Columns ``root`` (string), ``leaf`` (string, the last node of the path),
        ``path`` (array<string>, root first), ``depth`` (int, number of edges),
        ``edge_values`` (array of structs, one per edge in path order; the struct's fields
        are the extra columns of ``edges``, in their order; without extra columns a single
        boolean field ``edge``, always true, so the type stays writable to Parquet/Delta)
        and ``truncated`` (boolean, see above). One row per path.

    Raises:
        ValueError: ``max_depth`` below 1 or ``max_fanout`` below 1.

    Examples:
        >>> e = spark.createDataFrame([("b", "a", "finetune"), ("c", "b", "quantized")],
        ...                           ["child", "parent", "relation"])       # doctest: +SKIP
        >>> row = root_to_leaf_paths(spark, e).first()                        # doctest: +SKIP
        >>> row.path, [v.relation for v in row.edge_values], row.truncated   # doctest: +SKIP
        (['a', 'b', 'c'], ['finetune', 'quantized'], False)

    Implementation details:
        Breadth-first expansion on the executors: the frontier (paths ending at a node that
        has children) is joined with the edges once per level, and every level is
        checkpointed, so plans stay one join deep. The driver only receives, once per
        level, the number of paths that go on (observed while checkpointing, no extra job);
        it never holds a path. Paths that stop at a cycle are found by counting, per path,
        the extensions that would revisit a node (a ``groupBy`` of those rare rows only).
        With GraphFrames present this still runs on DataFrames: GraphFrames' ``bfs``
        returns shortest paths between two vertex sets, not all root-to-leaf paths.
    """
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, not {max_depth}")
    if max_fanout is not None and max_fanout < 1:
        raise ValueError(f"max_fanout must be at least 1 or None, not {max_fanout}")
    extras = [c for c in edges.columns if c not in ("child", "parent")]
    values = (F.struct(*[F.col(c) for c in extras]) if extras
              else F.struct(F.lit(True).alias("edge")))
    step = _cut(edges.where(F.col("child").isNotNull() & F.col("parent").isNotNull()
                            & (F.col("child") != F.col("parent")))
                .groupBy(F.col("child").cast("string").alias("child"),
                         F.col("parent").cast("string").alias("parent"))
                .agg(F.min(values).alias("_edge")))
    kids = step.groupBy(F.col("parent").alias("node")).agg(F.count("*").alias("_kids"))
    # One row per edge, ready to extend a path ending at its parent.
    adjacency = _cut(step.join(kids.select(F.col("node").alias("child"),
                                           F.col("_kids").alias("_next_kids")), "child", "left")
                     .select(F.col("parent").alias("node"), "child", "_edge", "_next_kids"))
    edge_type = ArrayType(step.schema["_edge"].dataType)
    roots = kids.join(step.select(F.col("child").alias("node")), "node", "left_anti")
    frontier, seen = _cut_counted(
        roots.select("node", F.array("node").alias("path"),
                     F.array().cast(edge_type).alias(EDGE_VALUES_COLUMN), "_kids"),
        onward=_rows())
    finished: list[DataFrame] = []
    for depth in range(1, max_depth + 1):
        if not seen["onward"]:
            break
        too_wide = (F.col("_kids") > F.lit(max_fanout)) if max_fanout is not None else F.lit(False)
        finished.append(_path_rows(frontier.where(too_wide), truncated=True))
        revisits = F.array_contains("path", F.col("child"))
        level, seen = _cut_counted(
            frontier.where(~too_wide).join(adjacency, "node").select(
                "path", EDGE_VALUES_COLUMN, "_kids", "child", "_edge", "_next_kids",
                revisits.alias("_revisits")),
            onward=_rows_where(~revisits & F.col("_next_kids").isNotNull()))
        # A path stops at a cycle when every child of its last node is already on it.
        finished.append(_path_rows(
            level.where("_revisits").groupBy("path")
            .agg(F.count("*").alias("_n"), F.first("_kids").alias("_kids"),
                 F.first(EDGE_VALUES_COLUMN).alias(EDGE_VALUES_COLUMN))
            .where(F.col("_n") == F.col("_kids")), truncated=True))
        grown = level.where(~F.col("_revisits")).select(
            F.col("child").alias("node"),
            F.concat("path", F.array("child")).alias("path"),
            F.concat(EDGE_VALUES_COLUMN, F.array("_edge")).alias(EDGE_VALUES_COLUMN),
            F.col("_next_kids").alias("_kids"))
        finished.append(_path_rows(grown.where(F.col("_kids").isNull()), truncated=False))
        frontier = grown.where(F.col("_kids").isNotNull())
        log.info("paths: level %d, %d paths go on", depth, seen["onward"])
    else:
        finished.append(_path_rows(frontier, truncated=True))
    result = _path_rows(frontier.limit(0), truncated=False)
    for part in finished:
        result = result.unionByName(part)
    # Three pieces per level: read them as one materialised table in a few partitions, or
    # every later job reads dozens of small ones (and the cycle groupBy is run again).
    return _cut(result.coalesce(_parallelism(spark)))


def _parallelism(spark: SparkSession) -> int:
    """The session's default parallelism (cores of local mode, of the cluster's executors)."""
    try:
        return max(1, spark.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - Spark Connect: no SparkContext to ask
        return int(spark.conf.get("spark.sql.shuffle.partitions", "8"))


def _path_rows(rows: DataFrame, *, truncated: bool) -> DataFrame:
    return rows.select(
        F.element_at("path", 1).alias("root"), F.element_at("path", -1).alias("leaf"), "path",
        (F.size("path") - 1).cast("int").alias("depth"), EDGE_VALUES_COLUMN,
        F.lit(truncated).alias("truncated"))


# ------------------------------------------------------------------ cycles

def find_cycles(spark: SparkSession, edges: DataFrame, *, max_depth: int = 32,
                max_iterations: int = 1000) -> DataFrame:
    """The nodes that lie on a directed cycle, grouped by strongly connected component.

    A node is on a cycle when it belongs to a strongly connected component of more than
    one node (self-loops are ignored: see :func:`self_loops`). Each such component is one
    cycle group, named by its smallest node id; two cycles sharing a node are one group,
    and a node on a path *between* two cycles is not reported.

    Args:
        spark: the session.
        edges: columns ``child``, ``parent`` (other columns ignored); direction matters.
        max_depth: trimming passes per round (see below). Only speed depends on it: the
            result is exact for any value.
        max_iterations: bound on colouring steps and rounds; hitting it raises.

    Returns:
        Columns ``id`` (string) and ``cycle_group`` (string, the smallest id of the node's
        strongly connected component); one row per node on a cycle, nothing for an acyclic
        graph. ``count(distinct cycle_group)`` is the number of cycle groups.

    Raises:
        GraphConvergenceError: more than ``max_iterations`` colouring steps or rounds.

    Examples:
        >>> e = spark.createDataFrame([("b", "a"), ("c", "b"), ("a", "c"), ("d", "c")],
        ...                           ["child", "parent"])                    # doctest: +SKIP
        >>> sorted(map(tuple, find_cycles(spark, e).collect()))               # doctest: +SKIP
        [('a', 'a'), ('b', 'a'), ('c', 'a')]

    Implementation details:
        Rounds of DataFrame joins on the executors. Each round first trims, up to
        ``max_depth`` passes, every edge whose child has no child or whose parent has no
        parent (such nodes cannot be on a cycle; an acyclic graph vanishes here). On what
        is left it propagates, along the edges, the smallest id that reaches each node (its
        colour), then walks back from every node whose colour is its own id through nodes
        of the same colour: those nodes form that node's strongly connected component.
        Found components leave the graph and the next round starts. Every round removes at
        least one node, so the loop ends. Each step is checkpointed; the driver only sees
        the step's count of changed rows, observed while checkpointing. Rounds after the
        first are cheap: trimming leaves only the cyclic core and what lies between cycles.
    """
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, not {max_depth}")
    arcs = (edges.select(F.col("child").cast("string").alias("src"),
                         F.col("parent").cast("string").alias("dst"))
            .where(F.col("src").isNotNull() & F.col("dst").isNotNull()
                   & (F.col("src") != F.col("dst")))
            .distinct())
    groups: list[DataFrame] = []
    for _ in range(max_iterations):
        arcs, remaining = _trim(arcs, max_depth)
        if not remaining:
            break
        colours = _forward_colours(arcs, max_iterations)
        members = _backward_members(arcs, colours, max_iterations)
        sizes = members.groupBy("colour").agg(F.count("*").alias("_size"))
        groups.append(members.join(sizes.where(F.col("_size") > 1), "colour", "left_semi"))
        arcs = (arcs.join(members.select(F.col("id").alias("src")), "src", "left_anti")
                .join(members.select(F.col("id").alias("dst")), "dst", "left_anti"))
    else:
        raise GraphConvergenceError(
            f"cycle search did not finish in {max_iterations} rounds; raise max_iterations")
    result = spark.createDataFrame([], "id string, colour string")
    for part in groups:
        result = result.unionByName(part)
    return result.select("id", F.col("colour").alias(CYCLE_GROUP_COLUMN))


def _trim(arcs: DataFrame, passes: int) -> tuple[DataFrame, int]:
    """Drop edges that cannot be on a cycle (child without child, parent without parent),
    up to ``passes`` times; returns the remaining edges, checkpointed, and their number."""
    arcs, seen = _cut_counted(arcs, n=_rows())
    size = seen["n"]
    for _ in range(passes):
        if not size:
            break
        arcs, seen = _cut_counted(
            arcs.join(arcs.select(F.col("dst").alias("src")).distinct(), "src", "left_semi")
            .join(arcs.select(F.col("src").alias("dst")).distinct(), "dst", "left_semi"),
            n=_rows())
        if seen["n"] == size:
            break
        size = seen["n"]
    return arcs, size


def _forward_colours(arcs: DataFrame, max_iterations: int) -> DataFrame:
    """``(id, colour)``: colour = smallest id among the nodes that reach ``id`` (itself included)."""
    nodes = arcs.select(F.col("src").alias("id")).union(arcs.select(F.col("dst").alias("id"))).distinct()
    colours = nodes.select("id", F.col("id").alias("colour"), F.lit(True).alias("_changed"))
    for _ in range(max_iterations):
        # Only nodes whose colour just changed have something new to offer.
        offers = (arcs.join(colours.where("_changed").select(F.col("id").alias("src"), "colour"), "src")
                  .groupBy(F.col("dst").alias("id")).agg(F.min("colour").alias("_offer")))
        changed = F.coalesce(F.col("_offer") < F.col("colour"), F.lit(False))
        colours, seen = _cut_counted(
            colours.join(offers, "id", "left").select(
                "id", F.least("colour", F.coalesce("_offer", "colour")).alias("colour"),
                changed.alias("_changed")),
            changed=_rows_where(F.col("_changed")))
        if not seen["changed"]:
            return colours.select("id", "colour")
    raise GraphConvergenceError(f"cycle colouring did not settle in {max_iterations} steps")


def _backward_members(arcs: DataFrame, colours: DataFrame, max_iterations: int) -> DataFrame:
    """``(id, colour)`` of the nodes that reach their colour's root: its component."""
    same = _cut(arcs.join(colours.select(F.col("id").alias("src"), F.col("colour").alias("_c")), "src")
                .join(colours.select(F.col("id").alias("dst"), "colour"), "dst")
                .where(F.col("_c") == F.col("colour")).select("src", "dst", "colour"))
    members = colours.where(F.col("id") == F.col("colour")).withColumn("_new", F.lit(True))
    for _ in range(max_iterations):
        reached = (same.join(members.where("_new").select(F.col("id").alias("dst")), "dst", "left_semi")
                   .select(F.col("src").alias("id"), "colour").distinct()
                   .join(members, "id", "left_anti"))
        members, seen = _cut_counted(
            members.select("id", "colour", F.lit(False).alias("_new"))
            .union(reached.select("id", "colour", F.lit(True).alias("_new"))),
            new=_rows_where(F.col("_new")))
        if not seen["new"]:
            return members.select("id", "colour")
    raise GraphConvergenceError(f"cycle membership did not settle in {max_iterations} steps")
