"""The graph seam against independent pure-Python oracles, on the real lineage graph and on
small hand-built graphs (merges, diamonds, cycles, self-loops, limits, isolated nodes)."""

from __future__ import annotations

import collections
import csv
import gzip
import random

import pytest

from semfin_spark.graph import (CYCLE_GROUP_COLUMN, EDGE_VALUES_COLUMN, PATH_COLUMNS,
                                GraphFramesUnavailableError, connected_components,
                                drop_self_loops, find_cycles, graphframes_available,
                                root_to_leaf_paths, self_loops)

from oracles import union_find_components

EDGE_SCHEMA = "child string, parent string, relation string"


# ------------------------------------------------------------------ oracles (pure Python)

def oracle_paths(edges, *, max_depth=32, max_fanout=None):
    """Explicit-stack DFS from every root, with the seam's documented stopping rules.

    ``edges``: (child, parent, relation). Self-loops dropped; duplicate (child, parent) rows
    keep the smallest relation. Returns sorted (path, relations, truncated) triples.
    """
    children = collections.defaultdict(dict)
    has_parent = set()
    for child, par, rel in edges:
        if child == par:
            continue
        known = children[par].get(child)
        children[par][child] = rel if known is None else min(known, rel)
        has_parent.add(child)
    out = []
    for root in sorted(set(children) - has_parent):
        stack = [(root, (root,), ())]
        while stack:
            node, path, rels = stack.pop()
            kids = children.get(node, {})
            if not kids:
                out.append((path, rels, False))
            elif len(path) - 1 == max_depth or (max_fanout is not None and len(kids) > max_fanout):
                out.append((path, rels, True))
            else:
                onward = [(c, r) for c, r in kids.items() if c not in path]
                if not onward:
                    out.append((path, rels, True))
                for c, r in onward:
                    stack.append((c, path + (c,), rels + (r,)))
    return sorted(out)


def oracle_cycles(pairs):
    """Kosaraju: node -> smallest id of its strongly connected component, for components
    of more than one node (self-loops ignored). ``pairs``: (child, parent)."""
    out_edges, in_edges = collections.defaultdict(set), collections.defaultdict(set)
    for c, p in pairs:
        if c != p:
            out_edges[c].add(p)
            in_edges[p].add(c)
    nodes = set(out_edges) | set(in_edges)
    order, seen = [], set()
    for start in sorted(nodes):
        if start in seen:
            continue
        seen.add(start)
        stack = [(start, iter(sorted(out_edges[start])))]
        while stack:
            node, it = stack[-1]
            for nxt in it:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, iter(sorted(out_edges[nxt]))))
                    break
            else:
                stack.pop()
                order.append(node)
    label = {}
    for start in reversed(order):
        if start in label:
            continue
        members, stack = [start], [start]
        label[start] = start
        while stack:
            for prev in in_edges[stack.pop()]:
                if prev not in label:
                    label[prev] = start
                    members.append(prev)
                    stack.append(prev)
        for m in members:
            label[m] = min(members) if len(members) > 1 else None
    return {n: g for n, g in label.items() if g is not None}


# ------------------------------------------------------------------ helpers

def edges_df(spark, edges):
    return spark.createDataFrame(list(edges), EDGE_SCHEMA)


def as_src_dst(df):
    return df.selectExpr("child AS src", "parent AS dst")


def collect_components(df):
    return {r["id"]: r["component"] for r in df.collect()}


def collect_paths(df):
    return sorted((tuple(r["path"]), tuple(v["relation"] for v in r[EDGE_VALUES_COLUMN]),
                   r["truncated"]) for r in df.collect())


def collect_cycles(df):
    return {r["id"]: r[CYCLE_GROUP_COLUMN] for r in df.collect()}


# ------------------------------------------------------------------ the real lineage graph

