"""Candidate prompt-only routers compared the way the default is chosen (run by train_default_router.sh --report).

    python scripts/router_candidates.py --data ROWS.jsonl [--data ...] --out REPORT.json [--embed] [--embed-cache E.npy]

For every candidate: in-source 5-fold CV and leave-one-source-out APGR per source with bootstrap CIs (next
to the length baseline on the same rows), and APGR with CIs on the two hand-written sets in
tests/routing/data (obvious-difficulty, transfer user prompts), which are never trained on. Candidates:
- `length`: 1 - exp(-chars / 1000) (the baseline; shown beside each row as well);
- `words`: the task router's backbone alone (log words; task scale 0);
- `task@S`: the task router (kinds + demand, weights pulled towards the hand-set prior, per-source
  intercepts) with its task part scaled by S against the backbone, for every S on the selection grid;
  the default's S is chosen on that grid by LOSO (`train.select_task_scale`);
- with --embed (the optional `embed` extra): `minilm` (all-MiniLM-L6-v2 + logistic regression as
  `route train --router embed` fits it) and `task+minilm@B` (the default's logit plus B x a MiniLM head
  fitted with per-source intercepts, so it cannot learn which source a prompt is from).
Reads only the files it is given (optional script: the full data sits in ../shared).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from tokenomy.routing.quality.baselines import LengthRouter
from tokenomy.routing.quality.data import Row, read_rows
from tokenomy.routing.quality.metrics import evaluate_scores
from tokenomy.routing.quality.train import (TASK_SCALE_GRID, cross_validate, leave_one_source_out, select_task_scale,
                                            source_balanced_weights, task_trainer)

HERE = Path(__file__).resolve().parents[1] / "tests" / "routing" / "data"
SETS = {"obvious_difficulty": HERE / "obvious_difficulty.jsonl", "transfer_user_prompts": HERE / "transfer_user_prompts.jsonl"}


def hand_sets() -> dict[str, list[Row]]:
    return {k: read_rows(p) for k, p in SETS.items()}


def set_report(score_fn, sets: dict[str, list[Row]], n_boot: int) -> dict:
    out = {}
    for name, rows in sets.items():
        s = np.asarray(score_fn([r.prompt for r in rows]), float)
        out[name] = evaluate_scores(s, [r.weak for r in rows], [r.strong for r in rows], n_boot=n_boot).to_json()
    return out


class _Scored:
    """Wraps a batch scoring function as a router for train.cross_validate / leave_one_source_out."""

    def __init__(self, fn):
        self.scores = fn


def _sig(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))


def fit_head(x: np.ndarray, rows: list[Row], l2: float) -> np.ndarray:
    """Logistic head on features x with soft targets and one intercept per source (dropped at scoring),
    source-balanced, L2 `l2` per mean row."""
    from scipy.optimize import minimize

    t = np.array([(1.0 + r.strong - r.weak) / 2.0 for r in rows])
    names = sorted({r.source for r in rows})
    si = np.array([names.index(r.source) for r in rows])
    sw = source_balanced_weights(rows)
    sw = sw / sw.sum()
    d, k = x.shape[1], len(names)

    def loss(th):
        w, a = th[:d], th[d:]
        z = x @ w + a[si]
        r = sw * (_sig(z) - t)
        return (float(sw @ (np.logaddexp(0, z) - t * z)) + 0.5 * l2 * float(w @ w),
                np.r_[x.T @ r + l2 * w, np.bincount(si, weights=r, minlength=k)])

    return minimize(loss, np.zeros(d + k), jac=True, method="L-BFGS-B", options={"maxiter": 1000}).x[:d]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--bootstrap", type=int, default=300)
    ap.add_argument("--embed", action="store_true", help="also the MiniLM candidates (needs the embed extra)")
    ap.add_argument("--embed-cache", type=Path, help=".npz of embeddings to reuse/write (keyed by prompt hashes)")
    a = ap.parse_args(argv)
    rows = [r for p in a.data for r in read_rows(p)]
    sets = hand_sets()
    nb = a.bootstrap
    report: dict = {"n": len(rows), "bootstrap": nb, "candidates": {}}

    sel = select_task_scale(rows)
    report["task_scale_selection"] = sel
    print(f"task scale by LOSO ({sel['rule']}): {sel['chosen']}", file=sys.stderr)
    for t in sel["grid"]:
        print(f"  {t['task_scale']:.1f}  " + "  ".join(f"{s} {v:+.4f}" for s, v in t["minus_length"].items()),
              file=sys.stderr)

    cache: dict = {}

    def add(name: str, trainer, final_scores) -> None:
        rep = {"cv": cross_validate(rows, trainer, folds=5, n_boot=nb)["by_source"],
               "loso": leave_one_source_out(rows, trainer, n_boot=nb)["by_source"],
               "hand_sets": set_report(final_scores, sets, nb)}
        report["candidates"][name] = rep
        print(f"{name}: " + "  ".join(f"{s} cv {rep['cv'][s]['router']['apgr']:.3f} loso {rep['loso'][s]['router']['apgr']:.3f}"
                                      for s in rep["loso"]) + "  " +
              "  ".join(f"{k} {v['apgr']:.3f}" for k, v in rep["hand_sets"].items()), file=sys.stderr)

    length = LengthRouter()
    add("length", lambda rs: _Scored(lambda ps: np.array([length.strong_win_rate(p) for p in ps])),
        lambda ps: [length.strong_win_rate(p) for p in ps])
    chosen = sel["chosen"] if sel["chosen"] is not None else 0.0
    scales = sorted({0.0, 0.5, chosen, 1.0})
    finals = {}
    for s in scales:
        tr = task_trainer(task_scale=s, cache=cache)
        final = tr(rows)
        finals[s] = final
        add("words" if s == 0 else f"task@{s:g}", tr, final.scores)

    if a.embed:
        from tokenomy.routing.quality.embed import embed_texts, train_embed

        prompts = list(dict.fromkeys([r.prompt for r in rows] + [r.prompt for rs in sets.values() for r in rs]))
        key = [hashlib.sha1(p.encode()).hexdigest() for p in prompts]
        emb = None
        if a.embed_cache and a.embed_cache.is_file():
            z = np.load(a.embed_cache)
            if list(z["keys"]) == key:
                emb = z["emb"]
        if emb is None:
            emb = embed_texts(prompts, cache=False)
            if a.embed_cache:
                np.savez(a.embed_cache, keys=np.array(key), emb=emb)
        vec = dict(zip(prompts, emb))

        def e_of(ps):
            return np.array([vec[p] for p in ps])

        def minilm_trainer(rs):
            from sklearn.linear_model import LogisticRegression

            x = e_of([r.prompt for r in rs])
            t = np.array([(1.0 + r.strong - r.weak) / 2.0 for r in rs])
            m = LogisticRegression(C=1.0, max_iter=2000).fit(np.vstack([x, x]), np.r_[np.ones(len(t)), np.zeros(len(t))],
                                                             sample_weight=np.r_[t, 1 - t])
            return _Scored(lambda ps: m.decision_function(e_of(ps)))

        final_m = minilm_trainer(rows)
        add("minilm", minilm_trainer, final_m.scores)
        del train_embed   # (the same fit as `route train --router embed`, on cached vectors)
        for beta in (0.5, 1.0):
            def blend_trainer(rs, beta=beta):
                task = task_trainer(task_scale=chosen, cache=cache)(rs)
                v = fit_head(e_of([r.prompt for r in rs]), list(rs), 1e-3)
                return _Scored(lambda ps: np.array([task.logit(p) for p in ps]) + beta * (e_of(ps) @ v))
            final_b = blend_trainer(rows)
            add(f"task@{chosen:g}+minilm@{beta:g}", blend_trainer, final_b.scores)

    a.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
