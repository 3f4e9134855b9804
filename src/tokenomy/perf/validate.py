"""Print the performance model's error against a measured profile.

    python -m tokenomy.perf.validate [profile] [--json]

Median and worst absolute relative error of: every GEMM (gemm.csv, per dtype), attention
(attn.csv, decode and prefill), whole steps (step.csv, decode and prefill) and step power.
"""

from __future__ import annotations

import json
import sys

from .calibration import load_calibration
from .fit import validation_errors


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv
    names = [a for a in argv if not a.startswith("--")]
    name = names[0] if names else "h100"
    errs = validation_errors(load_calibration(name), name)
    if as_json:
        print(json.dumps({"profile": name, "errors": errs}))
        return
    print(f"profile {name}: absolute relative error of predictions vs measurements")
    print(f"{'what':<24}{'rows':>6}{'median':>10}{'worst':>10}")
    for key, e in errs.items():
        print(f"{key:<24}{e['n']:>6}{e['median']:>10.1%}{e['worst']:>10.1%}")


if __name__ == "__main__":
    main()
