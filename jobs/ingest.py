"""spark-submit entry point: ``spark-submit jobs/ingest.py --source ...`` = ``semfin ingest --source ...``."""

import sys

from semfin_spark.cli import main

if __name__ == "__main__":
    sys.exit(main(stage="ingest"))
