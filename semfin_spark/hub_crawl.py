"""Crawl a Hub's model metadata and each model's ``config.json`` into snapshot files.

:func:`crawl_hub` pages through ``/api/models`` (``full``, ``cardData`` and ``config``, as
``HfApi.list_models(full=True, cardData=True, fetch_config=True)`` asks for them), downloads
each model's ``config.json`` in a bounded thread pool and writes gzipped JSON Lines files in
the Hub snapshot format (see ``../shared/data/README.md``), which ``semfin ingest
--source snapshot:DIR`` (and ``--source hub``) reads.

Each output line is the model's ``/api/models`` object exactly as the Hub returned it, plus:

* ``config_json``: the raw text of ``config.json`` (UTF-8, undecodable bytes replaced), or
  null when the repo has none (absent from ``siblings`` or a 404). The text is data: it is
  never parsed, executed or unpickled here; the ingest validates it.
* ``_fetch_error`` (only when the download failed): a short reason such as
  ``"config.json: HTTP 500 after 5 retries"`` or ``"config.json: gated (401)"``; the ingest
  turns it into an ``ingest_rejects`` row and keeps the model.

Implementation details:
    Everything runs on the driver; no Spark is involved. The listing is read one page at a
    time and at most ``4 * workers`` models are in flight, so memory stays bounded however
    many models the Hub has; lines are streamed into ``part-NNNNN.jsonl.gz`` files of
    ``models_per_file`` models, each written under a hidden temporary name
    (``.part-NNNNN.jsonl.gz.tmp``, which the ingest skips) and renamed when complete.
    Requests go through ``huggingface_hub``'s shared HTTP session (its proxy and offline
    settings apply) with headers built here: in 2.4.0 ``build_hf_headers`` fetches
    ``/api/agent-harnesses`` from the endpoint fixed at import time (``huggingface.co``),
    not the one given, unless telemetry was disabled before the import. Retries are our own
    too: 2.4.0 retries listing pages with fixed waits (1 to 8 s, ``Retry-After`` + 1 s,
    uncapped), takes no page size, cannot resume after a failed page, and
    ``hf_hub_download`` caches every file under ``HF_HOME`` and hides the HTTP status of a
    failed download behind a cache miss. Records are kept as the raw JSON the Hub sent, not
    round-tripped through ``ModelInfo``, which drops and reshapes fields (``cardData``,
    ``safetensors``, dates).
"""

from __future__ import annotations

import email.utils
import gzip
import json
import logging
import os
import platform
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import httpx2
import huggingface_hub
import orjson
from huggingface_hub.utils import get_session, parse_ratelimit_headers

from semfin_spark import __version__
from semfin_spark.redaction import redact
from semfin_spark.repo_ids import is_valid_repo_id
from semfin_spark.settings import Settings, local_path

log = logging.getLogger(__name__)

# What HfApi.list_models(full=True, cardData=True, fetch_config=True) sends, page size apart.
_LIST_PARAMS = {"full": "true", "cardData": "true", "config": "true"}
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_PART = "part-{:05d}.jsonl.gz"


