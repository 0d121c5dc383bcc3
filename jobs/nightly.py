"""spark-submit entry point: ``spark-submit jobs/nightly.py ...`` = ``semfin nightly ...``."""

import sys

from semfin_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="nightly"))
