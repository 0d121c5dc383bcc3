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
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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

log = logging.getLogger(__name__)

# What HfApi.list_models(full=True, cardData=True, fetch_config=True) sends, page size apart.
_LIST_PARAMS = {"full": "true", "cardData": "true", "config": "true"}
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9_.\-]+/)?[A-Za-z0-9_.\-]+$")
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


def crawl_hub(out_dir: str | Path, *, endpoint: str, token: str | None = None,
              limit: int | None = None, page_size: int = 1000, workers: int = 8,
              max_retries: int = 5, progress: Callable[[str], None] | None = print,
              models_per_file: int = 50_000, fetch_configs: bool = True,
              progress_every: int = 10_000, timeout: float = 30.0,
              backoff_base: float = 1.0, backoff_max: float = 60.0,
              max_config_bytes: int = 8_000_000) -> CrawlResult:
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
                        backoff_base=backoff_base, backoff_max=backoff_max)
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
                 backoff_base: float, backoff_max: float) -> None:
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

    def iter_models(self, *, page_size: int) -> Iterator[Any]:
        """Every model object of ``/api/models``, page after page (lazily).

        Raises:
            HubCrawlError: A page failed; the message names it.
        """
        url: str | None = f"{self.endpoint}/api/models"
        params: dict[str, Any] | None = {**_LIST_PARAMS, "limit": page_size}
        page = 1
        while url is not None:
            where = f"listing page {page} ({url}{'?' + urlencode(params) if params else ''})"
            try:
                answer = self.get(url, params=params, what=where)
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
            yield from items
            url, params, page = answer.next_url, None, page + 1
            if url is not None and _origin(url) != self._origin:
                raise HubCrawlError(f"{where} links the next page to {_origin(url)[1]}, not the "
                                    f"endpoint; refusing to send the token there")

    def fetch_config(self, record: dict[str, Any], max_bytes: int) -> tuple[str | None, str | None]:
        """``(config_json text or None, _fetch_error or None)`` for one listed model; never raises
        for anything the Hub or the network does."""
        revision = _config_revision(record)
        url = config_url(self.endpoint, record["id"], revision or "main")
        try:
            answer = self.get(url, max_bytes=max_bytes, what=f"config.json of {record['id']}")
        except _GaveUp as exc:
            return None, f"config.json: {exc}"
        except httpx2.HTTPError as exc:  # e.g. too many redirects
            return None, f"config.json: {type(exc).__name__}"
        if answer.status == 200:
            if answer.body is None:
                return None, f"config.json: larger than {max_bytes} bytes"
            return answer.body.decode("utf-8", errors="replace"), None
        if answer.status == 404:
            return None, None  # listed but gone (or never there): no config, not an error
        if answer.status in (401, 403) and answer.headers.get("X-Error-Code") == "GatedRepo":
            return None, f"config.json: gated ({answer.status})"
        return None, f"config.json: HTTP {answer.status}{_REFUSED_HINTS.get(answer.status, '')}"

    def get(self, url: str, *, what: str, params: dict[str, Any] | None = None,
            max_bytes: int | None = None) -> _Answer:
        """GET with retries on 408/429/5xx and transient network errors.

        Raises:
            _GaveUp: Still failing after ``max_retries`` retries.
        """
        retry = 0
        while True:
            wait_hint = None
            try:
                answer = self._get_once(url, params, max_bytes)
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
            delay = min(self.backoff_max, wait_hint if wait_hint is not None
                        else self.backoff_base * 2 ** retry)
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
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or not isinstance(siblings, list):
        return None
    if not any(isinstance(s, dict) and s.get("rfilename") == "config.json" for s in siblings):
        return None
    sha = record.get("sha")
    return sha if isinstance(sha, str) and _COMMIT.match(sha) else "main"


# ------------------------------------------------------------------ output files


def _json_line(record: Any) -> bytes:
    try:
        return orjson.dumps(record) + b"\n"
    except TypeError:  # lone surrogates: escape them; the ingest rejects the line, not the file
        return json.dumps(record, ensure_ascii=True).encode() + b"\n"


def _output_folder(out_dir: str | Path) -> Path:
    text = str(out_dir)
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise ValueError(f"crawl output must be a local folder, not {text!r}")
    out = Path(text)
    out.mkdir(parents=True, exist_ok=True)
    existing = sorted(out.glob("part-*.jsonl.gz"))
    if existing:
        raise FileExistsError(f"{out} already holds crawl files ({existing[0].name}, ...); "
                              "crawl into an empty folder")
    return out


class _PartWriter:
    """Streams lines into ``part-NNNNN.jsonl.gz`` files; a file appears only when complete."""

    def __init__(self, out: Path, per_file: int) -> None:
        self.out = out
        self.per_file = per_file
        self.files: list[Path] = []
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
