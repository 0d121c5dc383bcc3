"""The graph seam: connected components, root-to-leaf paths and cycles, on DataFrames.

Everything graph in SemFin goes through this module; callers never ask which backend runs.

* :func:`connected_components`: on a graph of at most ``local_max_edges`` edges (the
  whole Hub's lineage is a few million), union-find in one task on an executor; on a larger
  one GraphFrames' ``connectedComponents`` when its jar is in the JVM (a session started
  with ``--packages io.graphframes:graphframes-spark4_2.13:<v>``), otherwise the
  large-star / small-star algorithm GraphFrames itself uses (Kiveris et al., "Connected
  Components in MapReduce and Beyond", SoCC 2014), written with DataFrame joins. Every
  backend names a component by its smallest member id, so their results are identical.
* :func:`root_to_leaf_paths`: every maximal path from a root down to a leaf, bounded by
  ``max_depth`` and ``max_fanout``; :func:`find_cycles`: the nodes on directed cycles,
  grouped by strongly connected component. Both work per connected component: the edges
  are grouped so that a group holds whole components, and each group is walked in one
  Python task (depth-first search, Tarjan). GraphFrames' ``bfs`` finds shortest paths
  between two vertex sets, not every root-to-leaf path, so these run the same whichever
  backend is present.
* :func:`self_loops` and :func:`drop_self_loops`: the rows a child names itself as parent.

Edge conventions: components take undirected ``src``/``dst`` pairs; paths and cycles take
directed ``child`` -> ``parent`` rows (a model and the model it derives from). Ids are
strings; rows with a null id are ignored. "Smallest" is Spark's string order (UTF-8 bytes),
which equals Python's ``min`` on ``str``.

Implementation details:
    Everything runs on the executors; no ``collect``. The driver receives only the scalars
    that decide what runs next (how many edges, how many rows changed in a round), as
    ``DataFrame.observe`` metrics of the job that materialises a step. Results are cut from
    their plans (:func:`semfin_spark.session.cut_lineage`): ``DataFrame.checkpoint`` on a
    cluster whose session has a checkpoint folder (``semfin_spark.session.build_session``
    sets one in the warehouse), else
    ``localCheckpoint`` (in local mode it is as safe, and one job cheaper). Returned
    DataFrames read those materialised pieces, so using them twice computes nothing again.
    Reliable checkpoint files stay in the checkpoint folder until the stage ends
    (:func:`semfin_spark.session.release_checkpoints`; the nightly's upkeep clears what a
    killed run left).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from typing import Any, Iterable, Iterator, Sequence

from pyspark.sql import Column, DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (ArrayType, BooleanType, IntegerType, StringType, StructField,
                               StructType)

from semfin_spark.session import checkpoint_dir, cut_lineage

log = logging.getLogger(__name__)

BACKENDS = ("auto", "local", "graphframes", "dataframe")
"""Values of ``backend`` (and of the ``graph.backend`` setting)."""

LOCAL_MAX_EDGES = 5_000_000
"""Largest graph (edges) whose components ``backend="auto"`` finds in one task."""

_BUCKETS_PER_CORE = 4
"""Groups of whole components per core for the per-component walks."""

_OUTPUT_ROWS = 65_536

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

def _cut_counted(df: DataFrame, **counts: Column) -> tuple[DataFrame, dict[str, int]]:
    """:func:`~semfin_spark.session.cut_lineage`, also returning the given aggregates
    (``F.count`` expressions) computed in the same job (``DataFrame.observe``): a loop
    learns whether to go on without reading its data again."""
    observation = Observation()
    cut = cut_lineage(df.observe(observation, *[expr.alias(name) for name, expr in counts.items()]))
    return cut, {name: int(value or 0) for name, value in observation.get.items()}


def _rows() -> Column:
    return F.count(F.lit(1))


# ------------------------------------------------------------------ connected components

def connected_components(spark: SparkSession, edges: DataFrame, nodes: DataFrame | None = None, *,
                         backend: str = "auto", max_iterations: int = 100,
                         local_max_edges: int = LOCAL_MAX_EDGES) -> DataFrame:
    """Connected components of an undirected graph, each named by its smallest node id.

    Args:
        spark: the session.
        edges: columns ``src`` and ``dst`` (cast to string). Direction does not matter;
            self-loops, duplicate edges and rows with a null end are harmless.
        nodes: optional, column ``id``: nodes without any edge become their own component.
            Other columns are ignored.
        backend: ``"auto"`` (one task when the graph has at most ``local_max_edges``
            edges, else GraphFrames when :func:`graphframes_available`, else the DataFrame
            algorithm), ``"local"``, ``"graphframes"`` or ``"dataframe"``.
        max_iterations: bound on large-star/small-star rounds. The algorithm needs
            O(log² n) rounds; the real Hub lineage graph converges in a handful.
        local_max_edges: the largest graph ``"auto"`` solves in one task.

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
        Local backend: the pairs (and ``nodes`` as pairs with themselves) go to one
        partition, where one Python task runs union-find with path halving, the smaller root
        always kept, so each root is its component's smallest id (:func:`union_find`); a
        graph the size of the whole Hub's lineage (a few million edges) fits one executor
        and takes one shuffle instead of dozens of jobs. DataFrame backend: the input is read once, node ids are numbered once
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
    if backend not in BACKENDS:
        raise ValueError(f"graph backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be at least 1, not {max_iterations}")
    # Read the input once: it is used twice below and may be an expensive plan.
    pairs, seen = _cut_counted(edges.select(F.col("src").cast("string").alias("src"),
                                            F.col("dst").cast("string").alias("dst"))
                               .where(F.col("src").isNotNull() & F.col("dst").isNotNull()),
                               n=_rows())
    given = (nodes.select(F.col("id").cast("string").alias("id")).where(F.col("id").isNotNull())
             if nodes is not None else None)
    if backend == "local" or (backend == "auto" and seen["n"] <= local_max_edges):
        return _components_local(pairs, given)
    use_graphframes = _use_graphframes(spark, backend)
    ids = pairs.select(F.col("src").alias("id")).union(pairs.select(F.col("dst").alias("id")))
    if given is not None:
        ids = ids.union(given)
    ids = ids.distinct()
    if use_graphframes:
        return _components_graphframes(spark, ids, pairs, max_iterations)
    return _components_dataframe(ids, pairs, max_iterations)


