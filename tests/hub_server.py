"""A small Hub-compatible HTTP server for tests: the real ``huggingface_hub`` client talks to it.

It serves a list of model records (dicts in the Hub's ``/api/models`` shape) and their
``config.json`` texts on ``127.0.0.1`` (a free port), records every request, and injects
faults on demand. The real Hub is never contacted.

Endpoints (what ``huggingface_hub`` 2.4.0 calls):

* ``GET /api/models``: ``limit`` (page size, clamped to ``max_page_size``), ``full``,
  ``cardData``, ``config``, ``expand``/``expand[]``; cursor pagination through a
  ``Link: <...?cursor=...>; rel="next"`` header, as the Hub does (``HfApi.list_models``).
* ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{rev}``: the full
  record (``HfApi.model_info``); 404 ``X-Error-Code: RepoNotFound`` / ``RevisionNotFound``.
* ``HEAD``/``GET /{repo_id}/resolve/{rev}/{filename}``: the file with ``X-Repo-Commit``,
  ``ETag`` (the git blob sha1), ``Content-Length`` and ``Content-Type`` headers
  (``hf_hub_download``, ``get_hf_file_metadata``); 404 ``EntryNotFound`` for a missing
  file (with ``X-Repo-Commit``), 404 ``RevisionNotFound`` for an unknown revision,
  401 ``GatedRepo`` for a gated repo, 307 to the new name for a renamed repo.

Faults (:meth:`FakeHub.add_fault`): a rule matches requests by method and a regex on the
URL path; it can answer with any status and headers (429 + ``Retry-After``, 500, ...),
delay the answer (a slow Hub), skip the first ``after`` matches and stop after ``times``.

Example (in a test)::

    with FakeHub(records, configs={"org/m": '{"model_type": "bert"}'}) as hub:
        hub.add_fault(r"^/api/models$", status=429, times=2, headers={"Retry-After": "0"})
        HfApi(endpoint=hub.url).list_models(full=True)
        assert hub.requests[0].headers["authorization"] == "Bearer hf_test"
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

# Keys /api/models returns for every model; `full` adds the rest except cardData and config,
# which have their own flags (as on the Hub).
_BASE_KEYS = frozenset({"_id", "id", "modelId", "likes", "downloads", "tags", "pipeline_tag",
                        "library_name", "createdAt", "private", "trendingScore"})
_FLAGGED_KEYS = {"cardData": "cardData", "config": "config"}
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_MODEL_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+(?:/[^/]+)??)(?:/revision/(?P<rev>[^/]+))?$")


@dataclass
class RecordedRequest:
    """One request as the server saw it (path still URL-quoted, header names lower-cased)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    time: float
    status: int | None = None