@pytest.fixture(scope="module")
def real_edges(shared_data):
    """(child, parent, relation) rows of lineage_edges_2025 (source = parent, target = child)."""
    with gzip.open(shared_data / "lineage_edges_2025.csv.gz", "rt", newline="") as fh:
        return [(r["target"], r["source"], r["edge"]) for r in csv.DictReader(fh)]


def test_real_graph_shape(real_edges):
    assert len(real_edges) == 30_383
    assert sum(1 for c, p, _ in real_edges if c == p) == 42


@pytest.mark.parametrize("backend", ["local", "dataframe"])
def test_components_of_real_graph_equal_union_find(spark, real_edges, backend):
    nodes = sorted({n for c, p, _ in real_edges for n in (c, p)})
    got = collect_components(connected_components(
        spark, as_src_dst(edges_df(spark, real_edges)),
        spark.createDataFrame([(n,) for n in nodes], "id string"), backend=backend))
    want = union_find_components(nodes, [(c, p) for c, p, _ in real_edges])
    assert len(got) == len(want) == 29_973
    assert len(set(got.values())) == len(set(want.values()))
    assert collections.Counter(collections.Counter(got.values()).values()) == \
        collections.Counter(collections.Counter(want.values()).values())
    assert got == want


def test_paths_of_real_graph_equal_dfs(spark, real_edges):
    paths = root_to_leaf_paths(spark, edges_df(spark, real_edges))
    assert tuple(paths.columns) == PATH_COLUMNS
    rows = paths.collect()
    want = oracle_paths(real_edges)
    assert len(rows) == len(want) == 42_461
    got = sorted((tuple(r["path"]), tuple(v["relation"] for v in r[EDGE_VALUES_COLUMN]),
                  r["truncated"]) for r in rows)
    assert got == want
    # root, leaf and depth agree with the path itself; the real graph is acyclic.
    assert all(r["root"] == r["path"][0] and r["leaf"] == r["path"][-1]
               and r["depth"] == len(r["path"]) - 1 and not r["truncated"] for r in rows)
    assert max(r["depth"] for r in rows) == 16


def test_paths_of_unique_pairs_skip_only_the_deduplication(spark, real_edges):
    """``unique_pairs=True`` on edges with one row per pair (the real graph has no repeated
    pair) gives the same paths, its 42 self-loops still dropped; with the same pairs
    repeated, the deduplication is what keeps the paths the same."""
    assert len({(c, p) for c, p, _ in real_edges}) == len(real_edges)
    unique = edges_df(spark, real_edges)
    deduplicated = root_to_leaf_paths(spark, unique)
    trusted = root_to_leaf_paths(spark, unique, unique_pairs=True)
    assert trusted.count() == 42_461
    assert trusted.exceptAll(deduplicated).count() == 0 and deduplicated.exceptAll(trusted).count() == 0
    twice = edges_df(spark, real_edges + real_edges[:500])
    assert root_to_leaf_paths(spark, twice).count() == 42_461


@pytest.fixture(scope="module")
def real_with_cycles(real_edges):
    """The real graph with back edges planted in mid-sized components, plus a rootless cycle.

    A back edge makes a path's second node the child of the path's leaf, so the cycle hangs
    below a root that stays a root. Returns (all edges, sample edges): the sample is the
    planted components only (kept small so the path search stays quick).
    """
    plain = [(c, p, r) for c, p, r in real_edges if c != p]
    label = union_find_components([], [(c, p) for c, p, _ in plain])
    members = collections.defaultdict(set)
    for n, g in label.items():
        members[g].add(n)
    chosen = sorted(g for g, m in members.items() if 10 <= len(m) <= 150)[::4]
    sample = [e for e in plain if label[e[0]] in set(chosen)]
    rng = random.Random(7)
    planted = []
    paths_by_component = collections.defaultdict(list)
    for path, _, _ in oracle_paths(sample):
        if len(path) >= 3:
            paths_by_component[label[path[0]]].append(path)
    for g in sorted(paths_by_component):
        path = rng.choice(paths_by_component[g])
        planted.append((path[1], path[-1], "planted"))
    assert len(planted) >= 10
    rootless = [("zz-cycle-b", "zz-cycle-a", "planted"), ("zz-cycle-c", "zz-cycle-b", "planted"),
                ("zz-cycle-a", "zz-cycle-c", "planted"), ("zz-tail", "zz-cycle-c", "planted")]
    return real_edges + planted + rootless, sample + planted + rootless


