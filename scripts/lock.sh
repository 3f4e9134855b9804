#!/usr/bin/env bash
# Regenerate requirements.lock (runtime) and requirements-dev.lock (tests) from pyproject.toml,
# resolving in throw-away venvs so the locks hold exactly what the project asks for.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/run" && "$tmp/run/bin/pip" install -q "pip==26.3"
"$tmp/run/bin/pip" install -q .
"$tmp/run/bin/pip" freeze --exclude tokenomy | grep -v '^-e' | sort > requirements.lock
python3 -m venv "$tmp/dev" && "$tmp/dev/bin/pip" install -q "pip==26.3"
"$tmp/dev/bin/pip" install -q ".[dev]"
"$tmp/dev/bin/pip" freeze --exclude tokenomy | grep -v '^-e' | sort > "$tmp/dev.txt"
comm -13 requirements.lock "$tmp/dev.txt" > requirements-dev.lock
echo "requirements.lock: $(wc -l < requirements.lock) pins; requirements-dev.lock: $(wc -l < requirements-dev.lock) pins"
