"""The incremental crawl (semfin_spark/crawl.py) through ``ingest --source hub``, against a
Hub-compatible server on 127.0.0.1 holding the 1,983 real models of
``../shared/data/hub2025_trees.jsonl.gz``, with faults injected.

One scenario runs four crawls in a row on one warehouse (module fixture), as four nights
would: a first crawl through 429s, 503s and truncated bodies; a second with nothing
changed; a third after commits, deletions and new models; a fourth after two deleted
models came back. The tests read what each crawl left.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import unquote

import pytest
from pyspark.sql import functions as F

from hub_server import FakeHub
from semfin_spark.crawl import CRAWL_ROOT
from semfin_spark.delta import DeltaStore
from semfin_spark.hub_crawl import HubCrawlError
from semfin_spark.ingest import ingest
from semfin_spark.schemas import CRAWL_STATE, HUB_MODELS
from semfin_spark.settings import HubSettings, load_settings

TOKEN = "hf_CRAWLtokenNeverLogged0123456789"
SMALL_FILES = {"ingest.hub_page_size": 200, "crawl.pages_per_file": 3,
               "crawl.configs_per_file": 100, "crawl.progress_seconds": 0.001,
               # retried at once, not after the shipped second: no real-time wait in the suite
               "ingest.hub_backoff_seconds": 0.01}


class RetryWaits(logging.Handler):
    """The waits before each retry, as the crawler logs them (its last argument)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.waits: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if ", retry " in record.msg:
            self.waits.append(float(record.args[-1]))


def lists_config(record: dict) -> bool:
    return any(s.get("rfilename") == "config.json" for s in record.get("siblings") or [])


def config_text(record: dict, version: int = 0) -> str:
    summary = record.get("config") or {}
    return json.dumps({"_name_or_path": record["id"], "model_type": summary.get("model_type") or "llama",
                       "architectures": summary.get("architectures") or ["LlamaForCausalLM"],
                       "hidden_size": 64 + version, "vocab_size": 32000})


@pytest.fixture(scope="module")
def real_hub(shared_data) -> tuple[list[dict], dict[str, str]]:
    with gzip.open(shared_data / "hub2025_trees.jsonl.gz", "rt", encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines]
    return records, {r["id"]: config_text(r) for r in records if lists_config(r)}


def crawl_settings(warehouse: Path, endpoint: str, **extra):
    settings = load_settings(environ={}, overrides={"warehouse": str(warehouse), **SMALL_FILES,
                                                    **extra})
    return settings.replace(hub=HubSettings(endpoint=endpoint, token=TOKEN))


def hub_rows(store: DeltaStore) -> dict[str, dict]:
    return {r["id"]: r.asDict() for r in store.read(HUB_MODELS).collect()}


def resolves(hub: FakeHub) -> int:
    return len(hub.requests_to(r"/resolve/"))