def test_cycles_of_real_graph_with_planted_cycles_equal_kosaraju(spark, real_with_cycles):
    everything, _ = real_with_cycles
    got = collect_cycles(find_cycles(spark, edges_df(spark, everything).select("child", "parent")))
    want = oracle_cycles([(c, p) for c, p, _ in everything])
    assert got == want
    assert {"zz-cycle-a", "zz-cycle-b", "zz-cycle-c"} <= set(got) and "zz-tail" not in got
    assert len(set(got.values())) >= 11


def test_paths_with_planted_cycles_equal_dfs(spark, real_with_cycles):
    _, sample = real_with_cycles
    got = collect_paths(root_to_leaf_paths(spark, edges_df(spark, sample)))
    want = oracle_paths(sample)
    assert got == want
    assert any(t for _, _, t in got)  # some paths stop at a planted cycle
    assert not any("zz-cycle-a" in p for p, _, _ in got)  # a cycle with no root gives no path


# ------------------------------------------------------------------ hand-built graphs

ZOO = [
    # merge: m has parents a1 and a2 -> one chain per parent
    ("m", "a1", "merge"), ("m", "a2", "merge"), ("q", "m", "quantized"),
    # diamond r -> x, y -> z
    ("x", "r", "finetune"), ("y", "r", "finetune"), ("z", "x", "adapter"), ("z", "y", "adapter"),
    # cycle c1 -> c2 -> c3 -> c1 below root c0, with a tail c3 -> c4
    ("c1", "c0", "finetune"), ("c2", "c1", "finetune"), ("c3", "c2", "finetune"),
    ("c1", "c3", "merge"), ("c4", "c3", "quantized"),
    # cycle d1 -> d2 -> d1 below root d0, no way out
    ("d1", "d0", "finetune"), ("d2", "d1", "finetune"), ("d1", "d2", "merge"),
    # pure cycle ea -> eb -> ec -> ea with a tail et: no root at all
    ("eb", "ea", "finetune"), ("ec", "eb", "finetune"), ("ea", "ec", "finetune"),
    ("et", "ec", "quantized"),
    # self-loops: s alone, s2 also has a real child s3
    ("s", "s", "finetune"), ("s2", "s2", "finetune"), ("s3", "s2", "adapter"),
    # duplicate edge with different relations: the smallest relation is kept
    ("g1", "g0", "finetune"), ("g1", "g0", "adapter"), ("g1", "g0", "finetune"),
]


@pytest.fixture(scope="module")
def zoo_paths(spark):
    return collect_paths(root_to_leaf_paths(spark, edges_df(spark, ZOO)))


def test_merge_gives_one_chain_per_parent(zoo_paths):
    assert [p for p in zoo_paths if "m" in p[0]] == [
        (("a1", "m", "q"), ("merge", "quantized"), False),
        (("a2", "m", "q"), ("merge", "quantized"), False)]


def test_diamond_gives_two_chains(zoo_paths):
    assert [p for p in zoo_paths if p[0][0] == "r"] == [
        (("r", "x", "z"), ("finetune", "adapter"), False),
        (("r", "y", "z"), ("finetune", "adapter"), False)]


def test_cycle_below_a_root_is_walked_once(zoo_paths):
    # c3's child c1 is already on the path; its other child c4 is a real leaf.
    assert [p for p in zoo_paths if p[0][0] == "c0"] == [
        (("c0", "c1", "c2", "c3", "c4"), ("finetune",) * 3 + ("quantized",), False)]
    # d2's only child is d1, already on the path: the path stops there, truncated.
    assert [p for p in zoo_paths if p[0][0] == "d0"] == [
        (("d0", "d1", "d2"), ("finetune", "finetune"), True)]


