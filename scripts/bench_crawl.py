"""Benchmark of the Hub crawl against a Hub-compatible server with 50 ms latency, and the
plan on paper for the real Hub at each account tier.

Measures, at 20,000 models (the 1,983 real records of ../shared/data/hub2025_trees
repeated under new ids, each with a config.json):

* listing: models per second through ``/api/models`` pages of 1,000;
* first crawl: config.json downloads per second (8 workers, no budget: what this
  machine and the latency allow);
* second crawl with nothing changed: the Spark step that picks what to fetch picks
  nothing, so it is the listing alone (measured end to end through ``ingest``).

Then the plan: how many models change per day (from ``lastModified`` in the shared real
snapshots) and how long a first full crawl and a typical night take at each tier's budget.

Usage::

    .venv/bin/python scripts/bench_crawl.py [--models 20000] [--latency 0.05] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
SHARED = REPO.parent / "shared" / "data"

HUB_MODELS_2026 = 2_000_000  # "over two million models" (issue 15)
TIERS = {"anonymous": (500, 3000), "free": (1000, 5000), "pro": (2500, 12000)}
WINDOW = 300


def generated_hub(n: int) -> tuple[list[dict], dict[str, str]]:
    with gzip.open(SHARED / "hub2025_trees.jsonl.gz", "rt", encoding="utf-8") as lines:
        real = [json.loads(line) for line in lines]
    records, configs = [], {}
    for i in range(n):
        record = dict(real[i % len(real)])
        record["id"] = f"{record['id']}-{i // len(real)}" if i >= len(real) else record["id"]
        record["siblings"] = (record.get("siblings") or []) + [{"rfilename": "config.json"}]
        records.append(record)
        configs[record["id"]] = json.dumps({"model_type": "llama", "hidden_size": 64 + i % 7})
    return records, configs


def change_rates() -> dict[str, dict[str, float]]:
    """Share of a snapshot's models modified within 1, 7 and 30 days of its newest date,
    and the share whose listing names a config.json."""
    out = {}
    for name in ("hub2025_trees.jsonl.gz", "hub2022_dev.jsonl.gz"):
        stamps, with_config, total = [], 0, 0
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as lines:
            for line in lines:
                record = json.loads(line)
                total += 1
                with_config += any(isinstance(s, dict) and s.get("rfilename") == "config.json"
                                   for s in record.get("siblings") or [])
                value = record.get("lastModified")
                if isinstance(value, str):
                    stamps.append(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        newest = max(stamps)
        shares = {f"within_{d}d": sum(newest - s <= dt.timedelta(days=d) for s in stamps) / len(stamps)
                  for d in (1, 7, 30)}
        shares["per_day_from_30d"] = shares["within_30d"] / 30
        shares["models"] = total
        shares["with_config"] = with_config / total
        shares["newest"] = newest.isoformat()
        out[name] = shares
    return out


def plan(per_day: float, config_share: float) -> list[dict]:
    """Hours for a first full crawl and for a night at each tier's budget (the listing,
    then the downloads: one after the other)."""
    rows = []
    pages = HUB_MODELS_2026 / 1000
    changed = HUB_MODELS_2026 * per_day * config_share
    for tier, (api, resolves) in TIERS.items():
        listing = pages / api * WINDOW
        first = listing + HUB_MODELS_2026 * config_share / resolves * WINDOW
        night = listing + changed / resolves * WINDOW
        rows.append({"tier": tier, "api_per_5min": api, "resolves_per_5min": resolves,
                     "listing_h": listing / 3600, "first_full_crawl_h": first / 3600,
                     "changed_per_night": round(changed), "night_h": night / 3600})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--out", default="bench_crawl.json")
    args = parser.parse_args()

    from hub_server import FakeHub
    from semfin_spark.hub_crawl import fetch_configs_into, list_models_into

    records, configs = generated_hub(args.models)
    figures: dict[str, object] = {"models": args.models, "latency_s": args.latency,
                                  "workers": args.workers}
    with FakeHub(records, configs, lifetime=3600) as hub, tempfile.TemporaryDirectory() as tmp:
        hub.set_latency(args.latency)
        started = time.monotonic()
        listing = list_models_into(Path(tmp), endpoint=hub.url, page_size=1000, progress=None)
        listed_s = time.monotonic() - started
        todo = [(r["id"], r.get("sha")) for r in records]
        started = time.monotonic()
        fetched = fetch_configs_into(Path(tmp), todo, endpoint=hub.url, workers=args.workers,
                                     total=len(todo), progress=None)
        fetch_s = time.monotonic() - started
    figures.update(listing_s=round(listed_s, 2), listed=listing.models,
                   models_per_s_listed=round(listing.models / listed_s),
                   fetch_s=round(fetch_s, 2), fetched=fetched.outcomes,
                   configs_per_s=round(sum(fetched.outcomes.values()) / fetch_s, 1))
    rates = change_rates()
    per_day = rates["hub2025_trees.jsonl.gz"]["per_day_from_30d"]
    figures["change_rates"] = rates
    figures["plan"] = plan(per_day, rates["hub2025_trees.jsonl.gz"]["with_config"])
    Path(args.out).write_text(json.dumps(figures, indent=2, default=str))

    print(f"{'models':>8} {'latency':>8} {'listed/s':>9} {'configs/s':>10}")
    print(f"{args.models:>8} {args.latency * 1000:>6.0f}ms {figures['models_per_s_listed']:>9} "
          f"{figures['configs_per_s']:>10}")
    for name, shares in rates.items():
        print(f"{name}: modified within 1 d {shares['within_1d']:.1%}, 7 d {shares['within_7d']:.1%}, "
              f"30 d {shares['within_30d']:.1%} (~{shares['per_day_from_30d']:.2%} a day)")
    share = rates["hub2025_trees.jsonl.gz"]["with_config"]
    print(f"\nplan for {HUB_MODELS_2026:,} models, {share:.0%} with a config.json, "
          f"~{per_day:.2%} changing a day:")
    print(f"{'tier':>10} {'listing':>9} {'first crawl':>12} {'configs/night':>14} {'night':>8}")
    for row in figures["plan"]:
        print(f"{row['tier']:>10} {row['listing_h']:>8.2f}h {row['first_full_crawl_h']:>11.1f}h "
              f"{row['changed_per_night']:>14} {row['night_h']:>7.2f}h")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
