"""SemFin on Spark: installable package, `semfin` console command, pinned dependencies."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent

INSTALL_REQUIRES = [
    # Spark and Delta Lake go together: Delta Lake 4.4.0 is built against Spark 4.2.0, and
    # its jars (semfin_spark/jars.py) are fetched by the set-up with the same version.
    "pyspark==4.2.0",
    "delta-spark==4.4.0",
    "pyarrow==25.0.1",
    "pandas==2.3.3",
    "numpy==2.4.6",
    "orjson==3.13.0",
    "PyYAML==6.0.3",
    "huggingface_hub==2.4.0",
    "mlflow==3.17.2",
    # CycloneDX 1.6 schemas and validator for the AI Bills of Materials (semfin aibom).
    "cyclonedx-python-lib[json-validation]==11.6.0",
    # semfin sql on one machine: DuckDB over the Delta tables opened by delta-rs (no JVM).
    "duckdb==1.4.4",
    "deltalake==1.6.6",
]

EXTRAS_REQUIRE = {
    # DuckDB's Delta extension as a wheel, since DuckDB cannot download it here: the tests
    # hold every table readable by it (delta_scan), as by delta-rs.
    "test": ["pytest==9.0.3", "pytest-xdist==3.8.0",
             "duckdb-ext-delta==1.4.4.20260205; platform_machine == 'x86_64' and sys_platform == 'linux'"],
    # The single-process Python peer that scripts/bench.py compares the stages against
    # (scripts/bench_peer.py): scikit-learn classifiers, networkx graphs.
    "bench": ["scikit-learn==1.9.1", "networkx==3.6.1"],
}


class BuildWithConf(build_py):
    """Ship conf/ (settings, licence rules, spark-defaults.conf, the named queries in
    conf/queries/) inside the wheel as semfin_spark/conf."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "semfin_spark" / "conf"
        shutil.copytree(HERE / "conf", target, dirs_exist_ok=True)


setup(
    name="semfin-spark",
    version="0.1.0",
    description="SemFin: impute missing Hugging Face model metadata from config.json fingerprints, on Spark",
    long_description=(HERE / "README.md").read_text(encoding="utf-8") if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["semfin_spark", "semfin_spark.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    entry_points={"console_scripts": ["semfin=semfin_spark.cli:main"]},
    cmdclass={"build_py": BuildWithConf},
)