def test_rootless_cycle_self_loops_and_duplicates(zoo_paths):
    assert not [p for p in zoo_paths if {"ea", "eb", "ec", "et", "s"} & set(p[0])]
    assert [p for p in zoo_paths if p[0][0] in ("s2", "g0")] == [
        (("g0", "g1"), ("adapter",), False),
        (("s2", "s3"), ("adapter",), False)]


def test_zoo_paths_equal_the_oracle(zoo_paths):
    assert zoo_paths == oracle_paths(ZOO)
    assert len(zoo_paths) == 8


def test_self_loop_helpers(spark):
    df = edges_df(spark, ZOO)
    assert sorted((r["child"], r["relation"]) for r in self_loops(df).collect()) == [
        ("s", "finetune"), ("s2", "finetune")]
    assert drop_self_loops(df).count() == len(ZOO) - 2


def test_zoo_cycles(spark):
    got = collect_cycles(find_cycles(spark, edges_df(spark, ZOO)))
    assert got == {"c1": "c1", "c2": "c1", "c3": "c1", "d1": "d1", "d2": "d1",
                   "ea": "ea", "eb": "ea", "ec": "ea"}


def test_cycles_between_sharing_and_beside_cycles(spark):
    ring = [(f"l{(i + 1) % 8:02d}", f"l{i:02d}") for i in range(8)]  # a cycle of 8 nodes
    edges = ring + [
        # two cycles joined by a path: hm lies between them, not on a cycle
        ("hb", "ha"), ("ha", "hb"), ("hm", "hb"), ("hx", "hm"), ("hy", "hx"), ("hx", "hy"),
        # two cycles sharing kb are one strongly connected group
        ("kb", "ka"), ("ka", "kb"), ("kc", "kb"), ("kb", "kc"),
        # a detour that rejoins the ring is on the cycle; a branch hanging off it is not
        ("t1", "l02"), ("t2", "t1"), ("l05", "t2"), ("u1", "l06"), ("u2", "u1")]
    df = spark.createDataFrame(edges, "child string, parent string")
    got = collect_cycles(find_cycles(spark, df))
    assert got == oracle_cycles(edges)
    assert "hm" not in got and got["hx"] == "hx" and got["ha"] == "ha"
    assert {got[k] for k in ("ka", "kb", "kc")} == {"ka"}
    assert got["t1"] == got["t2"] == "l00" and sum(1 for g in got.values() if g == "l00") == 10
    assert "u1" not in got and "u2" not in got


def test_depth_and_fanout_limits(spark):
    chain = [(f"n{i + 1}", f"n{i}", "finetune") for i in range(6)]      # n0 .. n6
    exact = [(f"k{i + 1}", f"k{i}", "finetune") for i in range(3)]      # k0 .. k3
    wide_root = [(f"w{i}", "p", "quantized") for i in range(5)]         # p has 5 children
    wide_below = [("h1", "h0", "finetune")] + [(f"v{i}", "h1", "adapter") for i in range(4)]
    narrow = [(f"o{i}", "o0", "merge") for i in (1, 2, 3)]              # exactly max_fanout
    edges = chain + exact + wide_root + wide_below + narrow
    got = collect_paths(root_to_leaf_paths(spark, edges_df(spark, edges), max_depth=3, max_fanout=3))
    assert got == [
        (("h0", "h1"), ("finetune",), True),
        (("k0", "k1", "k2", "k3"), ("finetune",) * 3, False),
        (("n0", "n1", "n2", "n3"), ("finetune",) * 3, True),
        (("o0", "o1"), ("merge",), False),
        (("o0", "o2"), ("merge",), False),
        (("o0", "o3"), ("merge",), False),
        (("p",), (), True),
    ]
    assert got == oracle_paths(edges, max_depth=3, max_fanout=3)
    with pytest.raises(ValueError, match="max_depth"):
        root_to_leaf_paths(spark, edges_df(spark, edges), max_depth=0)


