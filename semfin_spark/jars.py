"""The JVM packages SemFin runs on: pinned Maven coordinates, fetched once into a cache.

Delta Lake is required: every table is written with ``format("delta")``. GraphFrames is
optional: the graph seam uses it when its classes are in the JVM, and its own DataFrame
algorithms otherwise.

``python -m semfin_spark.jars`` (run by ``scripts/setup_env.sh``) downloads the jars with
Apache Ivy, the resolver Spark itself uses for ``--packages`` (its jar ships inside pyspark),
from Maven Central into :func:`cache_dir`. Later runs, CI and the embedded session read the
cache and never touch the network. A cluster gets the same coordinates with
``--packages`` (:func:`packages_argument`) or the cached files with ``--jars``.

The versions go together: Delta Lake 4.4.0 is built against Spark 4.2.0 (its POM's
``spark-sql_2.13`` dependency) and delta-spark 4.4.0 on PyPI declares
``pyspark>=4.0.1,<=4.2.0``; ``setup.py`` pins ``pyspark==4.2.0``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JvmPackage:
    """One Maven artifact, fetched without its dependencies (Spark provides those)."""

    group: str
    artifact: str
    version: str
    required: bool

    @property
    def coordinate(self) -> str:
        """``group:artifact:version``, as ``--packages`` takes it."""
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def file_name(self) -> str:
        return f"{self.group}__{self.artifact}-{self.version}.jar"


DELTA_VERSION = "4.4.0"
GRAPHFRAMES_VERSION = "0.12.2"

PACKAGES: tuple[JvmPackage, ...] = (
    JvmPackage("io.delta", "delta-spark_2.13", DELTA_VERSION, required=True),
    JvmPackage("io.delta", "delta-storage", DELTA_VERSION, required=True),
    JvmPackage("io.graphframes", "graphframes-spark4_2.13", GRAPHFRAMES_VERSION, required=False),
)
"""What the embedded session loads. delta-spark's other compile dependencies (Scala,
ANTLR, Jackson) are Spark's own; its Delta Kernel and Unity Catalog clients are not used
by ``format("delta")`` on paths, so they are left out, as they would clash with Spark's
Hadoop and Jackson."""

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
"""The two settings that turn Delta Lake's SQL on in a session."""


class JarsError(RuntimeError):
    """A required jar is neither in the cache nor fetchable."""


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the jars are kept: ``$SEMFIN_JARS_DIR``, else ``~/.cache/semfin/jars``.

    The cache sits outside the checkout, so every clone, the test suite and CI on one
    machine share a single download.
    """
    env = os.environ if environ is None else environ
    if env.get("SEMFIN_JARS_DIR"):
        return Path(env["SEMFIN_JARS_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "semfin" / "jars"


def cached_jars(directory: Path | None = None) -> list[Path]:
    """The cached jar of every package that has one, required packages first.

    Raises:
        JarsError: a required package is missing from the cache.
    """
    directory = directory or cache_dir()
    found = []
    for package in PACKAGES:
        path = directory / package.file_name
        if path.is_file():
            found.append(path)
        elif package.required:
            raise JarsError(
                f"{package.coordinate} is not in {directory}: run `python -m semfin_spark.jars` "
                "(scripts/setup_env.sh does) to fetch it from Maven Central")
    return found


def packages_argument(*, include_optional: bool = True) -> str:
    """The value of ``--packages`` / ``spark.jars.packages`` for a cluster."""
    return ",".join(p.coordinate for p in PACKAGES if p.required or include_optional)


def _ivy_jar() -> Path:
    import pyspark

    jars = sorted(glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "ivy-*.jar")))
    if not jars:
        raise JarsError("Apache Ivy is not in the pyspark installation (pyspark/jars/ivy-*.jar)")
    return Path(jars[-1])


def fetch(directory: Path | None = None, *, java: str = "java", log=print) -> list[Path]:
    """Download every package missing from the cache; return the cached jars.

    Args:
        directory: the cache (default :func:`cache_dir`).
        java: the ``java`` executable that runs Ivy.
        log: where one line per package goes.

    Returns:
        As :func:`cached_jars`.

    Raises:
        JarsError: a required package could not be fetched. An optional one (GraphFrames)
            that Maven Central does not serve is reported and skipped.
    """
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    ivy = _ivy_jar()
    for package in PACKAGES:
        target = directory / package.file_name
        if target.is_file():
            continue
        log(f"[jars] fetching {package.coordinate}")
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=directory))
        try:
            # conf "master": the artifact alone; its dependencies are Spark's own jars.
            proc = subprocess.run(
                [java, "-jar", str(ivy), "-dependency", package.group, package.artifact,
                 package.version, "-confs", "master", "-cache", str(directory / "ivy-cache"),
                 "-retrieve", f"{staging}/[artifact]-[revision](-[classifier]).[ext]"],
                capture_output=True, text=True)
            fetched = staging / f"{package.artifact}-{package.version}.jar"
            if proc.returncode == 0 and fetched.is_file():
                os.replace(fetched, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if not target.is_file():
            message = f"{package.coordinate} could not be fetched: " + _last_lines(proc.stdout + proc.stderr)
            if package.required:
                raise JarsError(message)
            log(f"[jars] optional, skipped: {message}")
    return cached_jars(directory)


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "no output"


def main() -> int:
    try:
        jars = fetch()
    except JarsError as exc:
        print(f"[jars] {exc}", file=sys.stderr)
        return 1
    for jar in jars:
        print(jar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
