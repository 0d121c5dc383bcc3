#!/usr/bin/env bash
# Build the wheel spark-submit ships to the executors, once per version of the sources, and
# print its path:
#
#   scripts/build_wheel.sh        -> dist/<sources hash>/semfin_spark-0.1.0-py3-none-any.whl
#
# Each version of semfin_spark/, conf/ and setup.py gets its own folder, and a built wheel
# is never written over: a job reads its --py-files wheel for as long as it runs (Python's
# zip importer reopens the file for every module it loads), so a wheel rebuilt in place
# under a running nightly (a code update, then any other submit) failed that nightly at its
# next import with "bad local file header". The five newest builds are kept.
#
# Environment:
#   SEMFIN_PYTHON  the Python that builds it (default: this checkout's .venv/bin/python)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${SEMFIN_PYTHON:-$ROOT/.venv/bin/python}"
HASH="$(cd "$ROOT" && find semfin_spark conf setup.py -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
  | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)"
BUILD="$ROOT/dist/$HASH"
WHEEL="$BUILD/semfin_spark-0.1.0-py3-none-any.whl"
mkdir -p "$ROOT/dist"
(
  # Two submits at once from one checkout would otherwise build over each other.
  flock 9
  if [ ! -f "$WHEEL" ]; then
    rm -rf "$ROOT/build" "$BUILD.partial"
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$BUILD.partial" "$ROOT" >&2
    mv "$BUILD.partial" "$BUILD"
    find "$ROOT/dist" -mindepth 1 -maxdepth 1 -type d ! -name '*.partial' -printf '%T@ %p\n' \
      | sort -rn | tail -n +6 | cut -d' ' -f2- | xargs -r rm -rf
  fi
) 9>"$ROOT/dist/.build.lock"
echo "$WHEEL"
