"""How fast is StepModel.step_seconds? (the fleet simulator calls it millions of times)

    .venv/bin/python benchmarks/perf_model_speed.py

Prints calls/second of step_seconds for dense, MoE and TP models next to a trivial baseline
function with the same keyword signature, measured in the same run, and the ratio.
"""

from __future__ import annotations

import random
import time

from tokenomy.catalog import load_catalog
from tokenomy.perf import make_step_model


def baseline(*, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0) -> float:
    return 1e-3 + 1e-6 * decode_seqs + 1e-9 * kv_tokens + 1e-7 * prefill_tokens


def rate(fn, args, seconds: float = 1.0) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        for a in args:
            fn(**a)
        n += len(args)
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0)


def main() -> None:
    cat = load_catalog()
    rng = random.Random(0)
    args = []
    for _ in range(1000):
        b = rng.randint(1, 256)
        args.append(dict(decode_seqs=b, kv_tokens=b * rng.randint(100, 4000),
                         prefill_tokens=rng.choice([0, 0, 0, 512, 2048])))
    base = rate(baseline, args)
    print(f"{'function':<44}{'calls/s':>12}{'us/call':>10}{'vs baseline':>13}")
    print(f"{'baseline (3 multiply-adds)':<44}{base:>12,.0f}{1e6 / base:>10.2f}{1.0:>12.1f}x")
    for mid, acc, n in (("llama-3-8b", "h100", 1), ("llama-3-70b", "h100", 4), ("mixtral-8x7b", "h100", 2),
                        ("deepseek-v3", "mi300x", 8)):
        sm = make_step_model(cat.model(mid), cat.accelerator(acc), count=n)
        r = rate(sm.step_seconds, args)
        label = f"step_seconds {mid} on {n}x {acc}"
        print(f"{label:<44}{r:>12,.0f}{1e6 / r:>10.2f}{base / r:>12.1f}x slower")


if __name__ == "__main__":
    main()