def test_paths_schema_without_extra_columns(spark):
    df = spark.createDataFrame([("b", "a"), ("c", "b")], "child string, parent string")
    out = root_to_leaf_paths(spark, df)
    assert dict(out.dtypes) == {"root": "string", "leaf": "string", "path": "array<string>",
                                "depth": "int", EDGE_VALUES_COLUMN: "array<struct<edge:boolean>>",
                                "truncated": "boolean"}
    row = out.collect()[0]
    assert (row["root"], row["leaf"], row["path"], row["depth"], row["truncated"]) == \
        ("a", "c", ["a", "b", "c"], 2, False)
    assert [v["edge"] for v in row[EDGE_VALUES_COLUMN]] == [True, True]


@pytest.mark.parametrize("backend", ["auto", "dataframe"])
def test_zoo_components_with_isolated_nodes(spark, backend):
    nodes = spark.createDataFrame([("lonely",), ("m",)], "id string")
    comps = connected_components(spark, as_src_dst(edges_df(spark, ZOO)), nodes, backend=backend)
    assert dict(comps.dtypes) == {"id": "string", "component": "string"}
    got = collect_components(comps)
    assert got == union_find_components(["lonely"], [(c, p) for c, p, _ in ZOO])
    assert {k: got[k] for k in ("a1", "m", "q", "z", "c4", "d2", "et", "s", "s3", "g1", "lonely")} == {
        "a1": "a1", "m": "a1", "q": "a1", "z": "r", "c4": "c0", "d2": "d0", "et": "ea",
        "s": "s", "s3": "s2", "g1": "g0", "lonely": "lonely"}


@pytest.mark.parametrize("backend", ["local", "dataframe"])
def test_components_long_chain_and_no_edges(spark, backend):
    ids = [f"m{i:04d}" for i in range(200)]
    random.Random(3).shuffle(ids)  # a path visiting ids in random order: many rounds naively
    chain = spark.createDataFrame(list(zip(ids, ids[1:])), "src string, dst string")
    assert set(collect_components(connected_components(spark, chain, backend=backend)).values()) \
        == {"m0000"}
    no_edges = spark.createDataFrame([], "src string, dst string")
    alone = spark.createDataFrame([("b",), ("a",), ("a",)], "id string")
    assert collect_components(connected_components(spark, no_edges, alone, backend=backend)) \
        == {"a": "a", "b": "b"}


def test_backend_choice_errors(spark):
    edges = spark.createDataFrame([("b", "a")], "src string, dst string")
    with pytest.raises(ValueError, match="backend"):
        connected_components(spark, edges, backend="networkx")
    assert isinstance(graphframes_available(spark), bool)
    if not graphframes_available(spark):
        with pytest.raises(GraphFramesUnavailableError, match="--packages"):
            connected_components(spark, edges, backend="graphframes")
        # auto takes the DataFrame algorithm past local_max_edges
        assert collect_components(connected_components(spark, edges, local_max_edges=0)) \
            == {"a": "a", "b": "a"}


def test_graphframes_backend_matches_dataframe_backend(spark, real_edges):
    if not graphframes_available(spark):
        pytest.skip("GraphFrames jar not in the JVM (Maven unreachable)")
    nodes = spark.createDataFrame([("lonely",)], "id string")
    for edges in (ZOO, real_edges):
        df = as_src_dst(edges_df(spark, edges))
        via_graphframes = collect_components(
            connected_components(spark, df, nodes, backend="graphframes"))
        via_dataframes = collect_components(connected_components(spark, df, nodes, backend="dataframe"))
        assert via_graphframes == via_dataframes