def _components_local(pairs: DataFrame, nodes: DataFrame | None) -> DataFrame:
    if nodes is not None:
        pairs = pairs.unionByName(nodes.select(F.col("id").alias("src"), F.col("id").alias("dst")))
    return cut_lineage(pairs.repartition(1).mapInArrow(_union_find_batches, "id string, component string"))


def union_find(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Node -> the smallest id of its connected component, over undirected ``pairs``.

    Examples:
        >>> sorted(union_find([("b", "a"), ("c", "b"), ("y", "x"), ("z", "z")]).items())
        [('a', 'a'), ('b', 'a'), ('c', 'a'), ('x', 'x'), ('y', 'x'), ('z', 'z')]
    """
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        while True:
            up = parent[node]
            if up == node:
                return node
            parent[node] = parent[up]  # path halving
            node = up

    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:  # keep the smaller root: a root is always its component's smallest id
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    return {node: find(node) for node in parent}


def _union_find_batches(batches: Iterator[Any]) -> Iterator[Any]:
    """``mapInArrow`` body over the one partition holding every pair: (src, dst) batches
    in, (id, component) batches of :data:`_OUTPUT_ROWS` rows out."""
    import pyarrow as pa

    def pairs() -> Iterator[tuple[str, str]]:
        for batch in batches:
            yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())

    labels = union_find(pairs())
    ids = list(labels)
    for start in range(0, len(ids), _OUTPUT_ROWS):
        chunk = ids[start:start + _OUTPUT_ROWS]
        yield pa.RecordBatch.from_arrays(
            [pa.array(chunk, pa.string()), pa.array([labels[i] for i in chunk], pa.string())],
            names=["id", "component"])


def _components_graphframes(spark: SparkSession, ids: DataFrame, pairs: DataFrame,
                            max_iterations: int) -> DataFrame:
    from graphframes import GraphFrame  # optional: only with GraphFrames in the session

    method = GraphFrame.connectedComponents
    accepts = inspect.signature(method).parameters
    options: dict[str, object] = {"algorithm": "graphframes", "broadcastThreshold": 1_000_000}
    if checkpoint_dir(spark):
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
    numbered = cut_lineage(ids.withColumn("vid", F.monotonically_increasing_id()))
    left = numbered.select(F.col("id").alias("src"), F.col("vid").alias("a"))
    right = numbered.select(F.col("id").alias("dst"), F.col("vid").alias("b"))
    star = cut_lineage(pairs.join(left, "src").join(right, "dst")
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
        star = cut_lineage(_small_star(_large_star(star)))
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


# ------------------------------------------------------------------ per-component work

def _by_component(spark: SparkSession, step: DataFrame, components: DataFrame | None) -> DataFrame:
    """``step`` (``child``, ``parent``, ...) with a ``_bucket`` column: edges of one connected
    component share a bucket, so a bucket holds whole components and can be walked alone."""
    if components is None:
        components = connected_components(
            spark, step.select(F.col("child").alias("src"), F.col("parent").alias("dst")))
    buckets = F.pmod(F.xxhash64("component"), F.lit(_parallelism(spark) * _BUCKETS_PER_CORE))
    return step.join(components.select(F.col("id").alias("child"), buckets.alias("_bucket")),
                     "child")


def _parallelism(spark: SparkSession) -> int:
    """The session's default parallelism (cores of local mode, of the cluster's executors)."""
    try:
        return max(1, spark.sparkContext.defaultParallelism)
    except Exception:  # noqa: BLE001 - Spark Connect: no SparkContext to ask
        return int(spark.conf.get("spark.sql.shuffle.partitions", "8"))


def _strings(table: Any, name: str) -> list[str]:
    return table.column(name).to_pylist()


# ------------------------------------------------------------------ paths

def root_to_leaf_paths(spark: SparkSession, edges: DataFrame, *, max_depth: int = 32,
                       max_fanout: int | None = None,
                       components: DataFrame | None = None,
                       unique_pairs: bool = False) -> DataFrame:
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
        components: optional, the graph's :func:`connected_components` (``id``,
            ``component``) when the caller has them; computed here otherwise.
        unique_pairs: the caller's promise that ``edges`` holds at most one row per
            (child, parent) pair, with string ids: the deduplication (a shuffle of every
            edge) is skipped. Self-loops and null ids are still dropped.

    Returns:
        Columns ``root`` (string), ``leaf`` (string, the last node of the path),
        ``path`` (array<string>, root first), ``depth`` (int, number of edges),
        ``edge_values`` (array of structs, one per edge in path order; the struct's fields
        are the extra columns of ``edges``, in their order; without extra columns a single
        boolean field ``edge``, always true, so the type stays writable to Parquet/Delta)
        and ``truncated`` (boolean, see above). One row per path, materialised.

    Raises:
        ValueError: ``max_depth`` below 1 or ``max_fanout`` below 1.

    Examples:
        >>> e = spark.createDataFrame([("b", "a", "finetune"), ("c", "b", "quantized")],
        ...                           ["child", "parent", "relation"])       # doctest: +SKIP
        >>> row = root_to_leaf_paths(spark, e).first()                        # doctest: +SKIP
        >>> row.path, [v.relation for v in row.edge_values], row.truncated   # doctest: +SKIP
        (['a', 'b', 'c'], ['finetune', 'quantized'], False)

    Implementation details:
        The edges are deduplicated, tagged with their component and grouped so that each
        group holds whole components (a hash of the component id into a few buckets per
        core); each group is walked depth-first in one Python task (``applyInArrow``,
        :func:`paths_of`), which only ever holds its own components. Paths are built as
        Arrow list arrays; a path's edge values are taken from the group's edge column by
        index, so any struct of extra columns passes through unchanged. One shuffle, one
        pass, whatever the depth: the breadth-first DataFrame expansion it replaces ran
        one join per level and about a hundred Spark jobs on the real Hub graph.
    """
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, not {max_depth}")
    if max_fanout is not None and max_fanout < 1:
        raise ValueError(f"max_fanout must be at least 1 or None, not {max_fanout}")
    extras = [c for c in edges.columns if c not in ("child", "parent")]
    values = (F.struct(*[F.col(c) for c in extras]) if extras
              else F.struct(F.lit(True).alias("edge")))
    usable = edges.where(F.col("child").isNotNull() & F.col("parent").isNotNull()
                         & (F.col("child") != F.col("parent")))
    pair = [F.col(c).cast("string").alias(c) for c in ("child", "parent")]
    if unique_pairs:
        step = usable.select(*pair, values.alias("_edge"))
    else:
        step = usable.groupBy(*pair).agg(F.min(values).alias("_edge"))
    schema = StructType([
        StructField("root", StringType()), StructField("leaf", StringType()),
        StructField("path", ArrayType(StringType())), StructField("depth", IntegerType()),
        StructField(EDGE_VALUES_COLUMN, ArrayType(step.schema["_edge"].dataType)),
        StructField("truncated", BooleanType())])

    def walk(table: Any) -> Any:  # a plain one-argument function: applyInArrow reads its arity
        return _paths_table(table, schema=schema, max_depth=max_depth, max_fanout=max_fanout)

    return cut_lineage(_by_component(spark, step, components).groupBy("_bucket")
                .applyInArrow(walk, schema))


