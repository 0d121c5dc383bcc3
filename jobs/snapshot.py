"""spark-submit entry point: ``spark-submit jobs/snapshot.py ...`` = ``semfin snapshot ...``."""

import sys

from semfin_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="snapshot"))
