"""A nightly as one operation: the warehouse lock and the ``runs`` table.

* :func:`warehouse_lock`: one writer at a time per warehouse. ``semfin`` takes it for
  every stage that writes (ingest, flatten, train, impute, lineage, nightly); a second
  writer exits at once with :class:`WarehouseLocked` (exit code 6) and a message naming
  the holder. A lock whose holder died (its process is gone from this host, or it has
  not refreshed the lock for ``stale_after`` seconds) is taken over.
* :class:`RunLog`: each stage of a nightly appends its row to ``runs`` when it ends
  (status, times, input and output table versions, counts, error). A run that failed or
  was killed is resumed by the next nightly of the same source: stages that succeeded
  are skipped, the others run again under the same run id with the next attempt number.

Implementation details:
    The lock is a file, ``<warehouse>/_semfin.lock``, created with ``O_EXCL`` (atomic on
    local and network file systems). A stale lock is first renamed away (one taker wins
    the rename) and then created anew. On object stores (``s3a://``, ``abfss://``) there
    is no atomic create: there the lock is not taken, a warning says so, and the
    scheduler must not start two nightlies at once (Delta's conflict detection still
    refuses a second writer's conflicting commit, with exit code 5).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pyspark.sql import functions as F

from semfin_spark.delta import DeltaStore, table_versions
from semfin_spark.redaction import redact
from semfin_spark.schemas import RUNS, TABLES
from semfin_spark.settings import local_path

log = logging.getLogger(__name__)

LOCK_FILE = "_semfin.lock"


class WarehouseLocked(RuntimeError):
    """Another live SemFin writer holds the warehouse."""


@dataclass
class WarehouseLock:
    """A held lock; :meth:`refresh` says "still alive", :meth:`release` lets go."""

    path: str | None  # None: not taken (remote warehouse)
    owner: dict[str, Any]

    def refresh(self) -> None:
        if self.path is not None:
            self.owner["refreshed_at"] = time.time()
            _write_owner(self.path, self.owner, replace=True)

    def release(self) -> None:
        if self.path is None:
            return
        try:
            if _read_owner(self.path).get("token") == self.owner["token"]:
                os.unlink(self.path)
        except FileNotFoundError:
            pass


def acquire_lock(warehouse: str, operation: str, *, stale_after: float = 6 * 3600) -> WarehouseLock:
    """Take the warehouse's write lock for ``operation``.

    Args:
        warehouse: the warehouse root.
        operation: what takes it (``semfin nightly``), shown to whoever finds it taken.
        stale_after: seconds without a refresh after which a holder is presumed dead
            (for holders on other hosts, whose process cannot be checked).

    Raises:
        WarehouseLocked: a live holder has it; the message says who, where and since when.
    """
    owner = {"operation": operation, "host": socket.gethostname(), "pid": os.getpid(),
             "started_at": time.time(), "refreshed_at": time.time(), "token": uuid.uuid4().hex}
    root = local_path(warehouse)
    if root is None:
        log.warning("warehouse %s is on an object store: no lock is taken; never start two "
                    "writers at once there", redact(warehouse))
        return WarehouseLock(None, owner)
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, LOCK_FILE)
    for _ in range(3):
        try:
            _write_owner(path, owner, replace=False)
            return WarehouseLock(path, owner)
        except FileExistsError:
            pass
        holder = _read_owner(path)
        if holder and not _is_dead(holder, stale_after):
            started = dt.datetime.fromtimestamp(holder.get("started_at", 0), dt.timezone.utc)
            raise WarehouseLocked(
                f"warehouse {warehouse} is locked by {holder.get('operation', '?')} (pid "
                f"{holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                f"{started:%Y-%m-%d %H:%M:%S} UTC). Wait for it to finish; if that process is "
                f"gone, the lock is taken over automatically (after {stale_after / 3600:g} h "
                f"from another host), or delete {path}.")
        try:  # dead or unreadable: move it aside; of two takers, one rename wins
            os.replace(path, f"{path}.stale-{owner['token']}")
            log.warning("took over the lock of a dead run: %s", holder)
            os.unlink(f"{path}.stale-{owner['token']}")
        except FileNotFoundError:
            pass
    raise WarehouseLocked(f"could not take the lock {path}: other writers keep taking it")


@contextmanager
def warehouse_lock(warehouse: str, operation: str, *, stale_after: float = 6 * 3600,
                   ) -> Iterator[WarehouseLock]:
    """:func:`acquire_lock` as a context manager that always releases."""
    lock = acquire_lock(warehouse, operation, stale_after=stale_after)
    stop = threading.Event()

    def keep_alive() -> None:  # holders on other hosts judge liveness by the refresh time
        while not stop.wait(min(60.0, stale_after / 10)):
            try:
                lock.refresh()
            except OSError as exc:
                log.warning("could not refresh the warehouse lock: %s", exc)

    refresher = threading.Thread(target=keep_alive, name="semfin-lock", daemon=True)
    refresher.start()
    try:
        yield lock
    finally:
        stop.set()
        refresher.join()
        lock.release()


def _write_owner(path: str, owner: dict[str, Any], *, replace: bool) -> None:
    text = json.dumps(owner).encode()
    if replace:
        tmp = f"{path}.{owner['token']}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(text)


def _read_owner(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            value = json.loads(fh.read() or b"{}")
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _is_dead(holder: dict[str, Any], stale_after: float) -> bool:
    if not holder:
        return True  # unreadable: a writer killed while writing the lock file
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False
    return time.time() - float(holder.get("refreshed_at", 0)) > stale_after


# ------------------------------------------------------------------ the runs table

class RunLog:
    """The rows of one nightly run in ``runs``; a resumed run continues the last one.

    Examples:
        >>> log = RunLog.start(store, "synthetic:100")          # doctest: +SKIP
        >>> log.done("ingest")                                   # doctest: +SKIP
        False
        >>> with log.stage("ingest") as counts:                  # doctest: +SKIP
        ...     counts.update(written=100)
    """

    def __init__(self, store: DeltaStore, run_id: str, source: str, attempt: int,
                 succeeded: set[str]) -> None:
        self.store, self.run_id, self.source = store, run_id, source
        self.attempt, self.succeeded = attempt, succeeded

    @classmethod
    def start(cls, store: DeltaStore, source: str) -> "RunLog":
        """A new run, or the resumption of the last one if it did not finish and had the
        same source."""
        if store.exists(RUNS):
            last = (store.read(RUNS).orderBy(F.col("started_at").desc(), F.col("attempt").desc())
                    .limit(1).collect())
            if last and last[0]["source"] == source:
                run_id = last[0]["run_id"]
                rows = store.read(RUNS).where(F.col("run_id") == run_id).collect()
                if not any(r["stage"] == "nightly" and r["status"] == "succeeded" for r in rows):
                    succeeded = {r["stage"] for r in rows if r["status"] == "succeeded"}
                    attempt = max(r["attempt"] for r in rows) + 1
                    return cls(store, run_id, source, attempt, succeeded)
        return cls(store, str(uuid.uuid4()), source, 1, set())

    @property
    def resumed(self) -> bool:
        return self.attempt > 1

    def done(self, stage: str) -> bool:
        """Whether an earlier attempt of this run finished ``stage``."""
        return stage in self.succeeded

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        """Run a stage and append its row: ``succeeded`` with the counts the body puts in
        the yielded dict, or ``failed`` with the error (then re-raised)."""
        started = dt.datetime.now(dt.timezone.utc)
        before = table_versions(self.store, TABLES)
        counts: dict[str, Any] = {}
        try:
            yield counts
        except BaseException as exc:
            if isinstance(exc, Exception):  # a KeyboardInterrupt/kill leaves no row
                self._append(name, "failed", started, before, counts,
                             redact(f"{type(exc).__name__}: {exc}")[:4000])
            raise
        self._append(name, "succeeded", started, before, counts, None)
        self.succeeded.add(name)

    def _append(self, stage: str, status: str, started: dt.datetime, before: dict[str, Any],
                counts: dict[str, Any], error: str | None) -> None:
        after = table_versions(self.store, TABLES)
        row = (self.run_id, stage, self.attempt, self.source, status, started,
               dt.datetime.now(dt.timezone.utc), json.dumps(before), json.dumps(after),
               redact(json.dumps(counts, default=str)), error)
        frame = self.store.spark.createDataFrame([row], RUNS.schema)
        self.store.append(RUNS, frame, operation="RUNS", metadata={"run_id": self.run_id})


def stage_runner(log: RunLog, progress: Callable[[str], None]) -> Callable[..., Any]:
    """``run(name, body)``: skip ``name`` if this run already finished it, else run
    ``body()`` (which returns the stage's counts) inside :meth:`RunLog.stage`."""
    def run(name: str, body: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if log.done(name):
            progress(f"nightly: {name} already done by attempt {log.attempt - 1} of run "
                     f"{log.run_id}; skipped")
            return None
        with log.stage(name) as counts:
            counts.update(body())
        return counts
    return run
