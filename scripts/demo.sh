#!/usr/bin/env bash
# Set up (when needed) and run the nightly job on the embedded default (local[*]),
# on a generated Hub. Extra arguments go to `semfin nightly`, e.g. --source synthetic:200000.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
if [ "$#" -eq 0 ]; then set -- --source "synthetic:20000,seed=0"; fi
exec "$ROOT/.venv/bin/semfin" nightly "$@"
