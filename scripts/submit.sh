#!/usr/bin/env bash
# Submit one stage's job to a Spark cluster with everything it needs:
#
#   scripts/submit.sh MASTER_URL STAGE [STAGE OPTIONS]
#   scripts/submit.sh spark://host:7077 nightly --warehouse /shared/wh --source synthetic:2000,seed=1
#
# It sets up .venv and the jar cache when needed (scripts/setup_env.sh), builds the wheel,
# prints the spark-submit line on stderr, then runs it: the Delta Lake (and GraphFrames,
# when cached) jars with --jars, the project as a wheel with --py-files, conf/ inside the
# wheel, Delta's SQL extension, and the executors' Python.
#
# Environment:
#   SEMFIN_EXECUTOR_PYTHON  the Python the executors run (default: this checkout's
#                           .venv/bin/python, right when the workers share this file system;
#                           on YARN/Kubernetes ship a packed environment, see the README)
#   SEMFIN_SUBMIT_ARGS      more spark-submit options, e.g. "--executor-memory 4g"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$#" -lt 2 ]; then
  echo "usage: scripts/submit.sh MASTER_URL STAGE [STAGE OPTIONS]" >&2
  exit 2
fi
MASTER="$1"; STAGE="$2"; shift 2
JOB="$ROOT/jobs/$STAGE.py"
if [ ! -f "$JOB" ]; then
  echo "submit: no job for stage '$STAGE' (jobs/: $(cd "$ROOT/jobs" && ls *.py | sed 's/\.py$//' | tr '\n' ' '))" >&2
  exit 2
fi
source "$ROOT/scripts/setup_env.sh" >&2
PY="$ROOT/.venv/bin/python"

# The wheel the executors import SemFin from: one per version of the sources, never
# rebuilt under a running job (scripts/build_wheel.sh).
WHEEL="$(bash "$ROOT/scripts/build_wheel.sh")"
JARS="$("$PY" -c "from semfin_spark.jars import cached_jars; print(','.join(map(str, cached_jars())))")"
EXECUTOR_PY="${SEMFIN_EXECUTOR_PYTHON:-$PY}"
# A master on this machine: bind the driver to loopback, as the embedded default does.
case "$MASTER" in
  local*|spark://127.*|spark://localhost*) export SPARK_LOCAL_IP="${SPARK_LOCAL_IP:-127.0.0.1}" ;;
esac

CMD=("$ROOT/.venv/bin/spark-submit" --master "$MASTER" --name "semfin $STAGE"
  --jars "$JARS"
  --py-files "$WHEEL"
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
  --conf "spark.pyspark.python=$EXECUTOR_PY"
  --conf "spark.pyspark.driver.python=$PY")
# shellcheck disable=SC2206 # word splitting of the extra options is the point
CMD+=(${SEMFIN_SUBMIT_ARGS:-} "$JOB" "$@")
# The command as run, with secrets given as settings (--conf ...secret.key=...) masked.
"$PY" -c 'import sys; from semfin_spark.redaction import redact; print("[submit]", redact(" ".join(sys.argv[1:])), file=sys.stderr)' "${CMD[@]}"
exec "${CMD[@]}"
