"""spark-submit entry point: ``spark-submit jobs/report.py ...`` = ``semfin report ...``."""

import sys

from semfin_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="report"))