@pytest.fixture(scope="module")
def nights(spark, real_hub, tmp_path_factory):
    """Four crawls of one warehouse; what each saw and left."""
    records, configs = real_hub
    root = tmp_path_factory.mktemp("crawl")
    out: dict[str, object] = {"records": records, "configs": configs}
    with FakeHub(records, configs) as hub:
        settings = crawl_settings(root / "wh", hub.url)
        store = DeltaStore.from_settings(spark, settings)
        # Night 1: 5% of the config requests fail once (429 with Retry-After, 503, a body
        # cut halfway), and the listing is rate limited once.
        with_config = [r["id"] for r in records if lists_config(r)]
        faulty = with_config[::20]
        for i, repo_id in enumerate(faulty):
            pattern = rf"^/{repo_id}/resolve/"
            if i % 3 == 0:
                hub.add_fault(pattern, status=429, times=1, headers={"Retry-After": "0"})
            elif i % 3 == 1:
                hub.add_fault(pattern, status=503, times=1)
            else:
                hub.add_fault(pattern, truncate=True, times=1)
        hub.add_fault(r"^/api/models$", status=429, times=1, after=2, headers={"Retry-After": "0"})
        lines: list[str] = []
        waits, crawler_log = RetryWaits(), logging.getLogger("semfin_spark.hub_crawl")
        level = crawler_log.level
        crawler_log.addHandler(waits)
        crawler_log.setLevel(logging.DEBUG)
        try:
            out["first"] = ingest(spark, store, "hub", settings, progress=lines.append)
        finally:
            crawler_log.removeHandler(waits)
            crawler_log.setLevel(level)
        out["first_waits"] = waits.waits
        out["first_lines"], out["first_resolves"] = list(lines), resolves(hub)
        out["faulty"] = faulty
        out["after_first"] = hub_rows(store)

        # Night 2: nothing changed.
        before = resolves(hub)
        out["second"] = ingest(spark, store, "hub", settings, progress=lines.append)
        out["second_resolves"] = resolves(hub) - before
        out["after_second"] = hub_rows(store)

        # Night 3: three models get a new commit and config, four vanish, two are new.
        changed = [copy.deepcopy(r) for r in records if lists_config(r)][:3]
        for i, r in enumerate(changed):
            r["sha"] = f"{i + 1:040x}"
            r["lastModified"] = "2026-12-01T00:00:00.000Z"
        gone = [r["id"] for r in records[100:104]]
        born = [dict(copy.deepcopy(records[0]), id=f"newcomer/model-{i}", sha=f"{i + 7:040x}")
                for i in range(2)]
        now_held = ([next((c for c in changed if c["id"] == r["id"]), r) for r in records
                     if r["id"] not in gone] + born)
        hub.set_models(now_held, {**{r["id"]: config_text(r, 1) for r in changed},
                                  **{r["id"]: config_text(r) for r in born if lists_config(r)}})
        before = resolves(hub)
        out["third"] = ingest(spark, store, "hub", settings, progress=lines.append)
        out["third_resolves"] = hub.requests_to(r"/resolve/")[before:]
        out["changed"], out["gone"], out["born"] = changed, gone, born
        out["after_third"] = hub_rows(store)
        out["state_third"] = {r["model_key"]: r.asDict() for r in store.read(CRAWL_STATE).collect()}

        # Night 4: two of the vanished models are back.
        hub.set_models(now_held + [r for r in records if r["id"] in gone[:2]])
        before = resolves(hub)
        out["fourth"] = ingest(spark, store, "hub", settings, progress=lines.append)
        out["fourth_resolves"] = resolves(hub) - before
        out["after_fourth"] = hub_rows(store)
        out["state_fourth"] = {r["model_key"]: r.asDict() for r in store.read(CRAWL_STATE).collect()}
        out["requests"] = list(hub.requests)
    out["settings"], out["store"], out["lines"] = settings, store, lines
    return out


def test_first_crawl_through_faults_stores_every_model_and_every_config(nights):
    records, configs, rows = nights["records"], nights["configs"], nights["after_first"]
    assert len(rows) == len(records) == 1983  # one row per model, real ids as served
    assert set(rows) == {r["id"] for r in records}
    assert {i: rows[i]["config_json"] for i in configs} == configs  # every faulty one retried
    assert all(rows[r["id"]]["config_json"] is None for r in records if not lists_config(r))
    assert nights["first"].crawl["config_fetched"] == len(configs)
    assert nights["first"].crawl["complete"] is True
    # Each of the 5% faulty configs took exactly one retry; the others one request.
    assert nights["first_resolves"] == len(configs) + len(nights["faulty"])


def test_retries_wait_as_the_settings_say(nights):
    """`ingest.hub_backoff_seconds` reaches the crawler: the first retry of each faulty
    config waits between half and all of it (jitter); the 429s wait their Retry-After (0)."""
    waits, faulty = nights["first_waits"], nights["faulty"]
    assert len(waits) == len(faulty) + 1  # each faulty config once, the listing's 429 once
    assert sum(w == 0 for w in waits) == len(faulty[::3]) + 1  # Retry-After: 0
    assert all(0 <= w <= 0.01 for w in waits)
    assert sum(0.005 <= w for w in waits) == len(faulty) - len(faulty[::3])


def test_second_crawl_with_nothing_changed_downloads_no_config(nights):
    assert nights["second_resolves"] == 0
    assert nights["second"].crawl["to_fetch"] == 0
    assert nights["second"].crawl["unchanged"] == len(nights["configs"])
    first, second = nights["after_first"], nights["after_second"]
    assert set(second) == set(first)
    for repo_id, row in first.items():  # the stored configs are kept, metadata unchanged
        assert (second[repo_id]["config_json"], second[repo_id]["sha"], second[repo_id]["tags"]) \
            == (row["config_json"], row["sha"], row["tags"])


