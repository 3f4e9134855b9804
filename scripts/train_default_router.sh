#!/usr/bin/env bash
# Build the router artifacts shipped in the package from the shared routing data.
#
#   scripts/train_default_router.sh            # the default (task) router only (~1 min)
#   scripts/train_default_router.sh --report   # plus in-source 5-fold CV, subject-grouped CV and
#                                              # leave-one-source-out reports with bootstrap CIs
#                                              # (written to artifacts/default.npz.report.json)
#   scripts/train_default_router.sh --all      # also the lexical and multi-model artifacts
#
# Reads ../shared/data/routing (override with TOKENOMY_ROUTING_DATA); writes
# src/tokenomy/routing/quality/artifacts/default.npz (and lexical.npz, mf_alpacaeval.npz with --all).
# Deterministic: reruns give the same weights on the same data and library versions.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${TOKENOMY_ROUTING_DATA:-../shared/data/routing}"
OUT=src/tokenomy/routing/quality/artifacts
TK="${TOKENOMY:-.venv/bin/tokenomy}"
PY="${PYTHON:-.venv/bin/python}"
REPORT=(--cv 0 --no-loso)
[[ "${1:-}" == "--report" ]] && REPORT=(--cv 5 --grouped-cv 5 --loso --bootstrap 300)
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT

"$TK" route data --source routellm --input "$SHARED/routellm_mmlu_gsm8k.jsonl" --out "$TMP/routellm.jsonl"
# AlpacaEval labels comparable with RouteLLM's correctness gap: per instruction, the mean AE1 score
# of 9 small models (<= 7B) vs 8 large ones (GPT-4 x3, Claude 2, 70B chat models, Mistral Medium, Yi-34B)
"$TK" route data --source alpacaeval-groups --input "$SHARED/alpacaeval_per_instruction.jsonl" \
      --out "$TMP/alpacaeval_groups.jsonl"
# default: the task router (task kind + demand features, numpy only), source-balanced, per-source
# intercepts, weights pulled towards the hand-set task-kind prior (taskrouter.PRIOR)
TASK=(route train --router task --data "$TMP/routellm.jsonl" --data "$TMP/alpacaeval_groups.jsonl"
      --out "$OUT/default.npz" "${REPORT[@]}")
if [[ "${1:-}" == "--report" ]]; then
  "$TK" "${TASK[@]}" --json > "$TMP/report.json"
  # the hand-written obvious-difficulty set (never trained on) next to length
  "$TK" route eval --data tests/routing/data/obvious_difficulty.jsonl --router default --bootstrap 300 --json \
      > "$TMP/obvious.json"
  "$TK" route eval --data tests/routing/data/obvious_difficulty.jsonl --router length --bootstrap 300 --json \
      > "$TMP/obvious_length.json"
  # the hand-written transfer set (user prompts, graded labels; never trained on)
  "$TK" route eval --data tests/routing/data/transfer_user_prompts.jsonl --router default --bootstrap 300 --json \
      > "$TMP/transfer.json"
  "$TK" route eval --data tests/routing/data/transfer_user_prompts.jsonl --router length --bootstrap 300 --json \
      > "$TMP/transfer_length.json"
  # every candidate (length, words, task at several scales; MiniLM and blends with REPORT_EMBED=1), CV + LOSO + hand sets
  "$PY" scripts/router_candidates.py --data "$TMP/routellm.jsonl" --data "$TMP/alpacaeval_groups.jsonl" \
      --out "$TMP/candidates.json" ${REPORT_EMBED:+--embed} ${EMBED_CACHE:+--embed-cache "$EMBED_CACHE"}
  "$PY" - "$TMP" "$OUT/default.npz.report.json" <<'PY'
import json, sys
tmp, out = sys.argv[1], sys.argv[2]
rep = json.load(open(f"{tmp}/report.json"))
rep["obvious_difficulty"] = {"router": json.load(open(f"{tmp}/obvious.json")),
                             "length": json.load(open(f"{tmp}/obvious_length.json"))}
rep["transfer_user_prompts"] = {"router": json.load(open(f"{tmp}/transfer.json")),
                                "length": json.load(open(f"{tmp}/transfer_length.json"))}
cand = json.load(open(f"{tmp}/candidates.json"))
rep["task_scale_selection"] = cand.pop("task_scale_selection")
rep["candidates"] = cand["candidates"]
json.dump(rep, open(out, "w"), indent=1)
for part, title in (("cv", "in-source 5-fold CV"), ("grouped_cv", "5-fold CV, whole subjects held out"),
                    ("loso", "leave-one-source-out")):
    print(title + " (APGR [95% CI] vs length on the same rows):")
    for s, v in rep[part]["by_source"].items():
        r, b = v["router"], v["length"]
        print(f"  {s:<11} n={r['n']:<6} {r['apgr']:.3f} [{r['apgr_ci95'][0]:.3f}, {r['apgr_ci95'][1]:.3f}]  "
              f"length {b['apgr']:.3f} [{b['apgr_ci95'][0]:.3f}, {b['apgr_ci95'][1]:.3f}]  "
              f"diff {v['apgr_minus_length']:+.3f}")
o = rep["obvious_difficulty"]
print(f"obvious-difficulty set (hand-written, n={o['router']['n']}): {o['router']['apgr']:.3f} "
      f"{o['router']['apgr_ci95']}  length {o['length']['apgr']:.3f}")
o = rep["transfer_user_prompts"]
print(f"transfer user prompts (hand-written, n={o['router']['n']}): {o['router']['apgr']:.3f} "
      f"{o['router']['apgr_ci95']}  length {o['length']['apgr']:.3f}")
print(f"task scale chosen by LOSO: {rep['task_scale_selection']['chosen']}")
PY
else
  "$TK" "${TASK[@]}"
fi
if [[ "${1:-}" == "--all" ]]; then
  "$TK" route data --source alpacaeval --input "$SHARED/alpacaeval_per_instruction.jsonl" \
        --weak llama-2-7b-chat-hf --strong gpt4 --out "$TMP/alpacaeval.jsonl"
  # lexical: the previous default (hashed n-grams; learned data-set identity, kept for comparison)
  "$TK" route train --router lexical --data "$TMP/routellm.jsonl" --data "$TMP/alpacaeval.jsonl" \
        --out "$OUT/lexical.npz" --seed 0 --c 1.0 --format-experts --cv 0 --no-loso
  # multi-model: matrix factorisation over AlpacaEval's prompts x 51 models
  "$TK" route train --router mf --data "$SHARED/alpacaeval_per_instruction.jsonl" \
        --out "$OUT/mf_alpacaeval.npz" --seed 0 --cv 0
fi
ls -l "$OUT"
