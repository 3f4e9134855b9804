"""Regenerate the trimmed routing samples in this folder from ../shared/data/routing.

Not a test: run by hand from the repo root (`.venv/bin/python tests/routing/data/make_sample.py`).
Provenance is in README.md next to this file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenomy.routing.quality.data import ALPACAEVAL_EXCLUDED, convert_alpacaeval, convert_routellm, write_rows

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2].parent / "shared" / "data" / "routing"


def main() -> None:
    rng = random.Random(0)
    rl = convert_routellm(SHARED / "routellm_mmlu_gsm8k.jsonl")
    mmlu = [r for r in rl if r.source == "mmlu" and len(r.prompt) <= 1500]
    gsm = [r for r in rl if r.source == "gsm8k"]
    ae = [r for r in convert_alpacaeval(SHARED / "alpacaeval_per_instruction.jsonl") if len(r.prompt) <= 1500]
    rows = rng.sample(mmlu, 400) + rng.sample(gsm, 300) + rng.sample(ae, 300)
    write_rows(rows, HERE / "routing_sample.jsonl")

    # prompts x models matrix (AE1 only) for the multi-model router tests
    src = [json.loads(line) for line in (SHARED / "alpacaeval_per_instruction.jsonl").open()]
    src = [o for o in src if len(o["instruction"]) <= 1500]
    with (HERE / "alpacaeval_matrix_sample.jsonl").open("w") as fh:
        for o in rng.sample(src, 200):
            ae1 = {m: v for m, v in sorted(o["ae1_win_vs_davinci003"].items()) if m not in ALPACAEVAL_EXCLUDED}
            fh.write(json.dumps({"instruction": o["instruction"], "dataset": o["dataset"],
                                 "ae1_win_vs_davinci003": ae1}) + "\n")


if __name__ == "__main__":
    main()