def test_a_new_commit_fetches_that_config_only(nights):
    fetched = {r.path.split("/resolve/")[0].lstrip("/") for r in nights["third_resolves"]}
    expected = {r["id"] for r in nights["changed"]} | {r["id"] for r in nights["born"]
                                                        if lists_config(r)}
    assert fetched == expected
    rows = nights["after_third"]
    for r in nights["changed"]:
        assert rows[r["id"]]["sha"] == r["sha"]
        assert json.loads(rows[r["id"]]["config_json"])["hidden_size"] == 65
    assert all(rows[r["id"]]["deleted_at"] is None for r in nights["born"])


def test_vanished_models_are_marked_deleted_not_dropped_and_come_back(nights):
    third, fourth = nights["after_third"], nights["after_fourth"]
    gone = nights["gone"]
    assert all(i in third and third[i]["deleted_at"] is not None for i in gone)
    assert sum(r["deleted_at"] is not None for r in third.values()) == 4
    assert nights["third"].crawl["deleted"] == 4
    state = nights["state_third"]
    assert all(state[i.lower()]["deleted_at"] is not None for i in gone)
    # Back on the Hub: listed again, mark cleared, nothing fetched (same commit as before).
    assert [fourth[i]["deleted_at"] for i in gone[:2]] == [None, None]
    assert all(fourth[i]["deleted_at"] is not None for i in gone[2:])
    assert nights["fourth"].crawl["reappeared"] == 2
    assert nights["fourth_resolves"] == 0
    assert fourth[gone[0]]["config_json"] == third[gone[0]]["config_json"]


def test_crawl_state_holds_what_the_crawler_saw(nights):
    state, records = nights["state_fourth"], nights["records"]
    assert len(state) == len(records) + 2
    some = [r for r in records if lists_config(r)][10]  # not among the changed three
    row = state[some["id"].lower()]
    assert (row["id"], row["sha"], row["config_status"], row["config_sha"]) == (
        some["id"], some["sha"], "fetched", some["sha"])
    bare = next(r for r in records if not lists_config(r))
    assert state[bare["id"].lower()]["config_status"] == "absent"
    assert row["first_listed_at"] < row["listed_at"]


def test_progress_names_pages_configs_budget_and_eta(nights):
    lines = nights["first_lines"]
    listing = [l for l in lines if l.startswith("crawl listing:")]
    assert listing and listing[-1].startswith("crawl listing: 10 pages, 1983 models")
    assert re.search(r"api \d+/1000, resolve \d+/5000 per 300s", listing[-1])  # free tier
    fetch = [l for l in lines if l.startswith("crawl configs:")]
    assert fetch and f"/{len(nights['configs'])} (" in fetch[-1]
    assert "resolve " in fetch[-1] and "waited" in fetch[-1]
    assert any("ETA" in l for l in nights["lines"] if l.startswith("crawl listing:"))  # 2nd night


def test_token_is_sent_but_never_written(nights):
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in nights["requests"])
    assert not any(TOKEN in line for line in nights["lines"])
    warehouse = Path(nights["settings"].warehouse)
    for path in warehouse.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            assert TOKEN.encode() not in data, path


def test_crawl_folders_are_kept_for_the_retention_then_removed(nights, spark, tmp_path):
    folders = sorted((Path(nights["settings"].warehouse) / CRAWL_ROOT).iterdir())
    assert len(folders) == 4 and all((f / "_INGESTED").exists() for f in folders)
    # Nights 2 to 4 hold only what changed: no config file when nothing was fetched.
    assert not list((folders[1] / "configs").glob("part-*"))
    records = nights["records"][:30]
    with FakeHub(records, {r["id"]: config_text(r) for r in records if lists_config(r)}) as hub:
        settings = crawl_settings(tmp_path / "wh", hub.url, **{"crawl.retention_days": 0})
        store = DeltaStore.from_settings(spark, settings)
        ingest(spark, store, "hub", settings, progress=lambda line: None)
    assert list((tmp_path / "wh" / CRAWL_ROOT).iterdir()) == []
    assert store.read(HUB_MODELS).count() == 30


