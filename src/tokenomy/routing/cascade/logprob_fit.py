"""Fit cascade-logprobs' weights on YOUR labelled rows (the shipped ones are an unfitted prior).

    rows = read_logprob_rows("rows.jsonl")   # cascade rows + "weak_logprobs"
    v, report = fit_logprob_verifier(rows, folds=5, seed=0)
    save_logprob_verifier(v, "verifier.npz", report)   # cascade.verifier: verifier.npz

A row is a cascade row (`prompt`, `weak_output`, `weak`, `strong`, ...) plus `weak_logprobs`:
the weak answer's OpenAI `choices[0].logprobs` object (chat or legacy completions), or the stats
the gateway records in an event's `extra.route.logprobs` (`{"n", "mean", "min", "entropy"}`).
Rows without usable logprobs are left out of the fit.

The model keeps the prior's reference points and scales and its shape (three clipped standardised
terms, shrunk by n / (n + 8)) and fits their three weights (signs fixed: a likelier answer, a
likelier least-likely token and a lower entropy never lower the score) plus a bias for answers that
carry logprobs, on top of the text verifier's logit as a fixed offset: soft cross-entropy against
the weak answer's quality, L2 on the weights. The report compares, on held-out folds (and leaving
each source out when there are several), the text score alone with text + logprobs (APGR of the
escalation order, RouteLLM's metric).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokenomy.errors import TokenomyError
from tokenomy.routing.cascade.data import CascadeRow, row_from_obj
from tokenomy.routing.cascade.logprobs import PRIOR, LogprobPrior, LogprobStats, LogprobVerifier, logprob_stats
from tokenomy.routing.quality.data import read_jsonl_rows

KIND = "cascade-logprobs"
MIN_ROWS = 20


def stats_from_json(obj: Any) -> LogprobStats | None:
    """The gateway's recorded stats ({n, mean, min, entropy[, low_share]}), validated; None if not."""
    if not isinstance(obj, dict):
        return None

    def num(x, lo: float, hi: float) -> float | None:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            return None
        return min(hi, max(lo, float(x)))

    n, mean, mn = obj.get("n"), num(obj.get("mean"), -100.0, 0.0), num(obj.get("min"), -100.0, 0.0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or mean is None or mn is None:
        return None
    ent = num(obj.get("entropy"), 0.0, 100.0)
    low = num(obj.get("low_share"), 0.0, 1.0)
    return LogprobStats(n, mean, min(mn, mean), ent, 0.0 if low is None else low)


def row_logprobs(obj: Any) -> LogprobStats | None:
    """`weak_logprobs` of a row: gateway stats or a raw OpenAI logprobs object."""
    if isinstance(obj, dict) and "n" in obj and "mean" in obj:
        return stats_from_json(obj)
    return logprob_stats(obj)


def read_logprob_rows(path: Path | str) -> list[tuple[CascadeRow, LogprobStats | None]]:
    """(cascade row, its weak answer's logprob stats or None) per line of a JSONL file."""
    def parse(obj: Any, where: str) -> tuple[CascadeRow, LogprobStats | None]:
        if not isinstance(obj, dict):
            raise TokenomyError(f"{where}: not a JSON object")
        return row_from_obj(obj, where), row_logprobs(obj.get("weak_logprobs"))

    return read_jsonl_rows(path, parse)


def _terms(s: LogprobStats, prior: LogprobPrior) -> np.ndarray:
    """The prior's three signed, clipped, shrunk terms (the fitted weights multiply these)."""
    def c(x: float, ref: float, scale: float) -> float:
        return max(-prior.clip, min(prior.clip, (x - ref) / scale))

    shrink = s.n_tokens / (s.n_tokens + prior.shrink_tokens)
    ent = 0.0 if s.mean_entropy_nats is None else -c(s.mean_entropy_nats, prior.ref_entropy, prior.scale_entropy)
    return shrink * np.array([c(s.mean_logprob, prior.ref_mean, prior.scale_mean),
                              c(s.min_logprob, prior.ref_min, prior.scale_min), ent])


def fit_prior(offsets: np.ndarray, terms: np.ndarray, quality: np.ndarray, *, l2: float = 1.0,
              base: LogprobPrior = PRIOR) -> LogprobPrior:
    """Weights >= 0 of the three terms and a free bias, the text logit a fixed offset."""
    from scipy.optimize import minimize

    q = np.clip(np.asarray(quality, float), 0.0, 1.0)

    def f(wb: np.ndarray):
        w, b = wb[:3], wb[3]
        z = offsets + terms @ w + b
        loss = float(np.sum(np.logaddexp(0.0, z) - q * z)) + 0.5 * l2 * float(w @ w)
        g = 0.5 * (1.0 + np.tanh(0.5 * z)) - q
        return loss, np.r_[terms.T @ g + l2 * w, g.sum()]

    res = minimize(f, np.array([base.w_mean, base.w_min, base.w_entropy, 0.0]), jac=True, method="L-BFGS-B",
                   bounds=[(0.0, None)] * 3 + [(None, None)], options={"maxiter": 500})
    w = res.x
    return dataclasses.replace(base, w_mean=float(w[0]), w_min=float(w[1]), w_entropy=float(w[2]), bias=float(w[3]))


def _apgr(verifier_scores: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> float | None:
    from tokenomy.routing.quality.metrics import evaluate_scores

    if len(weak) < 2 or strong.mean() <= weak.mean():
        return None
    return round(float(evaluate_scores(1.0 - verifier_scores, weak, strong).apgr), 4)


def _compare(train_idx, test_idx, offsets, terms, weak, strong, l2) -> tuple[np.ndarray, np.ndarray, LogprobPrior]:
    prior = fit_prior(offsets[train_idx], terms[train_idx], weak[train_idx], l2=l2)
    w = np.array([prior.w_mean, prior.w_min, prior.w_entropy])
    z_text = offsets[test_idx]
    z_lp = z_text + terms[test_idx] @ w + prior.bias
    return 1.0 / (1.0 + np.exp(-z_text)), 1.0 / (1.0 + np.exp(-z_lp)), prior


def fit_logprob_verifier(rows: Sequence[tuple[CascadeRow, LogprobStats | None]], *, text=None, folds: int = 5,
                         loso: bool = True, seed: int = 0, l2: float = 1.0) -> tuple[LogprobVerifier, dict]:
    """(the fitted verifier, its report). `text`: the text verifier (default cascade-default)."""
    from tokenomy.routing.cascade.registry import load_verifier

    text = text if text is not None else load_verifier("cascade-default")
    used = [(r, s) for r, s in rows if s is not None]
    if len(used) < MIN_ROWS:
        raise TokenomyError(f"need at least {MIN_ROWS} rows with usable weak_logprobs (got {len(used)} of {len(rows)})")
    tv = LogprobVerifier(text)
    offsets = np.array([tv._text_logit(r.prompt, r.weak_output) for r, _ in used])
    terms = np.array([_terms(s, PRIOR) for _, s in used])
    weak = np.array([r.weak for r, _ in used])
    strong = np.array([r.strong for r, _ in used])
    src = np.array([r.source or "all" for r, _ in used])
    report: dict = {"n_rows": len(rows), "n_with_logprobs": len(used), "l2": l2, "seed": seed,
                    "prior_apgr": _apgr(np.array([tv.score_response(r.prompt, r.weak_output, s) for r, s in used]),
                                        weak, strong)}
    if folds >= 2 and len(used) >= 2 * folds:
        order = np.random.default_rng(seed).permutation(len(used))
        s_text, s_lp = np.empty(len(used)), np.empty(len(used))
        for k in range(folds):
            test = order[k::folds]
            train = np.setdiff1d(order, test)
            a, b, _ = _compare(train, test, offsets, terms, weak, strong, l2)
            s_text[test], s_lp[test] = a, b
        report["cv"] = {"folds": folds, "text_apgr": _apgr(s_text, weak, strong),
                        "text_logprobs_apgr": _apgr(s_lp, weak, strong)}
    sources = sorted(set(src))
    if loso and len(sources) > 1:
        report["leave_one_source_out"] = {}
        for s in sources:
            test, train = np.flatnonzero(src == s), np.flatnonzero(src != s)
            if len(train) < MIN_ROWS:
                continue
            a, b, _ = _compare(train, test, offsets, terms, weak, strong, l2)
            report["leave_one_source_out"][s] = {"n": int(len(test)), "text_apgr": _apgr(a, weak[test], strong[test]),
                                                 "text_logprobs_apgr": _apgr(b, weak[test], strong[test])}
    prior = fit_prior(offsets, terms, weak, l2=l2)
    report["weights"] = {"w_mean": round(prior.w_mean, 4), "w_min": round(prior.w_min, 4),
                         "w_entropy": round(prior.w_entropy, 4), "bias": round(prior.bias, 4)}
    return LogprobVerifier(text, prior), report


def save_logprob_verifier(v: LogprobVerifier, path: Path | str, report: dict | None = None,
                          text_name: str = "cascade-default") -> Path:
    path = Path(path)
    header = {"kind": KIND, "text": text_name, "prior": dataclasses.asdict(v.prior), "meta": {"report": report or {}}}
    with path.open("wb") as fh:  # a file handle keeps numpy from appending ".npz"
        np.savez_compressed(fh, header=np.array(json.dumps(header)))
    return path


def from_header(header: dict) -> LogprobVerifier:
    from tokenomy.routing.cascade.registry import load_verifier

    fields = {f.name for f in dataclasses.fields(LogprobPrior)}
    raw = header.get("prior")
    if not isinstance(raw, dict) or set(raw) - fields:
        raise ValueError("not a cascade-logprobs prior")
    vals = {k: float(v) for k, v in raw.items()}
    if not all(math.isfinite(x) for x in vals.values()):
        raise ValueError("non-finite prior weights")
    text = header.get("text", "cascade-default")
    if text not in ("cascade-default", "cascade"):
        raise ValueError(f"unknown text verifier {text!r}")
    v = LogprobVerifier(load_verifier(text), LogprobPrior(**vals))
    v.meta = header.get("meta") or {}
    return v


def format_report(rep: dict) -> str:
    w = rep["weights"]
    lines = [f"cascade-logprobs fit: {rep['n_with_logprobs']} of {rep['n_rows']} rows with logprobs; weights "
             f"mean {w['w_mean']}, min {w['w_min']}, entropy {w['w_entropy']}, bias {w['bias']}; "
             f"unfitted prior APGR {rep['prior_apgr']}"]
    if "cv" in rep:
        cv = rep["cv"]
        lines.append(f"  {cv['folds']}-fold CV APGR: text {cv['text_apgr']}  text+logprobs {cv['text_logprobs_apgr']}")
    for s, v in rep.get("leave_one_source_out", {}).items():
        lines.append(f"  leave out {s:<12} n={v['n']:<5} text {v['text_apgr']}  text+logprobs {v['text_logprobs_apgr']}")
    return "\n".join(lines)
