"""spark-submit entry point: ``spark-submit jobs/evaluate.py ...`` = ``semfin evaluate ...``."""

import sys

from semfin_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="evaluate"))