class HubCrawlError(RuntimeError):
    """The Hub listing could not be read (a page failed after retries, was refused or was
    not a JSON list). Files written before the failure stay in the output folder. The
    message names the URL with any credentials in it redacted."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


@dataclass
class CrawlResult:
    """What a crawl wrote.

    Attributes:
        files: The complete ``part-NNNNN.jsonl.gz`` files, in order.
        models: Models written.
        configs: Models written with a ``config_json`` text.
        errors: Models written with a ``_fetch_error``.
    """

    files: list[Path] = field(default_factory=list)
    models: int = 0
    configs: int = 0
    errors: int = 0


def client_options(settings: Settings) -> dict[str, Any]:
    """The Hub to crawl and how to retry it, from ``settings`` (``hub``, ``ingest.hub_*``
    retries and backoff, ``crawl.timeout_seconds``): the keyword arguments that
    :func:`crawl_hub`, :func:`list_models_into` and :func:`fetch_configs_into` share."""
    ingest = settings.ingest
    return dict(endpoint=settings.hub.endpoint, token=settings.hub.token,
                max_retries=ingest.hub_max_retries, backoff_base=ingest.hub_backoff_seconds,
                backoff_max=ingest.hub_backoff_max_seconds, timeout=settings.crawl.timeout_seconds)


def crawl_hub(out_dir: str | Path, *, endpoint: str, token: str | None = None,
              limit: int | None = None, page_size: int = 1000, workers: int = 8,
              max_retries: int = 5, progress: Callable[[str], None] | None = print,
              models_per_file: int = 50_000, fetch_configs: bool = True,
              progress_every: int = 10_000, timeout: float = 30.0,
              backoff_base: float = 1.0, backoff_max: float = 60.0,
              max_config_bytes: int = 8_000_000,
              budget: RequestBudget | None = None) -> CrawlResult:
    """Crawl the models of the Hub at ``endpoint`` into gzipped JSON Lines files in ``out_dir``.

    Args:
        out_dir: Local folder for ``part-00000.jsonl.gz``, ... (created if missing; must not
            already hold part files, so two crawls never mix).
        endpoint: Base URL of the Hub, e.g. ``https://huggingface.co``. Every request goes
            there; a next-page link to another host is refused.
        token: Hub token sent as ``Authorization: Bearer ...``; None sends none (a token
            saved on the machine is not picked up). It never appears in progress lines,
            log records, exception messages or output files.
        limit: Stop after this many models; None crawls them all.
        page_size: Models per listing request (the Hub allows at most 1000).
        workers: Concurrent ``config.json`` downloads.
        max_retries: Retries of a request answered 408, 429 or 5xx, or lost to a timeout or
            a network error, before giving up.
        progress: Receives a line every ``progress_every`` models, e.g.
            ``crawl: 12000 models, 11800 configs, 3 errors, 210 models/s``; None for silence.
        models_per_file: Models per output file.
        fetch_configs: Download each model's ``config.json``; False writes the listing only
            (and no ``config_json`` key).
        progress_every: Models between progress lines.
        timeout: Seconds to wait for a connection or for data before the attempt counts as
            failed.
        backoff_base: First wait between retries in seconds; it doubles on each retry.
        backoff_max: Cap on any wait, including the Hub's ``Retry-After``.
        max_config_bytes: A larger ``config.json`` is not kept (``_fetch_error`` says so).
        budget: Requests allowed per window (:class:`RequestBudget`); None: no limit
            beyond the Hub's 429 answers.

    Returns:
        A :class:`CrawlResult` with the files written and the counts.

    Raises:
        HubCrawlError: A listing page failed after ``max_retries`` retries, was refused
            (401, 403, ...), was not a JSON list or linked to another host. The message names
            the page; the models read before it are written to complete files first.
        FileExistsError: ``out_dir`` already holds ``part-*.jsonl.gz`` files.
        ValueError: An argument is out of range, ``endpoint`` is not an http(s) URL or
            ``out_dir`` is not a local path.
        OSError: ``out_dir`` cannot be written.

    Examples:
        >>> result = crawl_hub("/tmp/crawl", endpoint="https://huggingface.co",
        ...                    limit=100)  # doctest: +SKIP
        >>> result.models, [p.name for p in result.files]  # doctest: +SKIP
        (100, ['part-00000.jsonl.gz'])

    Implementation details:
        Runs on the driver only. A model whose ``config.json`` cannot be fetched is still
        written, with ``config_json`` null and ``_fetch_error`` set; a 404 is not an error
        (the repo simply has no config). ``config.json`` is fetched at the commit the
        listing reported (``sha``), so metadata and config belong together.
    """
    _check_positive(page_size=page_size, workers=workers, models_per_file=models_per_file,
                    progress_every=progress_every, timeout=timeout,
                    max_config_bytes=max_config_bytes)
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, not {limit}")
    if max_retries < 0 or backoff_base < 0 or backoff_max < 0:
        raise ValueError("max_retries, backoff_base and backoff_max must be >= 0")
    client = _HubClient(endpoint, token, timeout=timeout, max_retries=max_retries,
                        backoff_base=backoff_base, backoff_max=backoff_max, budget=budget)
    out = _output_folder(out_dir)
    writer = _PartWriter(out, models_per_file)
    result = CrawlResult(files=writer.files)
    started = time.monotonic()

    def emit(record: Any, fetch: Future | None) -> None:
        try:
            text, error = fetch.result() if fetch is not None else (None, None)
        except Exception as exc:  # noqa: BLE001 - one odd model never stops a crawl
            text, error = None, f"config.json: {type(exc).__name__}: {redact(str(exc))[:300]}"
        if isinstance(record, dict):
            record.pop("_fetch_error", None)  # only the crawler may say a fetch failed
            record.pop("config_json", None)
            if fetch_configs:
                record["config_json"] = text
            if error:
                record["_fetch_error"] = error
        writer.write(_json_line(record))
        result.models += 1
        result.configs += text is not None
        result.errors += error is not None
        if progress is not None and result.models % progress_every == 0:
            rate = result.models / max(time.monotonic() - started, 1e-9)
            progress(f"crawl: {result.models} models, {result.configs} configs, "
                     f"{result.errors} errors, {rate:.0f} models/s")

    models: Iterator[Any] = client.iter_models(page_size=min(page_size, limit or page_size))
    if limit is not None:
        models = islice(models, limit)  # stops before requesting a page it does not need
    pending: deque[tuple[Any, Future | None]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hub-crawl")
    try:
        try:
            for record in models:
                wanted = fetch_configs and _config_revision(record) is not None
                pending.append((record, pool.submit(client.fetch_config, record, max_config_bytes)
                                if wanted else None))
                while len(pending) >= 4 * workers:
                    emit(*pending.popleft())
        except HubCrawlError:
            while pending:  # keep everything read before the failed page
                emit(*pending.popleft())
            writer.close()
            raise
        while pending:
            emit(*pending.popleft())
        writer.close()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        writer.abort()
    return result


# ------------------------------------------------------------------ HTTP


@dataclass
class _Answer:
    status: int
    headers: httpx2.Headers
    body: bytes | None  # None: larger than the byte cap
    next_url: str | None


class _GaveUp(Exception):
    """A request kept failing transiently; the message says how (no URL, no token)."""


class _HubClient:
    """Requests to one Hub endpoint with one token, retried our way."""

    def __init__(self, endpoint: str, token: str | None, *, timeout: float, max_retries: int,
                 backoff_base: float, backoff_max: float,
                 budget: RequestBudget | None = None) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint must be an http(s) URL, not {redact(endpoint)!r}")
        self.endpoint = endpoint.rstrip("/")
        self._origin = _origin(self.endpoint)
        # Only the token given: never one saved on the machine or in the environment.
        self._headers = {"user-agent": f"semfin-spark/{__version__}; hf_hub/"
                                       f"{huggingface_hub.__version__}; python/"
                                       f"{platform.python_version()}"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.budget = budget

    def iter_models(self, *, page_size: int) -> Iterator[Any]:
        """Every model object of ``/api/models``, page after page (lazily).

        Raises:
            HubCrawlError: A page failed; the message names it.
        """
        for items, _ in self.iter_pages(page_size=page_size):
            yield from items

    def iter_pages(self, *, page_size: int, start_url: str | None = None,
                   first_page: int = 1) -> Iterator[tuple[list[Any], str | None]]:
        """Pages of ``/api/models`` as (models, URL of the next page or None), from the first
        page or from ``start_url`` (a next-page link kept by an interrupted crawl).

        Raises:
            HubCrawlError: A page failed; the message names it.
        """
        url: str | None = start_url or f"{self.endpoint}/api/models"
        params: dict[str, Any] | None = None if start_url else {**_LIST_PARAMS, "limit": page_size}
        if start_url and _origin(start_url) != self._origin:
            raise HubCrawlError("the saved next-page link is not on the endpoint")
        page = first_page
        while url is not None:
            where = f"listing page {page} ({url}{'?' + urlencode(params) if params else ''})"
            try:
                answer = self.get(url, params=params, what=where, kind="api")
            except _GaveUp as exc:
                raise HubCrawlError(f"{where} failed: {exc}") from None
            except httpx2.HTTPError as exc:  # e.g. too many redirects
                raise HubCrawlError(f"{where} failed: {type(exc).__name__}") from None
            if answer.status != 200:
                raise HubCrawlError(f"{where} failed: HTTP {answer.status}"
                                    f"{_REFUSED_HINTS.get(answer.status, '')}")
            items = _parse_page(answer.body or b"")
            if items is None:
                raise HubCrawlError(f"{where} is not a JSON list of models")
            url, params, page = answer.next_url, None, page + 1
            if url is not None and _origin(url) != self._origin:
                yield items, None
                raise HubCrawlError(f"{where} links the next page to {_origin(url)[1]}, not the "
                                    f"endpoint; refusing to send the token there")
            yield items, url

    def fetch_config(self, record: dict[str, Any], max_bytes: int) -> tuple[str | None, str | None]:
        """``(config_json text or None, _fetch_error or None)`` for one listed model; never raises
        for anything the Hub or the network does."""
        text, outcome = self.config_outcome(record["id"], _config_revision(record) or "main",
                                            max_bytes)
        return text, outcome.error

    def config_outcome(self, repo_id: str, revision: str,
                       max_bytes: int) -> tuple[str | None, ConfigOutcome]:
        """``config.json`` of one repo at one revision: (text or None, what happened).
        Never raises for anything the Hub or the network does."""
        url = config_url(self.endpoint, repo_id, revision)
        try:
            answer = self.get(url, max_bytes=max_bytes, what=f"config.json of {repo_id}",
                              kind="resolve")
        except _GaveUp as exc:
            return None, ConfigOutcome("failed", f"config.json: {exc}")
        except httpx2.HTTPError as exc:  # e.g. too many redirects
            return None, ConfigOutcome("failed", f"config.json: {type(exc).__name__}")
        if answer.status == 200:
            if answer.body is None:
                return None, ConfigOutcome("too_large",
                                           f"config.json: larger than {max_bytes} bytes")
            text = answer.body.decode("utf-8", errors="replace")
            return text, ConfigOutcome("fetched" if _is_json_object(answer.body) else "not_json")
        if answer.status == 404:
            return None, ConfigOutcome("absent")  # listed but gone (or never there): not an error
        if answer.status in (401, 403) and answer.headers.get("X-Error-Code") == "GatedRepo":
            return None, ConfigOutcome("gated", f"config.json: gated ({answer.status})")
        return None, ConfigOutcome(
            "refused", f"config.json: HTTP {answer.status}{_REFUSED_HINTS.get(answer.status, '')}")

    def get(self, url: str, *, what: str, kind: str, params: dict[str, Any] | None = None,
            max_bytes: int | None = None) -> _Answer:
        """GET with retries on 408/429/5xx and transient network errors (a truncated body
        is one), each attempt within the request budget of its ``kind``.

        Raises:
            _GaveUp: Still failing after ``max_retries`` retries.
        """
        retry = 0
        while True:
            wait_hint = None
            if self.budget is not None:
                self.budget.acquire(kind)
            try:
                answer = self._get_once(url, params, max_bytes)
                if self.budget is not None:
                    self.budget.observe(kind, answer.headers)
            except _TRANSIENT_ERRORS as exc:
                failure = "timed out" if isinstance(exc, httpx2.TimeoutException) \
                    else f"network error ({type(exc).__name__})"
            else:
                if answer.status not in _RETRY_STATUSES:
                    return answer
                failure = f"HTTP {answer.status}"
                wait_hint = _server_wait(answer)
            if retry >= self.max_retries:
                raise _GaveUp(f"{failure} after {self.max_retries} retries")
            # Jitter spreads the retries of many workers that failed together; a wait the
            # Hub asked for is honoured as it is.
            delay = min(self.backoff_max, wait_hint if wait_hint is not None
                        else self.backoff_base * 2 ** retry * random.uniform(0.5, 1.0))
            retry += 1
            log.debug("%s: %s, retry %d/%d in %.2fs", what, failure, retry, self.max_retries, delay)
            time.sleep(delay)

    def _get_once(self, url: str, params: dict[str, Any] | None, max_bytes: int | None) -> _Answer:
        with get_session().stream("GET", url, params=params, headers=self._headers,
                                  timeout=self.timeout) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if max_bytes is not None and len(body) > max_bytes:
                    return _Answer(response.status_code, response.headers, None, None)
            next_url = response.links.get("next", {}).get("url")
            return _Answer(response.status_code, response.headers, bytes(body),
                           urljoin(str(response.url), next_url) if next_url else None)


@dataclass(frozen=True)
class ConfigOutcome:
    """What fetching one ``config.json`` came to.

    ``status``: ``fetched`` (a JSON object), ``not_json`` (text kept; the ingest and
    flatten judge it), ``absent`` (404: the repo has none), ``gated``, ``too_large``,
    ``refused`` (another 4xx) or ``failed`` (still 429/5xx/timeout/truncated after the
    retries: worth trying on the next crawl). ``error``: the reason, for all but the
    first three.
    """

    status: str
    error: str | None = None


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


class RequestBudget:
    """Requests allowed per window for each kind of request, shared by every thread.

    The Hub counts API calls (``api``: the listing) and file resolves (``resolve``:
    ``config.json``) separately, per fixed window (5 minutes), and says where a client
    stands in ``RateLimit: "api";r=REMAINING;t=SECONDS`` and ``RateLimit-Policy:
    "fixed window";"api";q=LIMIT;w=SECONDS`` headers. :meth:`acquire` waits until one more
    request of a kind fits: within the configured limit over the last window, and, while
    the Hub's last word is fresh, within what it said remains. :meth:`observe` takes the
    Hub's word: its policy replaces the configured limit (the account tier may differ).

    Args:
        limits: Requests per window for each kind, e.g. ``{"api": 1000, "resolve": 5000}``.
        window: The window in seconds.

    Examples:
        >>> budget = RequestBudget({"api": 2, "resolve": 10}, window=300)
        >>> budget.acquire("api"); budget.acquire("api"); budget.used("api")
        2
        >>> budget.observe("api", {"RateLimit": '"api";r=0;t=1',
        ...                        "RateLimit-Policy": '"fixed window";"api";q=900;w=300'})
        >>> budget.limit("api")
        900
    """

    def __init__(self, limits: Mapping[str, int], window: float = 300.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if window <= 0 or any(v <= 0 for v in limits.values()):
            raise ValueError("request budgets and the window must be > 0")
        self._limits = dict(limits)
        self._windows = {kind: float(window) for kind in limits}
        self._sent: dict[str, deque[float]] = {kind: deque() for kind in limits}
        self._hub: dict[str, tuple[int, float]] = {}  # kind -> (remaining, reset time)
        self._lock = threading.Lock()
        self._clock, self._sleep = clock, sleep
        self.waited = 0.0  # seconds spent waiting for the budget, all threads together

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestBudget:
        """The budget of ``settings.crawl`` for the account tier of ``settings.hub``'s token."""
        return cls(settings.crawl.budget(bool(settings.hub.token)), settings.crawl.window_seconds)

    def acquire(self, kind: str) -> None:
        """Block until a request of ``kind`` fits the budget, and count it."""
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait(kind, now)
                if wait <= 0:
                    self._sent[kind].append(now)
                    if kind in self._hub:
                        remaining, reset = self._hub[kind]
                        self._hub[kind] = (remaining - 1, reset)
                    return
            # Short naps: a header arriving meanwhile (a reset) is taken into account.
            nap = min(wait, 5.0)
            self.waited += nap
            self._sleep(nap)

    def _wait(self, kind: str, now: float) -> float:
        sent, window = self._sent[kind], self._windows[kind]
        while sent and sent[0] <= now - window:
            sent.popleft()
        wait = sent[0] + window - now if len(sent) >= self._limits[kind] else 0.0
        if kind in self._hub:
            remaining, reset = self._hub[kind]
            if now >= reset:
                del self._hub[kind]
            elif remaining <= 0:
                wait = max(wait, reset - now)
        return wait

    def observe(self, kind: str, headers: Mapping[str, str]) -> None:
        """Take the Hub's ``RateLimit`` / ``RateLimit-Policy`` headers into account."""
        info = parse_ratelimit_headers(headers)
        if info is None:
            return
        with self._lock:
            self._hub[kind] = (info.remaining, self._clock() + info.reset_in_seconds)
            if info.limit and info.window_seconds:
                self._limits[kind] = info.limit
                self._windows[kind] = float(info.window_seconds)

    def used(self, kind: str) -> int:
        """Requests of ``kind`` sent in the last window."""
        with self._lock:
            self._wait(kind, self._clock())
            return len(self._sent[kind])

    def limit(self, kind: str) -> int:
        """The current limit of ``kind`` per window."""
        return self._limits[kind]

    def describe(self) -> str:
        """e.g. ``api 12/1000, resolve 800/5000 per 300s``."""
        parts = [f"{kind} {self.used(kind)}/{self.limit(kind)}" for kind in self._limits]
        windows = {int(w) for w in self._windows.values()}
        return ", ".join(parts) + (f" per {windows.pop()}s" if len(windows) == 1 else "")


