"""The SparkSession factory, for ``jobs/`` and the ``semfin`` command only.

Library functions take a session as an argument; only entry points build one, here, so
``semfin <stage>`` and ``spark-submit jobs/<stage>.py`` get the same session.

Two situations, told apart by who started the JVM:

* **Embedded** (``semfin ...``, ``python jobs/x.py``, the tests): this process starts the
  JVM. The master is ``settings.spark.master`` (``local[*]``), Spark binds to 127.0.0.1,
  Python workers are the running interpreter, ``conf/spark-defaults.conf`` applies, and the
  Delta Lake (and GraphFrames, when cached) jars come from the set-up's cache
  (:mod:`semfin_spark.jars`).
* **Under spark-submit**: spark-submit started the JVM with the command line's and the
  cluster's settings. They all win: the defaults file only fills keys nobody set, and
  the embedded-only keys (master, driver address and memory, jars) are never touched.
  Delta Lake's SQL extension is switched on when its classes are in the JVM
  (``--packages``/``--jars``) and nobody set the extensions.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pyspark import SparkConf, SparkContext, StorageLevel
from pyspark.sql import DataFrame, SparkSession

from semfin_spark.jars import DELTA_SQL_CONF, cached_jars
from semfin_spark.settings import Settings, local_path

log = logging.getLogger(__name__)

EMBEDDED_ONLY = frozenset({
    "spark.master", "spark.driver.host", "spark.driver.bindAddress", "spark.driver.memory",
    "spark.jars", "spark.jars.packages",
})
"""Defaults that only make sense for a JVM this process starts: on a cluster, a driver
bound to 127.0.0.1 is unreachable, and memory and jars are fixed once the JVM runs."""


def read_spark_defaults(path: Path) -> dict[str, str]:
    """Parse a ``spark-defaults.conf`` file: ``key  value`` lines, ``#`` comments.

    Examples:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.conf"
        >>> _ = p.write_text("# c\\nspark.a  1\\nspark.b=x y\\n")
        >>> read_spark_defaults(p)
        {'spark.a': '1', 'spark.b': 'x y'}
    """
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=") if "=" in line.split()[0] else line.partition(" ")
        out[key.strip()] = value.strip()
    return out


def under_spark_submit() -> bool:
    """True when spark-submit (not this process) started the JVM this process talks to."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(settings: Settings, *, app_name: str | None = None,
                  extra_conf: dict[str, str] | None = None) -> SparkSession:
    """Build (or join) the SparkSession for a stage.

    Args:
        settings: the loaded settings; ``spark.master`` and the defaults file come from it.
        app_name: shown in Spark's UI; defaults to ``settings.spark.app_name``. A name
            given to spark-submit (``--name``) wins.
        extra_conf: settings that win over the defaults file (never over spark-submit).

    Returns:
        The session, with Delta Lake's SQL on and its checkpoint folder in the warehouse.

    Raises:
        semfin_spark.jars.JarsError: embedded, and the set-up has not fetched the Delta jars.
    """
    # Executors must run the interpreter that has the package and its dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    defaults = read_spark_defaults(settings.conf_file(settings.spark.defaults_file))
    defaults.update(extra_conf or {})
    if under_spark_submit():
        conf = _submitted_conf(defaults)
    else:
        conf = _embedded_conf(settings, defaults)
    if not conf.contains("spark.app.name"):
        conf.setAppName(app_name or settings.spark.app_name)

    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _set_checkpoint_dir(spark, settings.warehouse)
    return spark


def _embedded_conf(settings: Settings, defaults: dict[str, str]) -> SparkConf:
    # The embedded JVM binds to loopback, never to whatever the host name resolves to.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    conf = SparkConf(loadDefaults=False)
    conf.setMaster(settings.spark.master)
    for key, value in defaults.items():
        conf.set(key, value)
    jars = [str(p) for p in cached_jars()]
    given = [j for j in defaults.get("spark.jars", "").split(",") if j]
    conf.set("spark.jars", ",".join(given + jars))
    for key, value in DELTA_SQL_CONF.items():
        conf.set(key, value)
    return conf


def _submitted_conf(defaults: dict[str, str]) -> SparkConf:
    # Connect to spark-submit's JVM first: only then does SparkConf() load what the command
    # line and the cluster set (before it, SparkConf is an empty dict and every contains()
    # is False, so the defaults would win over spark-submit).
    SparkContext._ensure_initialized()  # noqa: SLF001 - the documented way to reach the gateway
    conf = SparkConf()
    for key, value in defaults.items():
        if key not in EMBEDDED_ONLY and not conf.contains(key):
            conf.set(key, value)
    if not conf.contains("spark.sql.extensions") and _jvm_has("org.apache.spark.sql.delta.DeltaLog"):
        for key, value in DELTA_SQL_CONF.items():
            conf.set(key, value)
    return conf


def _jvm_has(class_name: str) -> bool:
    jvm = SparkContext._jvm  # noqa: SLF001
    try:
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName(class_name, False, loader)
        return True
    except Exception:  # noqa: BLE001 - a probe: missing class or no JVM both mean "no"
        return False


