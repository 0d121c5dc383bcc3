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
]

EXTRAS_REQUIRE = {
    # DuckDB with its Delta extension as a wheel, since DuckDB cannot download it here.
    # Readers outside Spark, which the tests hold every table to: delta-rs and DuckDB.
    "test": ["pytest==9.0.3", "deltalake==1.6.6", "duckdb==1.4.4",
             "duckdb-ext-delta==1.4.4.20260205; platform_machine == 'x86_64' and sys_platform == 'linux'"],
    # The single-process Python peer that scripts/bench.py compares the stages against
    # (scripts/bench_peer.py): scikit-learn classifiers, networkx graphs.
    "bench": ["scikit-learn==1.9.1", "networkx==3.6.1"],
}


class BuildWithConf(build_py):
    """Ship conf/*.yaml and spark-defaults.conf inside the wheel (semfin_spark/conf)."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "semfin_spark" / "conf"
        target.mkdir(parents=True, exist_ok=True)
        for src in (HERE / "conf").iterdir():
            if src.is_file():
                shutil.copy2(src, target / src.name)


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