_REFUSED_HINTS = {401: " (the Hub wants a valid token)", 403: " (the token lacks access)"}


def _server_wait(answer: _Answer) -> float | None:
    """Seconds the Hub asked us to wait (``Retry-After`` or an exhausted ``RateLimit``)."""
    if answer.status == 429:
        info = parse_ratelimit_headers(answer.headers)
        if info is not None and info.remaining == 0:
            return float(info.reset_in_seconds)
    value = (answer.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def _parse_page(body: bytes) -> list[Any] | None:
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # orjson refuses lone surrogates the Hub may still send; keep those records
            items = json.loads(body)
        except ValueError:
            return None
    return items if isinstance(items, list) else None


def config_url(endpoint: str, repo_id: str, revision: str) -> str:
    """The resolve URL of a repo's ``config.json``, as ``huggingface_hub.hf_hub_url`` makes it.

    Not ``hf_hub_url`` itself: it validates the id by today's creation rules (at most 96
    characters) and raises for the older, longer ids the Hub still serves, which would
    stop a crawl at the first one.

    Examples:
        >>> config_url("http://127.0.0.1:9", "o/" + "n" * 120, "main")[-29:]
        'nnnn/resolve/main/config.json'
    """
    return f"{endpoint.rstrip('/')}/{repo_id}/resolve/{quote(revision, safe='')}/config.json"


def _config_revision(record: Any) -> str | None:
    """Revision to fetch ``config.json`` at (the listed commit, else main); None when the
    listing says there is no root ``config.json`` or the id is not a repo id."""
    if not isinstance(record, dict):
        return None
    repo_id, siblings = record.get("id"), record.get("siblings")
    if not isinstance(repo_id, str) or not is_valid_repo_id(repo_id) or not isinstance(siblings, list):
        return None
    if not any(isinstance(s, dict) and s.get("rfilename") == "config.json" for s in siblings):
        return None
    sha = record.get("sha")
    return sha if isinstance(sha, str) and _COMMIT.match(sha) else "main"


# ------------------------------------------------------------------ the incremental crawl
#
# The warehouse's crawl (semfin_spark.crawl) runs in two driver phases around a Spark join:
# list every model into <folder>/listing/, let Spark pick the models whose config.json is
# new or changed, fetch only those into <folder>/configs/. Both phases resume where a
# killed run stopped: files appear only when complete, and the listing keeps its
# next-page link in _progress.json after each file.

LISTING_DIR = "listing"
CONFIGS_DIR = "configs"
_LISTING_PROGRESS = "_progress.json"


@dataclass
class ListingResult:
    """What :func:`list_models_into` holds in ``<folder>/listing`` (this run and before).

    Attributes:
        files: The complete listing files, in order.
        models: Models listed.
        pages: Listing pages read.
        complete: The listing reached its last page (not stopped by a limit).
    """

    files: list[Path]
    models: int
    pages: int
    complete: bool


def list_models_into(folder: str | Path, *, endpoint: str, token: str | None = None,
                     limit: int | None = None, page_size: int = 1000, pages_per_file: int = 10,
                     max_retries: int = 5, timeout: float = 30.0, backoff_base: float = 1.0,
                     backoff_max: float = 60.0, budget: RequestBudget | None = None,
                     progress: Callable[[str], None] | None = print,
                     progress_seconds: float = 30.0,
                     expected_models: int | None = None) -> ListingResult:
    """List every model of the Hub into ``<folder>/listing/part-NNNNN.jsonl.gz``; resumable.

    Each line is the model's ``/api/models`` object as the Hub sent it (``full``,
    ``cardData``, ``config``), without any ``config_json`` or ``_fetch_error`` key (only
    the crawler may set those). After each file of ``pages_per_file`` pages the next-page
    link is saved, so a killed listing resumes from there; a listing already finished is
    not requested again.

    Args:
        folder: The crawl's folder (created if missing).
        endpoint: Base URL of the Hub.
        token: Hub token, or None; never written anywhere.
        limit: Stop after this many models (``complete`` is then False).
        page_size: Models per listing request (the Hub allows at most 1000).
        pages_per_file: Pages per listing file: what a kill can cost.
        max_retries, timeout, backoff_base, backoff_max: As for :func:`crawl_hub`.
        budget: The request budget (API calls count as ``api``).
        progress: Receives a line every ``progress_seconds``, e.g. ``crawl listing: 12 pages,
            12000 models, 950 models/s, api 12/1000 per 300s, ETA 25s of ~36000``.
        expected_models: Models the Hub held last time, for the ETA.

    Returns:
        A :class:`ListingResult`.

    Raises:
        HubCrawlError: A page failed after the retries or was refused; what was listed
            before it stays and the next run resumes there.
    """
    _check_positive(page_size=page_size, pages_per_file=pages_per_file,
                    progress_seconds=progress_seconds)
    out = Path(folder) / LISTING_DIR
    out.mkdir(parents=True, exist_ok=True)
    state = read_json_file(out / _LISTING_PROGRESS) or {"files": 0, "models": 0, "pages": 0,
                                                     "next_url": None, "done": False}
    _drop_unrecorded(out, state["files"])
    writer = _PartWriter(out, per_file=10**12, start=state["files"])
    result = ListingResult(files=writer.files, models=state["models"], pages=state["pages"],
                           complete=bool(state["done"]) and limit is None)
    if state["done"] or (limit is not None and result.models >= limit):
        return result
    client = _HubClient(endpoint, token, timeout=timeout, max_retries=max_retries,
                        backoff_base=backoff_base, backoff_max=backoff_max, budget=budget)
    meter = _Meter(progress, progress_seconds)
    pages_in_file = 0

    def save(next_url: str | None, done: bool) -> None:
        writer.close()
        write_json_atomically(out / _LISTING_PROGRESS, {
            "files": len(writer.files), "models": result.models, "pages": result.pages,
            "next_url": next_url, "done": done})

    try:
        pages = client.iter_pages(page_size=min(page_size, limit or page_size),
                                  start_url=state["next_url"], first_page=state["pages"] + 1)
        next_url = state["next_url"]
        for items, next_url in pages:
            for record in items:
                if limit is not None and result.models >= limit:
                    break
                if isinstance(record, dict):
                    record.pop("config_json", None)
                    record.pop("_fetch_error", None)
                writer.write(_json_line(record))
                result.models += 1
            result.pages += 1
            pages_in_file += 1
            stop = next_url is None or (limit is not None and result.models >= limit)
            if pages_in_file >= pages_per_file or stop:
                save(next_url, next_url is None)
                pages_in_file = 0
            meter.tick(lambda: _listing_line(result, meter, budget, expected_models))
            if stop:
                break
    finally:
        writer.abort()
    result.complete = next_url is None and limit is None
    if progress is not None:
        progress(_listing_line(result, meter, budget, expected_models))
    return result


def _listing_line(result: ListingResult, meter: _Meter, budget: RequestBudget | None,
                  expected: int | None) -> str:
    rate = meter.rate(result.models)
    line = f"crawl listing: {result.pages} pages, {result.models} models, {rate:.0f} models/s"
    if budget is not None:
        line += f", {budget.describe()}"
    if expected and rate > 0 and expected > result.models:
        line += f", ETA {_duration((expected - result.models) / rate)} of ~{expected}"
    return line


@dataclass
class FetchResult:
    """What :func:`fetch_configs_into` did in this run.

    Attributes:
        files: The config files written by this run.
        requested: Models whose ``config.json`` was asked for.
        outcomes: Count per :class:`ConfigOutcome` status.
        stopped_at_deadline: The deadline came before the end of ``todo``.
    """

    files: list[Path] = field(default_factory=list)
    requested: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    stopped_at_deadline: bool = False


def fetch_configs_into(folder: str | Path, todo: Iterable[tuple[str, str | None]], *,
                       endpoint: str, token: str | None = None, total: int | None = None,
                       workers: int = 8, configs_per_file: int = 1000,
                       max_retries: int = 5, timeout: float = 30.0,
                       backoff_base: float = 1.0, backoff_max: float = 60.0,
                       max_config_bytes: int = 8_000_000, budget: RequestBudget | None = None,
                       progress: Callable[[str], None] | None = print,
                       progress_seconds: float = 30.0,
                       deadline: float | None = None) -> FetchResult:
    """Fetch ``config.json`` of each (repo id, commit) into ``<folder>/configs/``.

    Each line is ``{"id", "sha", "status", "error", "at", "config_json"}`` (``status`` as
    in :class:`ConfigOutcome`, ``at`` the UTC time of the answer). Files hold
    ``configs_per_file`` answers and appear only when complete, so a kill loses at most
    one file's worth; a later run asks only for what no file holds (the caller decides
    that: :mod:`semfin_spark.crawl` does it with a Spark join).

    Args:
        folder: The crawl's folder.
        todo: (repo id, commit sha or None for ``main``) pairs, consumed lazily.
        total: How many pairs ``todo`` holds, for the progress ETA.
        workers: Concurrent downloads.
        configs_per_file: Answers per file.
        budget: The request budget (downloads count as ``resolve``).
        deadline: A ``time.monotonic()`` after which no new download starts (those under
            way finish); the rest is left for the next crawl. None: no deadline.
        Others: as for :func:`crawl_hub`.

    Returns:
        A :class:`FetchResult`.
    """
    _check_positive(workers=workers, configs_per_file=configs_per_file,
                    progress_seconds=progress_seconds, max_config_bytes=max_config_bytes)
    out = Path(folder) / CONFIGS_DIR
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    existing = sorted(out.glob("part-*.jsonl.gz"))
    start = int(existing[-1].name[5:10]) + 1 if existing else 0
    writer = _PartWriter(out, configs_per_file, start=start)
    client = _HubClient(endpoint, token, timeout=timeout, max_retries=max_retries,
                        backoff_base=backoff_base, backoff_max=backoff_max, budget=budget)
    result = FetchResult()
    meter = _Meter(progress, progress_seconds)

    def fetch(repo_id: str, sha: str | None) -> tuple[bytes, str]:
        """The answer's line and its status."""
        revision = sha if isinstance(sha, str) and _COMMIT.match(sha) else "main"
        if not is_valid_repo_id(repo_id):  # never turned into a URL
            text, outcome = None, ConfigOutcome("refused", "config.json: not a repo id")
        else:
            try:
                text, outcome = client.config_outcome(repo_id, revision, max_config_bytes)
            except Exception as exc:  # noqa: BLE001 - one odd model never stops a crawl
                text, outcome = None, ConfigOutcome(
                    "failed", f"config.json: {type(exc).__name__}: {redact(str(exc))[:300]}")
        return _json_line({"id": repo_id, "sha": sha, "status": outcome.status,
                           "error": outcome.error, "at": _utc_now(),
                           "config_json": text}), outcome.status

    def emit(future: Future) -> None:
        line, status = future.result()
        writer.write(line)
        result.outcomes[status] = result.outcomes.get(status, 0) + 1
        meter.tick(lambda: _fetch_line(result, meter, budget, total))

    # Answers are written as they come, in any order: a model waiting out a retry does
    # not hold up the others (the listing order does not matter here).
    in_flight: set[Future] = set()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hub-config")
    try:
        for repo_id, sha in todo:
            if deadline is not None and time.monotonic() >= deadline:
                result.stopped_at_deadline = True
                break
            in_flight.add(pool.submit(fetch, repo_id, sha))
            result.requested += 1
            if len(in_flight) >= 4 * workers:
                done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    emit(future)
        for future in wait(in_flight).done:
            emit(future)
        writer.close()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        writer.abort()
    result.files = writer.files[start:]
    if progress is not None and result.requested:
        progress(_fetch_line(result, meter, budget, total))
    return result


def _fetch_line(result: FetchResult, meter: _Meter, budget: RequestBudget | None,
                total: int | None) -> str:
    done = sum(result.outcomes.values())
    rate = meter.rate(done)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.outcomes.items()))
    line = f"crawl configs: {done}{f'/{total}' if total else ''} ({counts}), {rate:.1f} configs/s"
    if budget is not None:
        line += f", {budget.describe()}, waited {budget.waited:.0f}s for the budget"
    if total and rate > 0 and total > done:
        line += f", ETA {_duration((total - done) / rate)}"
    return line


