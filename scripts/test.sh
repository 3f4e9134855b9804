#!/usr/bin/env bash
# The whole test suite (make test). Fails when any test fails; "no tests ran" (pytest exit 5) fails too.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-artifacts
# The real inference engine (llama-cpp-python) for the engine-in-the-loop tests: built once, cached.
if [ -f scripts/engine.sh ]; then
  bash scripts/engine.sh || { echo "engine setup failed" >&2; exit 1; }
fi
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi
exit "$rc"
