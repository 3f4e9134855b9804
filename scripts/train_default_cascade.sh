#!/usr/bin/env bash
# Rebuild the shipped default cascade verifier (`cascade-default`) from the shared reference data.
#   scripts/train_default_cascade.sh [SHARED_CASCADE_DIR]
# Reads ../shared/data/routing/cascade/{alpacaeval,gsm8k}_outputs.jsonl (not needed at run time),
# trains on the answers of 8 weak models on AlpacaEval + Mixtral on GSM8K (seed 0), and writes
#   src/tokenomy/routing/cascade/artifacts/cascade_default.npz            (the artifact, ~4 KB)
#   src/tokenomy/routing/cascade/artifacts/cascade_default.npz.report.json (5-fold CV, leave-one-source-out, unseen models)
# Deterministic: the same data gives the same artifact. Takes a few minutes on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${1:-../shared/data/routing/cascade}"
OUT=src/tokenomy/routing/cascade/artifacts/cascade_default.npz
mkdir -p "$(dirname "$OUT")"
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python -m tokenomy.routing.cascade --shared "$SHARED" --out "$OUT" --seed 0
