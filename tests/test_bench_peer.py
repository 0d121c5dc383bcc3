"""The benchmark's single-process peer computes what the project computes: on the Hub of
the session's shared nightly, the same lineage figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_the_peer_finds_the_nightlys_lineage(nightly_run, tmp_path):
    sys.path.insert(0, str(SCRIPTS))
    try:
        from bench_peer import run_peer, write_snapshot
    finally:
        sys.path.remove(str(SCRIPTS))
    from conftest import NIGHTLY_SOURCE
    from semfin_spark.synthetic import parse_spec

    settings, _, first, _, _ = nightly_run
    n, seed = parse_spec(NIGHTLY_SOURCE.split(":", 1)[1])
    snapshot = tmp_path / "hub.jsonl"
    assert write_snapshot(snapshot, n, seed, settings.synthetic.block_size) == n
    peer = run_peer(str(snapshot), tmp_path / "work", settings, progress=lambda _line: None)
    ours = json.loads(Path(first.stages["lineage"]["report"]).read_text())
    theirs = peer["figures"]
    for key in ("edges", "self_loops", "components", "largest_component", "isolated_models", "paths"):
        assert theirs[key] == ours[key], key
    assert theirs["chains"]["declared"] == ours["chains"]["declared"]
    assert theirs["license_chains"]["declared"] == ours["license_chains"]["declared"]
    assert set(peer["stages"]) == {"ingest", "flatten", "train", "impute", "lineage"}
