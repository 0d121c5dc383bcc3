"""A Spark standalone cluster on 127.0.0.1 for the tests: one master, N workers.

Started from the pyspark installation (``spark-class``), each daemon in its own process
group, stopped whatever happens (:meth:`StandaloneCluster.stop` is idempotent and is
also registered with ``atexit``).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import short_jvm_env


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return json.loads(response.read().decode("utf-8"))


@dataclass
class StandaloneCluster:
    """A master and ``workers`` workers, each with ``cores`` cores and ``memory``."""

    folder: Path
    workers: int = 2
    cores: int = 1
    memory: str = "3g"
    port: int = 0
    webui_port: int = 0
    worker_ui_ports: list[int] = field(default_factory=list)
    _procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    @property
    def master_json(self) -> dict:
        return get_json(f"http://127.0.0.1:{self.webui_port}/json/")

    def _spawn(self, name: str, args: list[str]) -> None:
        spark_class = Path(sys.executable).parent / "spark-class"
        # The executors a worker starts inherit its environment, C1 included.
        env = short_jvm_env(SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1",
                            PYSPARK_PYTHON=sys.executable)
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self._procs.append(subprocess.Popen([str(spark_class), *args], stdout=log,
                                            stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True))

    def _bound_port(self, name: str, service: str, deadline: float) -> int:
        """The port ``service`` bound, read from the daemon's log once it says so.

        Every daemon is started on port 0 and tells which port it got: a port picked here
        beforehand can be taken by another process of the suite before the daemon binds it,
        and the daemon then moves to the next port while we ask the old one."""
        pattern = re.compile(rf"Successfully started service '{service}' on port (\d+)")
        log = self.folder / f"{name}.log"
        while time.time() < deadline:
            found = pattern.search(log.read_text(errors="replace")) if log.exists() else None
            if found:
                return int(found.group(1))
            if any(p.poll() is not None for p in self._procs):
                break
            time.sleep(0.2)
        raise self._failed(f"{name} never reported its {service} port")

    def _failed(self, why: str) -> RuntimeError:
        logs = "\n".join((self.folder / f).read_text(errors="replace")[-1500:]
                         for f in os.listdir(self.folder) if f.endswith(".log"))
        self.stop()
        return RuntimeError(f"the standalone cluster did not come up ({why}):\n{logs}")

    def start(self, timeout: float = 90) -> "StandaloneCluster":
        self.folder.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        deadline = time.time() + timeout
        self._spawn("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", "0", "--webui-port", "0"])
        self.port = self._bound_port("master", "sparkMaster", deadline)
        self.webui_port = self._bound_port("master", "MasterUI", deadline)
        for i in range(self.workers):
            work = self.folder / f"worker-{i}"
            work.mkdir(exist_ok=True)
            self._spawn(f"worker-{i}", [
                "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                "--cores", str(self.cores), "--memory", self.memory, "--webui-port", "0",
                "--work-dir", str(work), self.url])
        self.worker_ui_ports = [self._bound_port(f"worker-{i}", "WorkerUI", deadline)
                                for i in range(self.workers)]
        while time.time() < deadline:
            try:
                alive = [w for w in self.master_json.get("workers", []) if w.get("state") == "ALIVE"]
                if len(alive) == self.workers:
                    return self
            except (OSError, ValueError):  # not up yet, or a page that is not the JSON yet
                pass
            if any(p.poll() is not None for p in self._procs):
                break
            time.sleep(1)
        raise self._failed("the workers did not all register")

    def executors_by_worker(self, app_id: str) -> dict[str, int]:
        """Per worker (its UI port), how many executors the application ran there."""
        out = {}
        for ui in self.worker_ui_ports:
            state = get_json(f"http://127.0.0.1:{ui}/json/")
            runs = state.get("executors", []) + state.get("finishedexecutors", [])
            out[str(ui)] = sum(1 for e in runs if e.get("appid") == app_id)
        return out

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self._procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()