def _set_checkpoint_dir(spark: SparkSession, warehouse: str) -> None:
    """Checkpoints (iterative graph algorithms) go to ``<warehouse>/_checkpoints``.

    A warehouse that cannot take them (read-only, for analysts' queries) leaves the folder
    unset: the graph seam then uses local checkpoints.
    """
    if not warehouse:
        return
    try:
        local = local_path(warehouse)
        if local is not None:
            checkpoints = Path(local).resolve() / "_checkpoints"
            checkpoints.mkdir(parents=True, exist_ok=True)
            spark.sparkContext.setCheckpointDir(str(checkpoints))
        else:
            spark.sparkContext.setCheckpointDir(f"{warehouse.rstrip('/')}/_checkpoints")
    except Exception as exc:  # noqa: BLE001 - read-only or unreachable: run without
        log.warning("no checkpoint folder in the warehouse (%s); using local checkpoints", exc)


def checkpoint_dir(spark: SparkSession) -> str | None:
    """The session's checkpoint folder (:func:`_set_checkpoint_dir`), None without one."""
    try:
        return spark.sparkContext.getCheckpointDir()
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        return None


def hadoop_path(spark: SparkSession, path: str) -> tuple[Any, Any]:
    """Hadoop's file system of ``path`` (local, HDFS, S3, ...) and the path, through the
    JVM: for listings on the driver that need no Spark job."""
    jvm = spark.sparkContext._jvm  # noqa: SLF001
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), hpath  # noqa: SLF001


def write_text(path: str, text: str, spark: SparkSession | None = None) -> None:
    """Write a small text file (a report) whole, where the warehouse is.

    A local path (or ``file:`` URI) is written beside and renamed over, so a reader never
    sees half a file; any other location (``s3a://``, ``abfss://``, ``hdfs://``) through
    the Hadoop file system Spark has for it (an object store's put is whole too), which
    needs ``spark``.

    Raises:
        ValueError: a remote ``path`` and no ``spark``.
        OSError, Py4JJavaError: the file cannot be written.
    """
    local = local_path(path)
    if local is not None:
        folder = os.path.dirname(os.path.abspath(local))
        os.makedirs(folder, exist_ok=True)
        with open(local + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(local + ".tmp", local)
        return
    if spark is None:
        raise ValueError(f"writing {path} needs a Spark session (not a local path)")
    fs, hpath = hadoop_path(spark, path)
    out = fs.create(hpath, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()


def read_text(path: str, spark: SparkSession | None = None) -> str | None:
    """The text of a file :func:`write_text` wrote, or None when there is none (or, for a
    remote ``path``, no ``spark`` to reach it with)."""
    local = local_path(path)
    if local is not None:
        try:
            with open(local, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
    if spark is None:
        return None
    fs, hpath = hadoop_path(spark, path)
    if not fs.exists(hpath):
        return None
    stream = fs.open(hpath)
    try:
        return spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")  # noqa: SLF001
    finally:
        stream.close()


def release_checkpoints(spark: SparkSession) -> None:
    """Delete this application's checkpoint folder (``<warehouse>/_checkpoints/<uuid>``,
    one per Spark application) when its stage ends: the checkpoints only serve plans of
    the stage that wrote them. Spark does not delete them itself (its cleaner only does
    with ``spark.cleaner.referenceTracking.cleanCheckpoints``, and never the folder), so
    every run left a folder, and on a cluster its files. A failure to delete is logged:
    :func:`clear_stale_checkpoints` gets the folder later."""
    folder = checkpoint_dir(spark)
    if not folder:
        return
    try:
        fs, path = hadoop_path(spark, folder)
        if fs.exists(path):
            fs.delete(path, True)
    except Exception as exc:  # noqa: BLE001 - tidying: the stage's work is done
        log.warning("could not delete the checkpoint folder %s: %s", folder, exc)


def clear_stale_checkpoints(spark: SparkSession, older_than_hours: float) -> int:
    """Delete the folders of ``<warehouse>/_checkpoints`` left by other applications (a
    killed or failed run, which :func:`release_checkpoints` did not reach) when nothing in
    them changed for ``older_than_hours``; this application's folder is kept. A folder in
    use by a running job is younger than that.

    Returns:
        The folders deleted.
    """
    current = checkpoint_dir(spark)
    if not current:
        return 0
    fs, mine = hadoop_path(spark, current)
    root = mine.getParent()
    if not fs.exists(root):
        return 0
    limit = time.time() * 1000 - older_than_hours * 3_600_000
    removed = 0
    for status in fs.listStatus(root):
        path = status.getPath()
        if not status.isDirectory() or path.getName() == mine.getName():
            continue
        newest = status.getModificationTime()
        files = fs.listFiles(path, True)
        while files.hasNext():
            newest = max(newest, files.next().getModificationTime())
        if newest < limit:
            fs.delete(path, True)
            removed += 1
    return removed


def _reliable_checkpoints(spark: SparkSession) -> bool:
    """Reliable checkpoints on a cluster with a checkpoint folder; local ones otherwise.

    In local mode the driver is the only executor: a local checkpoint is as safe as a
    reliable one, and costs one job instead of two (count, then write the files).
    """
    try:
        local = spark.sparkContext.master.startswith("local")
    except Exception:  # noqa: BLE001 - Spark Connect: no SparkContext to ask
        return False
    return not local and bool(checkpoint_dir(spark))


def cut_lineage(df: DataFrame) -> DataFrame:
    """Materialise ``df`` now and drop its lineage: iterative plans stay small, and frames
    built on a deep plan are not planned with it again. A reliable checkpoint in the
    warehouse on a cluster (a lost executor loses nothing), a local one in local mode."""
    if not _reliable_checkpoints(df.sparkSession):
        return df.localCheckpoint(eager=True)
    # A reliable checkpoint computes its input twice (count, then write) unless cached.
    df.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        return df.checkpoint(eager=True)
    finally:
        df.unpersist()
