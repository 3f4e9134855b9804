#!/usr/bin/env bash
# The whole test suite. Fails when any test fails; pytest's "no tests ran" (exit 5) is a failure too.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-artifacts
.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi
exit "$rc"
