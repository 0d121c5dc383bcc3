"""The SparkSession factory, for ``jobs/`` and the ``semfin`` command only.

Library functions take a session as an argument; only entry points build one, here, so
``semfin <stage>`` and ``spark-submit jobs/<stage>.py`` get the same session.

Embedded (no master chosen): ``local[*]`` bound to 127.0.0.1, Python workers are the
running interpreter, shuffle partitions sized for one machine (``conf/spark-defaults.conf``).
Under ``spark-submit`` on a cluster, everything the cluster or the command line set wins:
the defaults file only fills gaps.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark import SparkConf
from pyspark.sql import SparkSession

from semfin_spark.settings import Settings

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


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


def build_session(settings: Settings, *, app_name: str | None = None,
                  extra_conf: dict[str, str] | None = None) -> SparkSession:
    """Build (or join) the SparkSession for a stage.

    Args:
        settings: the loaded settings; ``spark.master`` and the defaults file come from it.
        app_name: shown in Spark's UI; defaults to ``settings.spark.app_name``.
        extra_conf: settings that win over the defaults file (not over spark-submit).

    Returns:
        The session, with its checkpoint folder inside the warehouse.
    """
    # Executors must run the interpreter that has the package and its dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # The embedded JVM binds to loopback, never to whatever the host name resolves to.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    conf = SparkConf()
    defaults = read_spark_defaults(settings.conf_file(settings.spark.defaults_file))
    defaults.update(extra_conf or {})
    if not conf.contains("spark.master"):
        conf.setMaster(settings.spark.master)
    for key, value in defaults.items():
        if not conf.contains(key):
            conf.set(key, value)
    packages = conf.get("spark.jars.packages", "") + conf.get("spark.jars", "")
    if "delta" in packages and not conf.contains("spark.sql.extensions"):
        conf.set("spark.sql.extensions", _DELTA_EXTENSION)
        conf.set("spark.sql.catalog.spark_catalog", _DELTA_CATALOG)
    conf.setAppName(app_name or settings.spark.app_name)

    spark = SparkSession.builder.config(conf=conf).getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    if settings.warehouse and "://" not in settings.warehouse:
        checkpoints = Path(settings.warehouse).resolve() / "_checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)
        spark.sparkContext.setCheckpointDir(str(checkpoints))
    elif settings.warehouse:
        spark.sparkContext.setCheckpointDir(f"{settings.warehouse.rstrip('/')}/_checkpoints")
    return spark
