#!/usr/bin/env bash
# Set up (when needed) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
ensure_chromium
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
