#!/usr/bin/env bash
# Build the router artifacts shipped in the package from the shared routing data.
#
#   scripts/train_default_router.sh            # artifacts only (~1-2 min)
#   scripts/train_default_router.sh --report   # plus 5-fold CV and leave-one-source-out reports
#                                              # (also written to artifacts/default.npz.report.json)
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
# weighted equally: a shared head fitted on every row, plus a maths word problem head fitted on the
# rows of that format, behind a gate that reads the prompt's form (the route train default:
# --format-experts --expert-formats math_word_problem --expert-gated). (--balance-sources, equal weight per source,
# scored better in-source on GSM8K and AlpacaEval but worse on MMLU and worse leave-one-source-out,
# so it is not the default. --single-head is the previous default's layout.)
LEX=(route train --router lexical --data "$TMP/routellm.jsonl" --data "$TMP/alpacaeval.jsonl"
     --out "$OUT/default.npz" --seed 0 --c 1.0 --format-experts "${REPORT[@]}")
if [[ "${1:-}" == "--report" ]]; then
  "$TK" "${LEX[@]}" --json | "${PYTHON:-.venv/bin/python}" -m json.tool --indent 1 > "$OUT/default.npz.report.json"
  "${PYTHON:-.venv/bin/python}" - "$OUT/default.npz.report.json" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
for part, title in (("cv", "5-fold CV"), ("loso", "leave-one-source-out")):
    print(title + " (APGR [95% CI] vs length on the same rows):")
    for s, v in rep[part]["by_source"].items():
        r, b = v["router"], v["length"]
        print(f"  {s:<11} n={r['n']:<6} {r['apgr']:.3f} [{r['apgr_ci95'][0]:.3f}, {r['apgr_ci95'][1]:.3f}]  "
              f"length {b['apgr']:.3f} [{b['apgr_ci95'][0]:.3f}, {b['apgr_ci95'][1]:.3f}]  "
              f"diff {v['apgr_minus_length']:+.3f}")
PY
else
  "$TK" "${LEX[@]}"
fi
# multi-model: matrix factorisation over AlpacaEval's prompts x 51 models
"$TK" route train --router mf --data "$SHARED/alpacaeval_per_instruction.jsonl" \
      --out "$OUT/mf_alpacaeval.npz" --seed 0 "${REPORT[@]:0:2}"
ls -l "$OUT"
