"""Accuracy and speed of tokenomy.tokens.count_tokens against the real cl100k_base encoder.

Optional script (reads /work/shared; needs `pip install bpe-openai`, which bundles cl100k_base):
    python benchmarks/tokens_accuracy.py [--n 2000]
Prints the ratio approx/real over real prompts (RouteLLM MMLU/GSM8K and AlpacaEval
instructions), its spread, and the counting speed of both side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from tokenomy.tokens import count_tokens  # noqa: E402

DATA = Path("/work/shared/data/routing")


def load_texts(n: int) -> list[str]:
    texts: list[str] = []
    with open(DATA / "alpacaeval_per_instruction.jsonl") as f:
        texts += [json.loads(line)["instruction"] for line in f]
    with open(DATA / "routellm_mmlu_gsm8k.jsonl") as f:
        for i, line in enumerate(f):
            if i % 7 == 0:
                texts.append(json.loads(line)["prompt"])
    return texts[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    import bpe_openai

    enc = bpe_openai.get_encoding("cl100k_base")
    texts = load_texts(args.n)
    real = [len(enc.encode(t)) for t in texts]
    approx = [count_tokens(t) for t in texts]
    ratios = [a / r for a, r in zip(approx, real) if r >= 20]
    words = sum(len(t.split()) for t in texts)
    print(f"texts={len(texts)} real_tokens={sum(real)} approx_tokens={sum(approx)} "
          f"total_ratio={sum(approx) / sum(real):.3f}")
    q = statistics.quantiles(ratios, n=20)
    print(f"per-text ratio approx/real: median={statistics.median(ratios):.3f} "
          f"p5={q[0]:.3f} p95={q[-1]:.3f}")
    print(f"words/token: real={words / sum(real):.3f} approx={words / sum(approx):.3f}")
    blob = "\n".join(texts)
    for name, fn in (("real cl100k (bpe-openai)", lambda: len(enc.encode(blob))),
                     ("tokenomy.count_tokens", lambda: count_tokens(blob))):
        t0 = time.perf_counter()
        for _ in range(5):
            fn()
        dt = (time.perf_counter() - t0) / 5
        print(f"{name}: {len(blob) / dt / 1e6:.1f} MB/s ({dt * 1e3:.1f} ms for {len(blob)} chars)")


if __name__ == "__main__":
    main()