@dataclass
class Fault:
    """A fault rule; see :meth:`FakeHub.add_fault`."""

    path: str
    status: int | None = 500
    times: int | None = None
    after: int = 0
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    methods: tuple[str, ...] = ("GET", "HEAD")
    truncate: bool = False
    seen: int = 0
    fired: int = 0

    def claim(self, method: str, path: str) -> bool:
        """Whether this rule applies to the request (counts it); call under the hub's lock."""
        if method not in self.methods or not re.search(self.path, path):
            return False
        self.seen += 1
        if self.seen <= self.after or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """A threaded Hub-compatible server on ``127.0.0.1``; a context manager.

    Args:
        models: Model records in the ``/api/models`` shape, served in this order.
        configs: ``repo_id -> config.json`` text (str, served as UTF-8) or raw bytes. A
            repo without an entry answers 404 ``EntryNotFound`` for its config.json.
        gated: Repo ids whose files answer 401 ``GatedRepo`` (metadata stays public).
        renamed: ``old_id -> new_id``: file requests to the old id get a 307 to the new one.
        valid_tokens: When given, a request carrying another bearer token gets 401
            ``Invalid credentials in Authorization header``; requests without one pass.
        max_page_size: Largest page ``/api/models`` returns (its default page size too).
        lifetime: Seconds after which the server stops by itself, in case a test leaks it.
    """

    def __init__(self, models: Iterable[Mapping[str, Any]],
                 configs: Mapping[str, str | bytes] | None = None, *,
                 gated: Iterable[str] = (), renamed: Mapping[str, str] | None = None,
                 valid_tokens: Iterable[str] | None = None, max_page_size: int = 1000,
                 lifetime: float = 300.0) -> None:
        self.models = [dict(m) for m in models]
        self._by_id = {m["id"]: m for m in self.models}
        self.configs = {k: v.encode("utf-8") if isinstance(v, str) else bytes(v)
                        for k, v in (configs or {}).items()}
        self.gated = set(gated)
        self.renamed = dict(renamed or {})
        self.valid_tokens = None if valid_tokens is None else set(valid_tokens)
        self.max_page_size = max_page_size
        self.lifetime = lifetime
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.next_link_base: str | None = None  # set to emit Link headers to another host
        self.latency = 0.0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """Base URL (the endpoint to give ``huggingface_hub``), e.g. ``http://127.0.0.1:PORT``."""
        if self._httpd is None:
            raise RuntimeError("FakeHub is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        hub = self

        class Handler(_HubHandler):
            fake_hub = hub

        httpd = _Server(("127.0.0.1", 0), Handler)
        httpd.handle_error = lambda request, client_address: None  # client gone: not our problem
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-hub", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port; safe to call twice."""
        with self._lock:
            httpd, self._httpd = self._httpd, None
            timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test controls

    def add_fault(self, path: str, *, status: int | None = 500, times: int | None = None,
                  after: int = 0, delay: float = 0.0, headers: Mapping[str, str] | None = None,
                  body: bytes | None = None, methods: Iterable[str] = ("GET", "HEAD"),
                  truncate: bool = False) -> Fault:
        """Inject a fault into matching requests; rules are tried in the order added.

        Args:
            path: Regex searched in the URL path (no query), e.g. ``r"^/api/models$"`` or
                ``r"/resolve/.*/config\\.json$"``.
            status: Status to answer with; None serves the normal answer (after ``delay``).
            times: How many matching requests fault; None for all of them.
            after: Let this many matching requests through before faulting.
            delay: Seconds to sleep before answering (a slow Hub).
            headers: Extra response headers, e.g. ``{"Retry-After": "1"}``.
            body: Response body; default a JSON ``{"error": ...}``.
            methods: HTTP methods the rule applies to.
            truncate: Serve the normal answer but close the connection halfway through
                its body (``Content-Length`` promises all of it); ``status`` is ignored.

        Returns:
            The rule; its ``fired`` attribute counts the requests it answered.
        """
        fault = Fault(path=path, status=None if truncate else status, times=times, after=after,
                      delay=delay, headers=dict(headers or {}), body=body,
                      methods=tuple(methods), truncate=truncate)
        with self._lock:
            self.faults.append(fault)
        return fault

    def set_models(self, models: Iterable[Mapping[str, Any]],
                   configs: Mapping[str, str | bytes] | None = None) -> None:
        """Replace what the Hub holds (a model changed, vanished or came back), and the
        configs of the models given in ``configs``."""
        with self._lock:
            self.models = [dict(m) for m in models]
            self._by_id = {m["id"]: m for m in self.models}
            for key, value in (configs or {}).items():
                self.configs[key] = value.encode("utf-8") if isinstance(value, str) else bytes(value)

    def set_latency(self, seconds: float) -> None:
        """Delay every answer by ``seconds`` (a Hub far away)."""
        self.latency = seconds

    def requests_to(self, path_regex: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path matches ``path_regex`` (and method, when given)."""
        with self._lock:
            return [r for r in self.requests if re.search(path_regex, r.path)
                    and (method is None or r.method == method)]

    # ------------------------------------------------------------------ request handling

    def _record(self, method: str, raw_path: str, headers: Mapping[str, str]) -> RecordedRequest:
        parts = urlsplit(raw_path)
        rec = RecordedRequest(method=method, path=parts.path,
                              query=parse_qs(parts.query, keep_blank_values=True),
                              headers={k.lower(): v for k, v in headers.items()}, time=time.time())
        with self._lock:
            self.requests.append(rec)
        return rec

    def _fault_for(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.claim(method, path):
                    return fault
        return None

    def respond(self, req: RecordedRequest) -> tuple[int, dict[str, str], bytes, bool]:
        """The answer to one request: (status, headers, body, truncate)."""
        if self.latency:
            time.sleep(self.latency)
        fault = self._fault_for(req.method, req.path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                body = fault.body if fault.body is not None else json.dumps(
                    {"error": f"injected HTTP {fault.status}"}).encode()
                return fault.status, {"Content-Type": "application/json", **fault.headers}, body, False
        status, headers, body = self._answer(req)
        if fault is not None:
            headers = {**headers, **fault.headers}
        return status, headers, body, fault is not None and fault.truncate

    def _answer(self, req: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        auth = req.headers.get("authorization")
        if (self.valid_tokens is not None and auth is not None
                and auth.removeprefix("Bearer ") not in self.valid_tokens):
            return _error(401, "Invalid credentials in Authorization header",
                          message="Invalid credentials in Authorization header")
        if req.path == "/api/models" and req.method == "GET":
            return self._list(req)
        if (m := _MODEL_INFO.match(req.path)) and req.method == "GET":
            return self._model_info(unquote(m["repo"]), m["rev"] and unquote(m["rev"]))
        if m := _RESOLVE.match(req.path):
            return self._resolve(unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"]))
        return _error(404, f"no route for {req.method} {req.path}")

    def _list(self, req: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        q = req.query
        try:
            size = min(int(q["limit"][-1]), self.max_page_size) if "limit" in q else self.max_page_size
            start = _decode_cursor(q["cursor"][-1]) if "cursor" in q else 0
        except (ValueError, KeyError):
            return _error(400, "invalid limit or cursor")
        if size <= 0:
            return _error(400, "limit must be positive")
        expand = q.get("expand", []) + q.get("expand[]", [])
        page = [self._shape(m, q, expand) for m in self.models[start:start + size]]
        headers = {"Content-Type": "application/json"}
        if start + size < len(self.models):
            params = {k: v for k, v in q.items() if k != "cursor"}
            params["cursor"] = [_encode_cursor(start + size)]
            base = self.next_link_base or self.url
            headers["Link"] = f'<{base}/api/models?{urlencode(params, doseq=True)}>; rel="next"'
        return 200, headers, json.dumps(page).encode()

    @staticmethod
    def _shape(model: dict[str, Any], q: dict[str, list[str]], expand: list[str]) -> dict[str, Any]:
        if expand:
            return {k: v for k, v in model.items() if k == "id" or k in expand}
        full = _truthy(q.get("full"))
        out = {}
        for key, value in model.items():
            flag = _FLAGGED_KEYS.get(key)
            if (key in _BASE_KEYS or (flag is None and full)
                    or (flag is not None and _truthy(q.get(flag)))):
                out[key] = value
        return out

    def _model_info(self, repo: str, rev: str | None) -> tuple[int, dict[str, str], bytes]:
        model = self._by_id.get(repo)
        if model is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        if rev is not None and rev not in ("main", model.get("sha")):
            return _error(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
        return 200, {"Content-Type": "application/json"}, json.dumps(model).encode()

    def _resolve(self, repo: str, rev: str, filename: str) -> tuple[int, dict[str, str], bytes]:
        if repo in self.renamed:
            target = f"/{self.renamed[repo]}/resolve/{quote(rev, safe='')}/{quote(filename)}"
            return 307, {"Location": target, "Content-Type": "text/plain"}, b""
        model = self._by_id.get(repo)
        if model is None:
            return _error(404, "Repository not found", code="RepoNotFound")
        sha = model.get("sha") or "0" * 40
        if rev not in ("main", sha):
            return _error(404, f"Invalid rev id: {rev}", code="RevisionNotFound")
        if repo in self.gated:
            return _error(401, f"Access to model {repo} is restricted.", code="GatedRepo",
                          extra={"X-Repo-Commit": sha})
        content = self.configs.get(repo) if filename == "config.json" else None
        if content is None:
            return _error(404, "Entry not found", code="EntryNotFound",
                          extra={"X-Repo-Commit": sha})
        return 200, {"Content-Type": "text/plain; charset=utf-8", "X-Repo-Commit": sha,
                     "ETag": f'"{_git_blob_sha1(content)}"', "Accept-Ranges": "bytes"}, content


def _error(status: int, text: str, *, code: str | None = None, message: str | None = None,
           extra: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json", **(extra or {})}
    if code:
        headers["X-Error-Code"] = code
    if message:
        headers["X-Error-Message"] = message
    return status, headers, json.dumps({"error": text}).encode()


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_cursor(cursor: str) -> int:
    offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("bad cursor")
    return offset


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # The default backlog of 5 drops connections when many workers connect at once, and a
    # dropped SYN costs the client a 1 s retransmit.
    request_queue_size = 128


class _HubHandler(BaseHTTPRequestHandler):
    fake_hub: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after stop()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def _serve(self, method: str) -> None:
        req = self.fake_hub._record(method, self.path, dict(self.headers.items()))
        status, headers, body, truncate = self.fake_hub.respond(req)
        req.status = status
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body[: len(body) // 2] if truncate else body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep test output clean; requests are in FakeHub.requests