def paths_of(pairs: Sequence[tuple[str, str]], *, max_depth: int = 32,
             max_fanout: int | None = None) -> Iterator[tuple[tuple[str, ...], tuple[int, ...], bool]]:
    """The paths of :func:`root_to_leaf_paths` over deduplicated ``(child, parent)`` pairs
    without self-loops, in plain Python: ``(nodes root first, edge indices into pairs,
    truncated)`` per path.

    Examples:
        >>> sorted(paths_of([("b", "a"), ("c", "b"), ("d", "b")]))
        [(('a', 'b', 'c'), (0, 1), False), (('a', 'b', 'd'), (0, 2), False)]
        >>> list(paths_of([("a", "r"), ("b", "a"), ("a", "b")]))   # stops where a cycle closes
        [(('r', 'a', 'b'), (0, 1), True)]
        >>> list(paths_of([("b", "a"), ("c", "b")], max_depth=1))
        [(('a', 'b'), (0,), True)]
    """
    children: dict[str, list[tuple[str, int]]] = {}
    for index, (child, parent) in enumerate(pairs):
        children.setdefault(parent, []).append((child, index))
    has_parent = {child for child, _ in pairs}
    for root in sorted(children.keys() - has_parent):
        stack: list[tuple[str, tuple[str, ...], tuple[int, ...]]] = [(root, (root,), ())]
        while stack:
            node, path, via = stack.pop()
            kids = children.get(node)
            if kids is None:
                yield path, via, False
            elif len(via) == max_depth or (max_fanout is not None and len(kids) > max_fanout):
                yield path, via, True
            else:
                onward = [(c, i) for c, i in kids if c not in path]
                if not onward:  # every child is already on the path: a cycle
                    yield path, via, True
                stack.extend((c, path + (c,), via + (i,)) for c, i in reversed(onward))


