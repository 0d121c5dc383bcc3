#!/usr/bin/env bash
# Prepare a fresh machine: Java 17 (apt, when missing) and the project in .venv/.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only adds what is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SEMFIN_PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ]; then
  echo "[setup] installing Java 17 (openjdk-17-jre-headless) with apt" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
# Headless Chromium, for the test that opens the nightly report as a person would
# (scripts/test.sh calls this; the demo does not need it).
ensure_chromium() {
  if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "[setup] installing Chromium (headless, for the report test) with apt" >&2
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  fi
}
if [ -z "${JAVA_HOME:-}" ]; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
  export JAVA_HOME
fi

STAMP="$ROOT/.venv/.semfin-installed"
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "[setup] creating .venv with $($PY --version)" >&2
  "$PY" -m venv "$ROOT/.venv"
fi
# Reinstall only when setup.py changed since the last install.
if [ ! -f "$STAMP" ] || [ "$ROOT/setup.py" -nt "$STAMP" ]; then
  echo "[setup] installing semfin-spark and its pinned dependencies into .venv" >&2
  "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip wheel >/dev/null
  "$ROOT/.venv/bin/python" -m pip install -q -e "$ROOT[test,bench]"
  touch "$STAMP"
fi
# The Delta Lake (and, where Maven Central serves it, GraphFrames) jars, fetched once into
# a cache shared by every checkout on this machine (~/.cache/semfin/jars, or SEMFIN_JARS_DIR).
if ! "$ROOT/.venv/bin/python" -c "from semfin_spark.jars import cached_jars; cached_jars()" 2>/dev/null; then
  echo "[setup] fetching the Delta Lake jars from Maven Central (once)" >&2
  "$ROOT/.venv/bin/python" -m semfin_spark.jars >/dev/null
fi
export PYSPARK_PYTHON="$ROOT/.venv/bin/python"
export PYSPARK_DRIVER_PYTHON="$ROOT/.venv/bin/python"