class _Meter:
    """Rates since the start and a progress line at most every ``every`` seconds."""

    def __init__(self, progress: Callable[[str], None] | None, every: float) -> None:
        self.progress, self.every = progress, every
        self.started = self.last = time.monotonic()

    def rate(self, count: int) -> float:
        return count / max(time.monotonic() - self.started, 1e-9)

    def tick(self, line: Callable[[], str]) -> None:
        now = time.monotonic()
        if self.progress is not None and now - self.last >= self.every:
            self.last = now
            self.progress(line())


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _utc_now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def write_json_atomically(path: Path, value: Any) -> None:
    """Replace ``path`` atomically: a kill leaves the old or the new text, never half."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w") as handle:
        json.dump(value, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def _drop_unrecorded(out: Path, recorded: int) -> None:
    """Remove listing files a killed run wrote after its last saved progress."""
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    for part in out.glob("part-*.jsonl.gz"):
        if int(part.name[5:10]) >= recorded:
            part.unlink()


# ------------------------------------------------------------------ output files


def _json_line(record: Any) -> bytes:
    try:
        return orjson.dumps(record) + b"\n"
    except TypeError:  # lone surrogates: escape them; the ingest rejects the line, not the file
        return json.dumps(record, ensure_ascii=True).encode() + b"\n"


def _output_folder(out_dir: str | Path) -> Path:
    text = local_path(str(out_dir))
    if text is None:
        raise ValueError(f"crawl output must be a local folder, not {str(out_dir)!r}")
    out = Path(text)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("part-*.jsonl.gz"))
    if existing:
        raise FileExistsError(f"{out} already holds crawl files ({existing[0].name}, ...); "
                              "crawl into an empty folder")
    return out


class _PartWriter:
    """Streams lines into ``part-NNNNN.jsonl.gz`` files; a file appears only when complete."""

    def __init__(self, out: Path, per_file: int, start: int = 0) -> None:
        self.out = out
        self.per_file = per_file
        self.start = start
        self.files: list[Path] = [out / _PART.format(i) for i in range(start)]
        self._raw: Any = None
        self._gz: gzip.GzipFile | None = None
        self._lines = 0

    def _temp(self) -> Path:
        return self.out / f".{_PART.format(len(self.files))}.tmp"

    def write(self, line: bytes) -> None:
        if self._gz is None:
            self._raw = open(self._temp(), "wb")  # noqa: SIM115 (closed in close/abort)
            self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6)
            self._lines = 0
        self._gz.write(line)
        self._lines += 1
        if self._lines >= self.per_file:
            self.close()

    def close(self) -> None:
        """Finish the current file and give it its final name."""
        if self._gz is None:
            return
        temp = self._temp()
        self._gz.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        self._gz = self._raw = None
        final = self.out / _PART.format(len(self.files))
        os.replace(temp, final)
        self.files.append(final)

    def abort(self) -> None:
        """Drop an unfinished file (no-op after :meth:`close`)."""
        if self._gz is None:
            return
        try:
            self._gz.close()
            self._raw.close()
        finally:
            self._gz = self._raw = None
            self._temp().unlink(missing_ok=True)


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be > 0, not {value}")
