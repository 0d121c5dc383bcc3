"""crawl_hub against a fake Hub on 127.0.0.1, through the real huggingface_hub client.

The fake Hub (tests/hub_server.py) serves ~30 real model records from
../shared/data/hub2025_trees.jsonl.gz and generated config.json texts. Every HTTP request
huggingface_hub makes during a test is recorded, and the test fails if one leaves 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, set_client_factory
from huggingface_hub import constants as hf_constants
from huggingface_hub.utils import _detect_agent
from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook

from hub_server import FakeHub
from semfin_spark.hub_crawl import (CrawlResult, HubCrawlError, RequestBudget, crawl_hub,
                                    fetch_configs_into)

TOKEN = "hf_TESTtokenDoNotLeak0123456789"
FAST = {"backoff_base": 0.001, "backoff_max": 0.01, "progress": None}


# ------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def hub_env(monkeypatch, tmp_path):
    """No telemetry, a throw-away HF_HOME, no token from the environment.

    huggingface_hub reads its environment once, at import, so the module constants are
    patched too: with telemetry on, HfApi and hf_hub_download fetch
    ``https://huggingface.co/api/agent-harnesses`` whatever endpoint they are given.
    """
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_constants, "HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH",
                        str(tmp_path / "hf_home" / ".agent_harnesses.json"))


@pytest.fixture(autouse=True)
def outgoing():
    """URLs of every request huggingface_hub sends; one not to 127.0.0.1 is stopped before
    it leaves and fails the test."""
    urls: list[str] = []

    def record(request: httpx2.Request) -> None:
        urls.append(str(request.url))
        if request.url.host != "127.0.0.1":
            raise httpx2.ConnectError(f"test guard: no requests to {request.url.host}")

    def factory() -> httpx2.Client:
        return httpx2.Client(event_hooks={"request": [hf_request_event_hook, record]},
                             follow_redirects=True, timeout=None)

    set_client_factory(factory)
    try:
        yield urls
    finally:
        set_client_factory(default_client_factory)
    elsewhere = [u for u in urls if urlsplit(u).hostname != "127.0.0.1"]
    assert not elsewhere, f"requests left the fake Hub: {elsewhere[:3]}"


@pytest.fixture(scope="module")
def records(shared_data: Path) -> list[dict]:
    """30 real records: 20 whose siblings list a config.json, 10 without."""
    with_config, without = [], []
    with gzip.open(shared_data / "hub2025_trees.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            bucket = with_config if _lists_config(record) else without
            if len(bucket) < (20 if bucket is with_config else 10):
                bucket.append(record)
            if len(with_config) == 20 and len(without) == 10:
                break
    return with_config[:10] + without + with_config[10:]


@pytest.fixture(scope="module")
def configs(records) -> dict[str, str]:
    """A generated config.json text (pretty-printed, non-ASCII) per model that lists one."""
    out = {}
    for i, record in enumerate(r for r in records if _lists_config(r)):
        summary = record.get("config") or {}
        out[record["id"]] = json.dumps({
            "_name_or_path": record["id"],
            "architectures": summary.get("architectures") or ["LlamaForCausalLM"],
            "model_type": summary.get("model_type") or "llama",
            "hidden_size": 64 * (i + 1), "num_hidden_layers": 2 + i % 6, "vocab_size": 32000,
            "torch_dtype": "bfloat16", "note": "naïve café – 模型",
        }, indent=2, ensure_ascii=False) + ("\n" if i % 2 else "")
    return out


@pytest.fixture
def hub(records, configs, monkeypatch):
    with FakeHub(records, configs) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def _lists_config(record: dict) -> bool:
    return any(s.get("rfilename") == "config.json" for s in record.get("siblings") or [])


def read_output(out: Path) -> list[dict]:
    rows = []
    for part in sorted(out.glob("part-*.jsonl.gz")):
        with gzip.open(part, "rt", encoding="utf-8") as lines:
            rows.extend(json.loads(line) for line in lines)
    return rows


def without_crawl_keys(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("config_json", "_fetch_error")}


def config_ids(records) -> list[str]:
    return [r["id"] for r in records if _lists_config(r)]


# ------------------------------------------------------------------ the happy path


def test_crawl_writes_every_model_with_identical_metadata_and_config_text(hub, records, configs,
                                                                          tmp_path):
    out = tmp_path / "crawl"
    result = crawl_hub(out, endpoint=hub.url, token=TOKEN, **FAST)

    rows = read_output(out)
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    assert [without_crawl_keys(r) for r in rows] == records
    for row in rows:
        assert row["config_json"] == configs.get(row["id"])
        assert "_fetch_error" not in row
    assert result == CrawlResult(files=[out / "part-00000.jsonl.gz"], models=30, configs=20,
                                 errors=0)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.jsonl.gz"]
    # config.json is fetched at the listed commit, once per model that lists one
    fetched = hub.requests_to(r"/resolve/")
    assert sorted(r.path for r in fetched) == sorted(
        f"/{r['id']}/resolve/{r['sha']}/config.json" for r in records if _lists_config(r))
    assert {r.method for r in fetched} == {"GET"}
    # what HfApi.list_models(full=True, cardData=True, fetch_config=True) asks for
    listing = hub.requests_to(r"^/api/models$")
    assert listing[0].query == {"full": ["true"], "cardData": ["true"], "config": ["true"],
                                "limit": ["1000"]}


def test_pagination_follows_link_header_and_splits_files(hub, records, configs, tmp_path):
    out = tmp_path / "crawl"
    result = crawl_hub(out, endpoint=hub.url, page_size=7, models_per_file=8, **FAST)

    listing = hub.requests_to(r"^/api/models$")
    assert len(listing) == 5  # 7 + 7 + 7 + 7 + 2
    assert [r.query["limit"] for r in listing] == [["7"]] * 5
    assert "cursor" not in listing[0].query and all("cursor" in r.query for r in listing[1:])
    assert [p.name for p in result.files] == [f"part-0000{i}.jsonl.gz" for i in range(4)]
    sizes = []
    for part in result.files:
        with gzip.open(part, "rt") as lines:
            sizes.append(sum(1 for _ in lines))
    assert sizes == [8, 8, 8, 6]
    rows = read_output(out)
    assert [without_crawl_keys(r) for r in rows] == records
    assert {r["id"]: r["config_json"] for r in rows if r["config_json"]} == configs


def test_limit_stops_the_listing_and_the_downloads(hub, records, tmp_path):
    result = crawl_hub(tmp_path / "crawl", endpoint=hub.url, limit=12, page_size=5, **FAST)

    rows = read_output(tmp_path / "crawl")
    assert [r["id"] for r in rows] == [r["id"] for r in records[:12]]
    assert result.models == 12
    assert len(hub.requests_to(r"^/api/models$")) == 3  # 5 + 5 + 2 of the third page
    assert len(hub.requests_to(r"/resolve/")) == len(config_ids(records[:12]))


def test_limit_zero_writes_nothing(hub, tmp_path):
    result = crawl_hub(tmp_path / "crawl", endpoint=hub.url, limit=0, **FAST)
    assert result == CrawlResult(files=[], models=0, configs=0, errors=0)
    assert hub.requests == []


def test_listing_only_without_configs(hub, records, tmp_path):
    result = crawl_hub(tmp_path / "crawl", endpoint=hub.url, fetch_configs=False, **FAST)
    rows = read_output(tmp_path / "crawl")
    assert rows == records  # no config_json key at all
    assert (result.models, result.configs) == (30, 0)
    assert hub.requests_to(r"/resolve/") == []


def test_progress_lines(hub, tmp_path):
    lines: list[str] = []
    crawl_hub(tmp_path / "crawl", endpoint=hub.url, progress=lines.append, progress_every=10,
              backoff_base=0.001)
    assert len(lines) == 3
    assert all(re.fullmatch(r"crawl: \d+ models, \d+ configs, \d+ errors, \d+ models/s", line)
               for line in lines)
    assert lines[-1].startswith("crawl: 30 models, 20 configs, 0 errors, ")


# ------------------------------------------------------------------ faults


def test_429_with_retry_after_is_waited_out_then_succeeds(hub, records, configs, tmp_path):
    hub.add_fault(r"^/api/models$", status=429, times=1, headers={"Retry-After": "1"})
    hub.add_fault(r"/resolve/", status=429, times=3, headers={"Retry-After": "3600"})
    out = tmp_path / "crawl"
    started = time.monotonic()
    result = crawl_hub(out, endpoint=hub.url, token=TOKEN, backoff_base=0.001, backoff_max=1.2,
                       progress=None)

    listing = hub.requests_to(r"^/api/models$")
    assert [r.status for r in listing] == [429, 200]
    assert listing[1].time - listing[0].time >= 0.9  # Retry-After: 1 honoured
    assert time.monotonic() - started < 30  # Retry-After: 3600 capped at backoff_max
    assert (result.models, result.configs, result.errors) == (30, 20, 0)
    assert {r["id"]: r["config_json"] for r in read_output(out) if r["config_json"]} == configs


def test_persistent_500_is_recorded_and_other_models_are_intact(hub, records, configs, tmp_path):
    broken = config_ids(records)[3]
    hub.add_fault(rf"^/{re.escape(broken)}/resolve/", status=500)
    out = tmp_path / "crawl"
    result = crawl_hub(out, endpoint=hub.url, max_retries=2, **FAST)

    rows = {r["id"]: r for r in read_output(out)}
    assert rows[broken]["config_json"] is None
    assert rows[broken]["_fetch_error"] == "config.json: HTTP 500 after 2 retries"
    assert len(hub.requests_to(rf"^/{re.escape(broken)}/resolve/")) == 3
    for record in records:
        assert without_crawl_keys(rows[record["id"]]) == record
        if record["id"] != broken:
            assert rows[record["id"]]["config_json"] == configs.get(record["id"])
            assert "_fetch_error" not in rows[record["id"]]
    assert (result.models, result.configs, result.errors) == (30, 19, 1)


def test_missing_config_is_null_without_error(records, configs, tmp_path):
    missing = config_ids(records)[0]
    served = {k: v for k, v in configs.items() if k != missing}
    with FakeHub(records, served) as server:
        result = crawl_hub(tmp_path / "crawl", endpoint=server.url, **FAST)
        assert [r.status for r in server.requests_to(rf"^/{re.escape(missing)}/resolve/")] == [404]
    row = next(r for r in read_output(tmp_path / "crawl") if r["id"] == missing)
    assert row["config_json"] is None and "_fetch_error" not in row
    assert (result.configs, result.errors) == (19, 0)


def test_malformed_config_text_is_kept_verbatim(records, configs, tmp_path):
    not_json, bad_utf8 = config_ids(records)[:2]
    served = {**configs, not_json: '{"model_type": "bert",,, <html>oops</html>',
              bad_utf8: b'{"model_type": "gpt2", "name": "\xff\xfe"}'}
    with FakeHub(records, served) as server:
        result = crawl_hub(tmp_path / "crawl", endpoint=server.url, **FAST)
    rows = {r["id"]: r for r in read_output(tmp_path / "crawl")}
    assert rows[not_json]["config_json"] == '{"model_type": "bert",,, <html>oops</html>'
    assert rows[bad_utf8]["config_json"] == '{"model_type": "gpt2", "name": "\ufffd\ufffd"}'
    assert "_fetch_error" not in rows[not_json] and "_fetch_error" not in rows[bad_utf8]
    assert result.errors == 0


def test_gated_config_is_recorded(records, configs, tmp_path):
    gated = config_ids(records)[5]
    with FakeHub(records, configs, gated=[gated]) as server:
        result = crawl_hub(tmp_path / "crawl", endpoint=server.url, token=TOKEN, **FAST)
        assert len(server.requests_to(rf"^/{re.escape(gated)}/resolve/")) == 1  # not retried
    row = next(r for r in read_output(tmp_path / "crawl") if r["id"] == gated)
    assert row["config_json"] is None
    assert row["_fetch_error"] == "config.json: gated (401)"
    assert result.errors == 1


def test_slow_config_times_out_and_a_merely_slow_one_succeeds(hub, records, configs, tmp_path):
    stuck, slow = config_ids(records)[1:3]
    hub.add_fault(rf"^/{re.escape(stuck)}/resolve/", status=None, delay=1.5)
    hub.add_fault(rf"^/{re.escape(slow)}/resolve/", status=None, delay=0.05)
    crawl_hub(tmp_path / "crawl", endpoint=hub.url, timeout=0.5, max_retries=1, **FAST)
    rows = {r["id"]: r for r in read_output(tmp_path / "crawl")}
    assert rows[stuck]["config_json"] is None
    assert rows[stuck]["_fetch_error"] == "config.json: timed out after 1 retries"
    assert rows[slow]["config_json"] == configs[slow]


def test_failed_listing_page_raises_naming_it_and_keeps_what_was_read(hub, records, tmp_path):
    hub.add_fault(r"^/api/models$", status=503, after=1)  # page 1 fine, then the Hub is down
    out = tmp_path / "crawl"
    with pytest.raises(HubCrawlError, match=r"listing page 2 .*HTTP 503 after 1 retries"):
        crawl_hub(out, endpoint=hub.url, page_size=10, models_per_file=4, max_retries=1, **FAST)
    assert [p.name for p in sorted(out.iterdir())] == [f"part-0000{i}.jsonl.gz" for i in range(3)]
    assert [without_crawl_keys(r) for r in read_output(out)] == records[:10]


def test_refused_listing_raises_without_retrying(records, tmp_path):
    with FakeHub(records, valid_tokens={"hf_the_right_one"}) as server:
        with pytest.raises(HubCrawlError, match=r"listing page 1 .*HTTP 401") as caught:
            crawl_hub(tmp_path / "crawl", endpoint=server.url, token=TOKEN, **FAST)
        assert len(server.requests) == 1
    assert TOKEN not in str(caught.value)
    assert list((tmp_path / "crawl").iterdir()) == []


def test_next_page_link_to_another_host_is_refused(hub, records, tmp_path):
    hub.next_link_base = "http://127.0.0.2:9"
    with pytest.raises(HubCrawlError, match="refusing to send the token"):
        crawl_hub(tmp_path / "crawl", endpoint=hub.url, token=TOKEN, page_size=10, **FAST)
    assert [without_crawl_keys(r) for r in read_output(tmp_path / "crawl")] == records[:10]


def test_output_folder_with_part_files_is_refused(hub, tmp_path):
    out = tmp_path / "crawl"
    out.mkdir()
    (out / "part-00000.jsonl.gz").write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds crawl files"):
        crawl_hub(out, endpoint=hub.url, **FAST)
    assert hub.requests == []


@pytest.mark.parametrize("kwargs", [{"page_size": 0}, {"workers": 0}, {"limit": -1},
                                    {"endpoint": "127.0.0.1:80"}])
def test_bad_arguments_are_refused(tmp_path, kwargs):
    args = {"endpoint": "http://127.0.0.1:9", **kwargs}
    with pytest.raises(ValueError):
        crawl_hub(tmp_path / "crawl", **args)


# ------------------------------------------------------------------ the token


def test_token_reaches_the_hub_but_no_output(records, configs, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    ids = config_ids(records)
    with FakeHub(records, configs, gated=[ids[0]]) as server:
        server.add_fault(rf"^/{re.escape(ids[1])}/resolve/", status=500)
        server.add_fault(rf"^/{re.escape(ids[2])}/resolve/", status=429, times=1,
                         headers={"Retry-After": "0"})
        server.add_fault(r"^/api/models$", status=502, times=1)
        result = crawl_hub(tmp_path / "crawl", endpoint=server.url, token=TOKEN, page_size=8,
                           max_retries=2, backoff_base=0.001, backoff_max=0.01, progress=print,
                           progress_every=5)
        sent = [r.headers.get("authorization") for r in server.requests]
    assert sent and all(value == f"Bearer {TOKEN}" for value in sent)
    assert result.errors == 2
    captured = capsys.readouterr()
    assert "crawl: 30 models" in captured.out
    assert caplog.records  # the retries were logged ...
    for text in (captured.out, captured.err, caplog.text):
        assert TOKEN not in text  # ... without the token
    for part in (tmp_path / "crawl").iterdir():
        assert TOKEN.encode() not in gzip.decompress(part.read_bytes())
        assert TOKEN.encode() not in part.read_bytes()


def test_crawl_contacts_only_the_endpoint_even_with_telemetry_on(hub, monkeypatch, outgoing,
                                                                tmp_path):
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(_detect_agent, "_registry", None)  # not resolved yet in this process
    crawl_hub(tmp_path / "crawl", endpoint=hub.url, token=TOKEN, limit=10, **FAST)
    assert outgoing and all(u.startswith(hub.url + "/") for u in outgoing)


def test_no_token_sends_no_authorization_even_with_hf_token_set(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_fromTheEnvironment")
    crawl_hub(tmp_path / "crawl", endpoint=hub.url, limit=10, **FAST)
    assert hub.requests and all("authorization" not in r.headers for r in hub.requests)


# ------------------------------------------------------------------ the fake Hub itself


def test_fake_hub_speaks_huggingface_hub(hub, records, configs, tmp_path):
    api = HfApi(endpoint=hub.url, token=TOKEN)
    listed = list(api.list_models(full=True, cardData=True, fetch_config=True, limit=25))
    assert [m.id for m in listed] == [r["id"] for r in records[:25]]
    assert listed[0].card_data is not None and listed[0].siblings is not None

    first = records[0]
    assert api.model_info(first["id"]).sha == first["sha"]
    assert api.model_info(first["id"], revision=first["sha"]).id == first["id"]
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")

    repo = config_ids(records)[0]
    path = hf_hub_download(repo, "config.json", endpoint=hub.url, token=TOKEN,
                           cache_dir=tmp_path / "cache")
    assert Path(path).read_text(encoding="utf-8") == configs[repo]
    assert [r.method for r in hub.requests_to(rf"^/{re.escape(repo)}/resolve/")] == ["HEAD", "GET"]
    without = next(r["id"] for r in records if not _lists_config(r))
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(without, "config.json", endpoint=hub.url, cache_dir=tmp_path / "cache")


def test_fake_hub_gated_and_renamed_repos(records, configs, tmp_path):
    ids = config_ids(records)
    with FakeHub(records, configs, gated=[ids[0]], renamed={"old-org/old-name": ids[1]}) as server:
        with pytest.raises(GatedRepoError):
            hf_hub_download(ids[0], "config.json", endpoint=server.url,
                            cache_dir=tmp_path / "cache")
        path = hf_hub_download("old-org/old-name", "config.json", endpoint=server.url,
                               cache_dir=tmp_path / "cache")
        assert Path(path).read_text(encoding="utf-8") == configs[ids[1]]
        assert [r.status for r in server.requests_to(r"^/old-org/old-name/")][0] == 307


def test_real_ids_longer_than_today_s_rule_are_crawled(shared_data, tmp_path):
    """Issue 14 §1: huggingface_hub's hf_hub_url refuses ids over 96 characters, and one
    such real model used to stop the crawl. The 19 real ones in hub2022_dev (and a
    legacy id without an owner) are listed, their config.json fetched, the crawl goes on."""
    with gzip.open(shared_data / "hub2022_dev.jsonl.gz", "rt", encoding="utf-8") as lines:
        real = [json.loads(l) for l in lines if l.strip()]
    odd = [r for r in real if len(r["id"]) > 96] + [r for r in real if "/" not in r["id"]][:1]
    assert len(odd) == 20
    for record in odd:
        record["siblings"] = [{"rfilename": "config.json"}]
    configs = {r["id"]: json.dumps({"model_type": "bert", "n": i}) for i, r in enumerate(odd)}
    with FakeHub(odd, configs) as server:
        result = crawl_hub(tmp_path / "crawl", endpoint=server.url, **FAST)
    rows = {r["id"]: r for r in read_output(tmp_path / "crawl")}
    assert (result.models, result.configs, result.errors) == (20, 20, 0)
    assert {i: json.loads(r["config_json"]) for i, r in rows.items()} == \
        {i: json.loads(t) for i, t in configs.items()}


# ------------------------------------------------------------------ the request budget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_budget_spreads_requests_over_the_window():
    clock = FakeClock()
    budget = RequestBudget({"api": 3, "resolve": 100}, window=300, clock=clock, sleep=clock.sleep)
    for _ in range(7):
        budget.acquire("api")
    # 3 per 300 s: the 4th request waits for the window to move on, the 7th for the next.
    assert clock.now == pytest.approx(1600.0)
    assert budget.used("api") == 1 and budget.used("resolve") == 0
    assert budget.waited == pytest.approx(600.0)


def test_budget_takes_the_hubs_word_over_the_configured_tier():
    clock = FakeClock()
    budget = RequestBudget({"api": 1000, "resolve": 5000}, clock=clock, sleep=clock.sleep)
    budget.acquire("resolve")
    budget.observe("resolve", {"RateLimit": '"resolvers";r=0;t=42',
                               "RateLimit-Policy": '"fixed window";"resolvers";q=3000;w=300'})
    budget.acquire("resolve")  # the Hub says nothing remains for 42 s
    assert clock.now == pytest.approx(1042.0)
    assert budget.limit("resolve") == 3000  # an anonymous account, not the free tier
    assert budget.describe() == "api 0/1000, resolve 2/3000 per 300s"


def test_crawl_waits_when_the_hub_says_the_budget_is_spent(hub, records, tmp_path):
    """A RateLimit header with nothing remaining holds every worker until the reset."""
    hub.add_fault(r"/resolve/", status=None, times=1,
                  headers={"RateLimit": '"resolvers";r=0;t=1',
                           "RateLimit-Policy": '"fixed window";"resolvers";q=3000;w=300'})
    todo = [(r["id"], r["sha"]) for r in records if any(
        s.get("rfilename") == "config.json" for s in r.get("siblings") or [])][:6]
    budget = RequestBudget({"api": 1000, "resolve": 5000})
    result = fetch_configs_into(tmp_path, todo, endpoint=hub.url, workers=1, budget=budget,
                                progress=None)
    times = [r.time for r in hub.requests_to(r"/resolve/")]
    assert result.outcomes == {"fetched": 6}
    assert times[1] - times[0] >= 0.9  # waited for the reset the Hub announced
    assert budget.limit("resolve") == 3000


def test_truncated_config_body_is_retried(hub, records, configs, tmp_path):
    hub.add_fault(r"/resolve/", truncate=True, times=2)
    result = crawl_hub(tmp_path / "crawl", endpoint=hub.url, **FAST)
    assert (result.models, result.configs, result.errors) == (30, 20, 0)
    assert {r["id"]: r["config_json"] for r in read_output(tmp_path / "crawl")
            if r["config_json"]} == configs


def test_config_answers_name_their_outcome(records, configs, tmp_path):
    ids = config_ids(records)
    served = {**configs, ids[1]: "{not json", ids[2]: "x" * 2000}
    del served[ids[0]]
    with FakeHub(records, served, gated=[ids[3]]) as server:
        server.add_fault(rf"^/{re.escape(ids[4])}/resolve/", status=503)
        server.add_fault(rf"^/{re.escape(ids[5])}/resolve/", status=410)
        todo = [(i, None) for i in ids[:7]] + [("not a/repo id", None)]
        fetch_configs_into(tmp_path, todo, endpoint=server.url, max_retries=1,
                           max_config_bytes=1000, progress=None, backoff_base=0.001)
    answers = {}
    for part in (tmp_path / "configs").glob("part-*.jsonl.gz"):
        answers.update({a["id"]: a for a in map(json.loads, gzip.open(part, "rt"))})
    assert {i: answers[i]["status"] for i in answers} == {
        ids[0]: "absent", ids[1]: "not_json", ids[2]: "too_large", ids[3]: "gated",
        ids[4]: "failed", ids[5]: "refused", ids[6]: "fetched", "not a/repo id": "refused"}
    assert answers[ids[1]]["config_json"] == "{not json"
    assert answers[ids[4]]["error"] == "config.json: HTTP 503 after 1 retries"
    assert answers["not a/repo id"]["error"] == "config.json: not a repo id"