def test_a_truncated_listing_is_not_taken_for_a_mass_deletion(spark, real_hub, tmp_path):
    records, configs = real_hub
    records = records[:100]
    with FakeHub(records, configs) as hub:
        settings = crawl_settings(tmp_path / "wh", hub.url)
        store = DeltaStore.from_settings(spark, settings)
        ingest(spark, store, "hub", settings, progress=lambda line: None)
        hub.set_models(records[:50])  # half the Hub "gone": a broken listing, not deletions
        lines: list[str] = []
        result = ingest(spark, store, "hub", settings, progress=lines.append)
    assert result.crawl["deleted"] == 0
    assert store.read(HUB_MODELS).where("deleted_at IS NOT NULL").count() == 0
    assert any("none is marked deleted" in line for line in lines)


def test_a_failed_listing_resumes_from_its_saved_page(spark, real_hub, tmp_path):
    records, configs = real_hub
    records = records[:1000]
    with FakeHub(records, configs) as hub:
        settings = crawl_settings(tmp_path / "wh", hub.url, **{"ingest.hub_max_retries": 0})
        store = DeltaStore.from_settings(spark, settings)
        hub.add_fault(r"^/api/models$", status=500, after=3)  # page 4 of 5 fails
        with pytest.raises(HubCrawlError, match="listing page 4"):
            ingest(spark, store, "hub", settings, progress=lambda line: None)
        assert not store.exists(HUB_MODELS)  # nothing ingested from half a listing
        hub.faults.clear()
        seen = len(hub.requests_to(r"^/api/models$"))
        result = ingest(spark, store, "hub", settings, progress=lambda line: None)
        again = hub.requests_to(r"^/api/models$")[seen:]
    assert result.crawl["resumed"] is True
    # Pages 1-3 were saved (pages_per_file=3): the rerun starts at page 4's cursor.
    assert len(again) == 2 and "cursor" in again[0].query
    assert store.read(HUB_MODELS).count() == 1000


KILLED_CRAWL = textwrap.dedent("""
    import sys
    from semfin_spark.hub_crawl import fetch_configs_into, list_models_into
    import gzip, json, pathlib
    folder, endpoint = pathlib.Path(sys.argv[1]), sys.argv[2]
    list_models_into(folder, endpoint=endpoint, page_size=50, pages_per_file=1, progress=None)
    todo = []
    for part in sorted((folder / "listing").glob("part-*.jsonl.gz")):
        for line in gzip.open(part, "rt"):
            record = json.loads(line)
            if any(s.get("rfilename") == "config.json" for s in record.get("siblings") or []):
                todo.append((record["id"], record["sha"]))
    fetch_configs_into(folder, todo, endpoint=endpoint, configs_per_file=10, workers=4,
                       progress=None)
""")


