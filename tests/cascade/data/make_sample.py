"""Regenerate the trimmed cascade samples in this folder from ../shared/data/routing/cascade.

Not a test: run by hand from the repo root (`.venv/bin/python tests/cascade/data/make_sample.py`).
Provenance is in README.md next to this file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from tokenomy.routing.cascade.data import convert_alpacaeval_outputs, convert_gsm8k_outputs, write_rows

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2].parent / "shared" / "data" / "routing" / "cascade"


def main() -> None:
    rng = random.Random(0)
    ae = [r for r in convert_alpacaeval_outputs(SHARED / "alpacaeval_outputs.jsonl")
          if len(r.prompt) <= 1500 and len(r.weak_output) <= 2500]
    gsm = convert_gsm8k_outputs(SHARED / "gsm8k_outputs.jsonl")
    write_rows(rng.sample(ae, 150) + rng.sample(gsm, 150), HERE / "cascade_sample.jsonl")

    # a few rows in the shared source formats, for the loader tests
    raw_ae = [json.loads(line) for line in (SHARED / "alpacaeval_outputs.jsonl").open()]
    insts = []
    for o in raw_ae:
        if o["instruction"] not in insts and len(o["instruction"]) < 200:
            insts.append(o["instruction"])
        if len(insts) == 3:
            break
    with (HERE / "raw_alpacaeval_outputs.jsonl").open("w") as fh:
        for o in raw_ae:
            if o["instruction"] in insts:
                fh.write(json.dumps(o, ensure_ascii=False) + "\n")
    with (HERE / "raw_gsm8k_outputs.jsonl").open("w") as fh:
        for line in (SHARED / "gsm8k_outputs.jsonl").open():
            o = json.loads(line)
            if o["idx"] in (0, 1, 2, 3, 4, 5) or (o["idx"] < 60 and not o["contaminated"] and o["idx"] % 10 == 0):
                fh.write(json.dumps(o, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
