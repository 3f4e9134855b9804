#!/usr/bin/env bash
# Build the router artifacts shipped in the package from the shared routing data.
#
#   scripts/train_default_router.sh            # artifacts only (~1-2 min)
#   scripts/train_default_router.sh --report   # plus 5-fold CV and leave-one-source-out reports
#
# Reads ../shared/data/routing (override with TOKENOMY_ROUTING_DATA); writes
# src/tokenomy/routing/quality/artifacts/{default,mf_alpacaeval}.npz. Seeded: reruns give the
# same weights on the same data and library versions.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${TOKENOMY_ROUTING_DATA:-../shared/data/routing}"
OUT=src/tokenomy/routing/quality/artifacts
TK="${TOKENOMY:-.venv/bin/tokenomy}"
REPORT=(--cv 0 --no-loso)
[[ "${1:-}" == "--report" ]] && REPORT=(--cv 5 --loso --bootstrap 300)
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT

"$TK" route data --source routellm --input "$SHARED/routellm_mmlu_gsm8k.jsonl" --out "$TMP/routellm.jsonl"
"$TK" route data --source alpacaeval --input "$SHARED/alpacaeval_per_instruction.jsonl" \
      --weak llama-2-7b-chat-hf --strong gpt4 --out "$TMP/alpacaeval.jsonl"
# default: lexical router on MMLU + GSM8K (RouteLLM) + AlpacaEval (llama-2-7b-chat vs gpt4), rows
# weighted equally. (--balance-sources, equal weight per source, scored better in-source on GSM8K
# and AlpacaEval but worse on MMLU and worse leave-one-source-out, so it is not the default.)
"$TK" route train --router lexical --data "$TMP/routellm.jsonl" --data "$TMP/alpacaeval.jsonl" \
      --out "$OUT/default.npz" --seed 0 --c 1.0 "${REPORT[@]}"
# multi-model: matrix factorisation over AlpacaEval's prompts x 51 models
"$TK" route train --router mf --data "$SHARED/alpacaeval_per_instruction.jsonl" \
      --out "$OUT/mf_alpacaeval.npz" --seed 0 "${REPORT[@]:0:2}"
ls -l "$OUT"
