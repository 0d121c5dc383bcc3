"""The graph seam on small hand-built graphs: merges, diamonds, depth limits, isolated nodes."""

from __future__ import annotations

import pytest

from semfin_spark.graph import (connected_components, find_cycles, graphframes_available,
                                root_to_leaf_paths)


def paths_of(spark, edges, **kw):
    df = spark.createDataFrame(edges, ["child", "parent", "relation"])
    return sorted((tuple(r["path"]), tuple(e["relation"] for e in r["edge_values"]), r["truncated"])
                  for r in root_to_leaf_paths(spark, df, **kw).collect())


def test_merge_gives_one_chain_per_parent_and_diamond_two(spark):
    edges = [("m", "a", "merge"), ("m", "b", "merge"), ("q", "m", "quantized"),
             ("x", "r", "finetune"), ("y", "r", "finetune"), ("z", "x", "adapter"), ("z", "y", "adapter")]
    assert paths_of(spark, edges) == [
        (("a", "m", "q"), ("merge", "quantized"), False),
        (("b", "m", "q"), ("merge", "quantized"), False),
        (("r", "x", "z"), ("finetune", "adapter"), False),
        (("r", "y", "z"), ("finetune", "adapter"), False),
    ]


def test_depth_and_fanout_limits_truncate(spark):
    chain = [(f"n{i + 1}", f"n{i}", "finetune") for i in range(6)]
    assert paths_of(spark, chain, max_depth=3) == [
        (("n0", "n1", "n2", "n3"), ("finetune",) * 3, True)]
    wide = [(f"c{i}", "p", "quantized") for i in range(5)]
    assert paths_of(spark, wide, max_fanout=3) == [(("p",), (), True)]


def test_self_loops_and_duplicates_are_ignored(spark):
    edges = [("b", "a", "finetune"), ("b", "a", "finetune"), ("b", "b", "finetune")]
    assert paths_of(spark, edges) == [(("a", "b"), ("finetune",), False)]


def test_cycle_below_a_root_stops_and_is_marked(spark):
    edges = [("b", "a", "f"), ("c", "b", "f"), ("b", "c", "f")]
    got = paths_of(spark, edges)
    assert got == [(("a", "b", "c"), ("f", "f"), True)]
    cyc = find_cycles(spark, spark.createDataFrame([(c, p) for c, p, _ in edges], ["child", "parent"]))
    assert sorted(tuple(r) for r in cyc.collect()) == [("b", "b"), ("c", "b")]


def test_components_with_isolated_nodes(spark):
    edges = spark.createDataFrame([("b", "a"), ("c", "b"), ("y", "x"), ("x", "x")], ["src", "dst"])
    nodes = spark.createDataFrame([("lonely",), ("a",)], ["id"])
    got = dict(tuple(r) for r in connected_components(spark, edges, nodes).collect())
    assert got == {"a": "a", "b": "a", "c": "a", "x": "x", "y": "x", "lonely": "lonely"}


def test_long_chain_converges(spark):
    # A path of 200 nodes in shuffled id order: many rounds for label propagation, few here.
    import random

    ids = [f"m{i:04d}" for i in range(200)]
    random.Random(3).shuffle(ids)
    edges = spark.createDataFrame(list(zip(ids, ids[1:])), ["src", "dst"])
    comps = {r["component"] for r in connected_components(spark, edges).collect()}
    assert comps == {min(ids)}


def test_graphframes_backend_matches_dataframe_backend(spark):
    if not graphframes_available(spark):
        pytest.skip("GraphFrames jar not in the JVM (Maven unreachable here; on a cluster add "
                    "--packages io.graphframes:graphframes-spark4_2.13:<version>)")
    edges = spark.createDataFrame([("b", "a"), ("c", "b"), ("y", "x")], ["src", "dst"])
    a = sorted(tuple(r) for r in connected_components(spark, edges, backend="graphframes").collect())
    b = sorted(tuple(r) for r in connected_components(spark, edges, backend="dataframe").collect())
    assert a == b
