"""Latency of the learned cascade verifier on one core: p50/p99 per (prompt, answer).

Runs the shipped `cascade-default` verifier next to the trivial `answer-length` baseline in the
same process over the same pairs, and prints both and their ratio. Pairs come from the in-repo
sample (tests/cascade/data/cascade_sample.jsonl) plus long synthetic answers (8k and 32k chars)
to cover the capped-input path. Target (issue 10): p99 <= 5 ms.

    .venv/bin/python benchmarks/verifier_latency.py [--repeat 3] [--model PATH.npz] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _pin_one_core() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        except OSError:
            pass


def _pairs() -> list[tuple[str, str]]:
    from tokenomy.routing.cascade.data import read_rows

    rows = read_rows(ROOT / "tests" / "cascade" / "data" / "cascade_sample.jsonl")
    base = [(r.prompt, r.weak_output) for r in rows]
    long = [(p, (a + "\n") * (8000 // max(len(a), 1) + 1)) for p, a in base[0:300:30]]
    longer = [(p, (a + "\n") * (32000 // max(len(a), 1) + 1)) for p, a in base[5:300:60]]
    return base + long + longer


def measure(verifier, pairs: list[tuple[str, str]], repeat: int) -> dict:
    for p, a in pairs[:50]:                 # warm-up (imports, regex caches)
        verifier.score(p, a)
    times = []
    for _ in range(repeat):
        for p, a in pairs:
            t0 = time.perf_counter_ns()
            verifier.score(p, a)
            times.append(time.perf_counter_ns() - t0)
    ms = np.array(times) / 1e6
    return {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p99_ms": round(float(np.percentile(ms, 99)), 4), "max_ms": round(float(ms.max()), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model", default=None, help="verifier artifact (default: the shipped cascade-default)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    _pin_one_core()
    from tokenomy.routing.cascade import load_verifier
    from tokenomy.routing.cascade.registry import AnswerLengthVerifier

    pairs = _pairs()
    learned = load_verifier(a.model or "cascade-default")
    base = measure(AnswerLengthVerifier(), pairs, a.repeat)
    ours = measure(learned, pairs, a.repeat)
    base_again = measure(AnswerLengthVerifier(), pairs, a.repeat)  # baseline drift check (shared machine)
    out = {"pairs": len(pairs), "repeat": a.repeat, "answer_length_baseline": base, "learned": ours,
           "answer_length_baseline_again": base_again,
           "p50_ratio_vs_baseline": round(ours["p50_ms"] / max(base["p50_ms"], 1e-9), 1),
           "p99_ratio_vs_baseline": round(ours["p99_ms"] / max(base["p99_ms"], 1e-9), 1),
           "target_p99_ms": 5.0, "meets_target": ours["p99_ms"] <= 5.0}
    if a.json:
        print(json.dumps(out))
        return
    print(f"{'verifier':<26}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}   (n={ours['n']}, one core)")
    for name, r in (("answer-length (baseline)", base), ("cascade-default (learned)", ours),
                    ("answer-length (again)", base_again)):
        print(f"{name:<26}{r['p50_ms']:>10.4f}{r['p99_ms']:>10.4f}{r['max_ms']:>10.3f}")
    print(f"learned / baseline: p50 x{out['p50_ratio_vs_baseline']}, p99 x{out['p99_ratio_vs_baseline']}; "
          f"p99 target 5 ms: {'met' if out['meets_target'] else 'NOT met'}")


if __name__ == "__main__":
    main()
