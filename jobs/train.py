"""spark-submit entry point: ``spark-submit jobs/train.py ...`` = ``semfin train ...``."""

import sys

from semfin_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="train"))