def _paths_table(table: Any, *, schema: StructType, max_depth: int,
                 max_fanout: int | None) -> Any:
    """``applyInArrow`` body: one bucket's edges (``child``, ``parent``, ``_edge``) in,
    its paths out (``schema``)."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    arrow_schema = to_arrow_schema(schema)
    pairs = list(zip(_strings(table, "child"), _strings(table, "parent")))
    roots, leaves, depths, truncated = [], [], [], []
    nodes: list[str] = []
    node_ends, edge_ends, edge_rows = [0], [0], []
    for path, via, cut in paths_of(pairs, max_depth=max_depth, max_fanout=max_fanout):
        roots.append(path[0])
        leaves.append(path[-1])
        depths.append(len(via))
        truncated.append(cut)
        nodes.extend(path)
        node_ends.append(len(nodes))
        edge_rows.extend(via)
        edge_ends.append(len(edge_rows))
    edge_values = table.column("_edge").combine_chunks().take(pa.array(edge_rows, pa.int64()))
    columns = [pa.array(roots, pa.string()), pa.array(leaves, pa.string()),
               pa.ListArray.from_arrays(pa.array(node_ends, pa.int32()), pa.array(nodes, pa.string())),
               pa.array(depths, pa.int32()),
               pa.ListArray.from_arrays(pa.array(edge_ends, pa.int32()), edge_values),
               pa.array(truncated, pa.bool_())]
    return pa.Table.from_arrays(
        [column.cast(field.type) for column, field in zip(columns, arrow_schema)],
        schema=arrow_schema)


# ------------------------------------------------------------------ cycles

def find_cycles(spark: SparkSession, edges: DataFrame, *,
                components: DataFrame | None = None) -> DataFrame:
    """The nodes that lie on a directed cycle, grouped by strongly connected component.

    A node is on a cycle when it belongs to a strongly connected component of more than
    one node (self-loops are ignored: see :func:`self_loops`). Each such component is one
    cycle group, named by its smallest node id; two cycles sharing a node are one group,
    and a node on a path *between* two cycles is not reported.

    Args:
        spark: the session.
        edges: columns ``child``, ``parent`` (other columns ignored); direction matters.
        components: optional, the graph's :func:`connected_components` when the caller has
            them; computed here otherwise.

    Returns:
        Columns ``id`` (string) and ``cycle_group`` (string, the smallest id of the node's
        strongly connected component); one row per node on a cycle, nothing for an acyclic
        graph. ``count(distinct cycle_group)`` is the number of cycle groups. Materialised.

    Examples:
        >>> e = spark.createDataFrame([("b", "a"), ("c", "b"), ("a", "c"), ("d", "c")],
        ...                           ["child", "parent"])                    # doctest: +SKIP
        >>> sorted(map(tuple, find_cycles(spark, e).collect()))               # doctest: +SKIP
        [('a', 'a'), ('b', 'a'), ('c', 'a')]

    Implementation details:
        A strongly connected component lies inside one connected component, so the edges
        are grouped as for :func:`root_to_leaf_paths` and each group runs Tarjan's
        algorithm (:func:`cycle_groups_of`, iterative, linear in the group's edges) in one
        Python task.
    """
    step = (edges.select(F.col("child").cast("string").alias("child"),
                         F.col("parent").cast("string").alias("parent"))
            .where(F.col("child").isNotNull() & F.col("parent").isNotNull()
                   & (F.col("child") != F.col("parent")))
            .distinct())
    return cut_lineage(_by_component(spark, step, components).groupBy("_bucket")
                .applyInArrow(_cycles_table, f"id string, {CYCLE_GROUP_COLUMN} string"))


def cycle_groups_of(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Tarjan's strongly connected components over ``(child, parent)`` pairs: node -> the
    smallest id of its component, for components of more than one node.

    Examples:
        >>> sorted(cycle_groups_of([("b", "a"), ("c", "b"), ("a", "c"), ("d", "c"), ("e", "e")]).items())
        [('a', 'a'), ('b', 'a'), ('c', 'a')]
    """
    successors: dict[str, list[str]] = {}
    for child, parent in pairs:
        if child != parent:
            successors.setdefault(child, []).append(parent)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: dict[str, str] = {}
    for start in successors:
        if start in index:
            continue
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        work = [(start, iter(successors[start]))]
        while work:
            node, onward = work[-1]
            for nxt in onward:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(successors.get(nxt, ()))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    above = work[-1][0]
                    low[above] = min(low[above], low[node])
                if low[node] == index[node]:
                    members = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        members.append(member)
                        if member == node:
                            break
                    if len(members) > 1:
                        smallest = min(members)
                        groups.update((m, smallest) for m in members)
    return groups


def _cycles_table(table: Any) -> Any:
    """``applyInArrow`` body: one bucket's ``(child, parent)`` edges in, ``(id, cycle_group)``
    of its nodes on cycles out."""
    import pyarrow as pa

    groups = cycle_groups_of(list(zip(_strings(table, "child"), _strings(table, "parent"))))
    return pa.table({"id": pa.array(list(groups), pa.string()),
                     CYCLE_GROUP_COLUMN: pa.array(list(groups.values()), pa.string())})
