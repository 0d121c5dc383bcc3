"""spark-submit entry point: ``spark-submit jobs/flatten.py ...`` = ``semfin flatten ...``."""

import sys

from semfin_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="flatten"))
