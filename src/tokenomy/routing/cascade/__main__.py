"""`python -m tokenomy.routing.cascade --shared DIR --out FILE.npz`: train the default verifier
(used by scripts/train_default_cascade.sh)."""

from __future__ import annotations

from pathlib import Path

from tokenomy.routing.cascade.data import held_out_rows, shared_rows
from tokenomy.routing.cascade.features import IN_DOMAIN_SPEC, AnswerSpec
from tokenomy.routing.cascade.train import DEFAULT_C, train


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="train the learned cascade verifier on the shared cascade data")
    ap.add_argument("--shared", default="../shared/data/routing/cascade", help="dir with *_outputs.jsonl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--c", type=float, default=DEFAULT_C)
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--price-ratios", default="5,20,50", help="strong/weak cost per call for the cost tables")
    ap.add_argument("--in-domain", action="store_true",
                    help="use every feature and stronger n-grams (fits one source better, transfers worse)")
    a = ap.parse_args(argv)
    rows = shared_rows(a.shared, train_pool=True)
    spec = IN_DOMAIN_SPEC if a.in_domain else AnswerSpec()
    ratios = [float(x) for x in a.price_ratios.split(",") if x.strip()]
    out = train(rows, seed=a.seed, out=a.out, c=a.c, spec=spec, report=not a.no_report, price_ratios=ratios,
                held_out=held_out_rows(a.shared))
    rep_path = Path(str(out) + ".report.json")
    print(json.dumps({"out": str(out), "bytes": out.stat().st_size, "rows": len(rows),
                      "report": json.loads(rep_path.read_text()) if rep_path.exists() else None}))


if __name__ == "__main__":
    main()