@pytest.mark.parametrize("kill_after_files", [0, 3])
def test_a_crawl_killed_mid_way_resumes_to_the_same_table(spark, real_hub, tmp_path,
                                                          kill_after_files):
    """SIGKILL the crawler (listing done or not, configs half fetched), then ingest: the
    tables equal a clean crawl's, and no stored config is downloaded again."""
    records, configs = real_hub
    records = records[:300]
    served = {r["id"]: configs[r["id"]] for r in records if r["id"] in configs}
    with FakeHub(records, served) as hub:
        clean = crawl_settings(tmp_path / "clean", hub.url)
        clean_store = DeltaStore.from_settings(spark, clean)
        ingest(spark, clean_store, "hub", clean, progress=lambda line: None)
        hub.requests.clear()

        settings = crawl_settings(tmp_path / "wh", hub.url)
        folder = Path(settings.warehouse) / CRAWL_ROOT / "20261202T000000000000Z"
        folder.mkdir(parents=True)
        (folder / "_crawl.json").write_text(json.dumps(
            {"crawl_id": folder.name, "endpoint": hub.url, "limit": None}))
        hub.add_fault(r"/resolve/|^/api/models$", status=None, delay=0.02)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        child = subprocess.Popen([sys.executable, "-c", KILLED_CRAWL, str(folder), hub.url],
                                 env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            listed = list((folder / "listing").glob("part-*"))
            fetched = list((folder / "configs").glob("part-*"))
            if (kill_after_files == 0 and len(listed) >= 2) or (
                    kill_after_files and len(fetched) >= kill_after_files):
                break
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.wait()
        # An answer stored as failed (a download that timed out on a loaded machine) is
        # asked again on resume, as it should be; every other stored answer is final.
        answers = [json.loads(line) for part in (folder / "configs").glob("part-*.jsonl.gz")
                   for line in gzip.open(part)]
        stored = {a["id"] for a in answers if a["status"] != "failed"}
        hub.faults.clear()
        before = len(hub.requests_to(r"/resolve/"))
        store = DeltaStore.from_settings(spark, settings)
        result = ingest(spark, store, "hub", settings, progress=lambda line: None)
        # Models, not requests: a request retried on resume is still one model asked.
        asked = {unquote(re.match(r"^/(.+)/resolve/[^/]+/config\.json$", r.path).group(1))
                 for r in hub.requests_to(r"/resolve/")[before:]}
    assert result.crawl["resumed"] is True
    assert stored or not kill_after_files
    assert not asked & stored, sorted(asked & stored)  # nothing stored is downloaded again
    assert asked == set(served) - stored  # and everything else is
    keep = [c for c in HUB_MODELS.columns if c not in ("source", "ingested_at")]
    resumed_rows = sorted(tuple(r) for r in store.read(HUB_MODELS).select(*keep).collect())
    clean_rows = sorted(tuple(r) for r in clean_store.read(HUB_MODELS).select(*keep).collect())
    assert resumed_rows == clean_rows
    state = [c for c in CRAWL_STATE.columns if c not in ("listed_at", "first_listed_at",
                                                         "config_at", "crawl_id")]
    assert (sorted(tuple(r) for r in store.read(CRAWL_STATE).select(*state).collect())
            == sorted(tuple(r) for r in clean_store.read(CRAWL_STATE).select(*state).collect()))


def test_an_older_warehouse_gains_the_deleted_at_column(spark, tmp_path, settings):
    """hub_models written before `deleted_at` existed reads with it as null and takes
    the next ingest (ALTER TABLE ADD COLUMNS) without losing a row."""
    store = DeltaStore.from_settings(spark, settings)
    old_schema = [f for f in HUB_MODELS.schema.fields if f.name != "deleted_at"]
    from pyspark.sql.types import StructType

    old = spark.createDataFrame([("a/old",) + (None,) * (len(old_schema) - 1)],
                                StructType(old_schema))
    old.write.format("delta").save(store.path(HUB_MODELS))
    assert store.read(HUB_MODELS).select("deleted_at").first()[0] is None
    source = tmp_path / "s.jsonl"
    source.write_text(json.dumps({"id": "b/new", "sha": "1" * 40}) + "\n")
    ingest(spark, store, f"snapshot:{source}", settings, progress=lambda line: None)
    raw = spark.read.format("delta").load(store.path(HUB_MODELS))
    assert "deleted_at" in raw.columns
    assert sorted(r.id for r in raw.collect()) == ["a/old", "b/new"]
    assert raw.where(F.col("deleted_at").isNotNull()).count() == 0


def test_a_first_crawl_spread_over_nights_by_max_fetch_minutes(spark, real_hub, tmp_path):
    """With a fetch deadline, a crawl ingests what it has; the next fetches only the rest."""
    records, configs = real_hub
    records = records[:400]
    served = {r["id"]: configs[r["id"]] for r in records if r["id"] in configs}
    with FakeHub(records, served) as hub:
        hub.add_fault(r"/resolve/", status=None, delay=0.05)
        settings = crawl_settings(tmp_path / "wh", hub.url, **{"crawl.max_fetch_minutes": 0.01})
        store = DeltaStore.from_settings(spark, settings)
        lines: list[str] = []
        first = ingest(spark, store, "hub", settings, progress=lines.append)
        after_first = sum(r.config_json is not None for r in store.read(HUB_MODELS).collect())
        asked_first = len(hub.requests_to(r"/resolve/"))
        hub.faults.clear()
        second = ingest(spark, store, "hub", settings.replace(
            crawl=settings.crawl.__class__()), progress=lines.append)
        asked_second = len(hub.requests_to(r"/resolve/")) - asked_first
    assert 0 < first.crawl["fetch_deferred"] < len(served)
    assert any("configs are left for the next crawl" in line for line in lines)
    assert store.read(HUB_MODELS).count() == 400  # every model ingested the first night
    assert after_first == asked_first == len(served) - first.crawl["fetch_deferred"]
    assert asked_second == first.crawl["fetch_deferred"]  # only the rest
    rows = {r.id: r.config_json for r in store.read(HUB_MODELS).collect()}
    assert {i: rows[i] for i in served} == served
    assert second.crawl["fetch_deferred"] == 0
