"""spark-submit entry point: ``spark-submit jobs/aibom.py ...`` = ``semfin aibom ...``."""

import sys

from semfin_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="aibom"))
