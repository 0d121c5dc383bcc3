"""Pure-Python oracles the Spark results are checked against, shared by the test modules."""

from __future__ import annotations

import collections


def union_find_components(nodes, pairs) -> dict:
    """Union-find: node -> smallest id of its connected component (``nodes`` and every end
    of ``pairs``)."""
    parent = {n: n for n in nodes}
    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups = collections.defaultdict(list)
    for n in parent:
        groups[find(n)].append(n)
    return {n: min(g) for g in groups.values() for n in g}
