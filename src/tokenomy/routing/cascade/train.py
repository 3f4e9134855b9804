"""Training the learned verifier, with 5-fold CV and leave-one-source-out reports.

Every report evaluates out-of-fold scores per source (never pooled across sources) on the
source's reference pair (AlpacaEval: Llama-2-7b-chat -> GPT-4-1106; GSM8K: Mixtral -> GPT-4),
side by side with the prompt-only lexical router trained in the same folds on the same pair,
and the trivial `answer-length` verifier. Folds are grouped by prompt, so answers of several
weak models to one prompt never straddle train and test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from tokenomy.errors import TokenomyError
from tokenomy.routing.cascade.data import AE_DEFAULT_WEAK, GSM8K_WEAK, CascadeRow, as_rows
from tokenomy.routing.cascade.features import AnswerSpec, featurize_many
from tokenomy.routing.cascade.learned import LearnedVerifier, fit_features
from tokenomy.routing.cascade.registry import AnswerLengthVerifier
from tokenomy.routing.cascade.evaluate import cost_view
from tokenomy.routing.quality.metrics import curve, evaluate_scores

REFERENCE_WEAK = (AE_DEFAULT_WEAK, GSM8K_WEAK)
DEFAULT_C = 2.0  # inverse L2 strength, chosen by leave-one-source-out with the spec (features.AnswerSpec)


def _source_weights(rows: Sequence[CascadeRow]) -> np.ndarray:
    """Each source weighs the same in total, whatever its number of rows."""
    src = np.array([r.source for r in rows])
    w = np.empty(len(rows))
    for s in set(src):
        j = src == s
        w[j] = 1.0 / j.sum()
    return w * len(rows) / w.sum()


def _eval_mask(rows: Sequence[CascadeRow]) -> np.ndarray:
    """Per source: the reference-pair rows if present, else all rows of that source."""
    src = np.array([r.source for r in rows])
    ref = np.array([r.weak_model in REFERENCE_WEAK for r in rows])
    mask = np.zeros(len(rows), bool)
    for s in set(src):
        j = src == s
        mask |= j & ref if (j & ref).any() else j
    return mask


class _Features:
    """Featurize once; slice per fold."""

    def __init__(self, rows: Sequence[CascadeRow], spec: AnswerSpec):
        self.spec = spec
        self.x_sparse, self.x_dense = featurize_many([r.prompt for r in rows], [r.weak_output for r in rows], spec)
        self.q = np.array([r.weak for r in rows])
        self.w = _source_weights(rows)

    def fit(self, idx: np.ndarray, c: float, seed: int) -> LearnedVerifier:
        return fit_features(self.x_sparse[idx], self.x_dense[idx], self.q[idx], spec=self.spec, c=c, seed=seed,
                            sample_weight=self.w[idx])

    def scores(self, v: LearnedVerifier, idx: np.ndarray) -> np.ndarray:
        z = np.asarray(self.x_sparse[idx] @ v.weights).ravel() + self.x_dense[idx] @ v._wd + v.bias
        return 1.0 / (1.0 + np.exp(-z))


def _prompt_only(train: Sequence[CascadeRow], test: Sequence[CascadeRow], seed: int) -> np.ndarray:
    """The prompt-only gate to compare with: the default's kind (task router), fitted on the same
    training rows as the verifier (so leave-one-source-out holds for it too)."""
    from tokenomy.routing.quality.taskrouter import train_task_router

    r = train_task_router([x.prompt for x in train], [x.weak for x in train], [x.strong for x in train],
                          [x.source or "all" for x in train])
    return r.scores([x.prompt for x in test])


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _report(rows: Sequence[CascadeRow], escalate: np.ndarray, prompt_scores: np.ndarray | None,
            n_boot: int, seed: int, price_ratios: Sequence[float] = ()) -> dict:
    src = np.array([r.source or "all" for r in rows])
    weak = np.array([r.weak for r in rows])
    strong = np.array([r.strong for r in rows])
    length = 1.0 - np.array([AnswerLengthVerifier().score(r.prompt, r.weak_output) for r in rows])
    out = {}
    for s in sorted(set(src)):
        j = src == s
        if strong[j].mean() <= weak[j].mean():
            continue
        ev = lambda sc: evaluate_scores(sc[j], weak[j], strong[j], n_boot=n_boot, seed=seed).to_json()  # noqa: E731
        entry = {"cascade": ev(escalate), "answer_length": ev(length)}
        if prompt_scores is not None:
            entry["prompt_only"] = ev(prompt_scores)
            entry["cascade_minus_prompt_only"] = round(entry["cascade"]["apgr"] - entry["prompt_only"]["apgr"], 4)
            # both signals, unweighted (nothing fitted): logit(escalate) + logit(prompt score)
            entry["cascade_plus_prompt"] = ev(_logit(escalate) + _logit(prompt_scores))
        if price_ratios:
            cc = curve(escalate[j], weak[j], strong[j])
            pc = None if prompt_scores is None else curve(prompt_scores[j], weak[j], strong[j])
            entry["cost"] = {f"R={r:g}": cost_view(cc, pc, float(r)) for r in price_ratios}
        out[s] = entry
    return out


def cross_validate(rows, *, folds: int = 5, seed: int = 0, c: float = DEFAULT_C, spec: AnswerSpec | None = None,
                   n_boot: int = 200, prompt_only: bool = True, feats: _Features | None = None,
                   price_ratios: Sequence[float] = (), progress: Callable[[], None] | None = None) -> dict:
    rows = as_rows(rows)
    feats = feats or _Features(rows, spec or AnswerSpec())
    rng = np.random.default_rng(seed)
    prompts = np.array([f"{r.source}\x00{r.prompt}" for r in rows])
    uniq, inv = np.unique(prompts, return_inverse=True)
    if uniq.size < folds * 2:
        raise TokenomyError(f"need at least {folds * 2} distinct prompts for {folds}-fold CV")
    src_of_prompt = np.array([u.split("\x00", 1)[0] for u in uniq])
    fold_of_prompt = np.empty(uniq.size, dtype=int)
    for s in sorted(set(src_of_prompt)):
        idx = np.flatnonzero(src_of_prompt == s)
        fold_of_prompt[rng.permutation(idx)] = np.arange(idx.size) % folds
    fold_of = fold_of_prompt[inv]
    mask = _eval_mask(rows)
    escalate = np.zeros(len(rows))
    pscores = np.zeros(len(rows)) if prompt_only else None
    for f in range(folds):
        tr, te = np.flatnonzero(fold_of != f), np.flatnonzero((fold_of == f) & mask)
        v = feats.fit(tr, c, seed)
        escalate[te] = 1.0 - feats.scores(v, te)
        if prompt_only:
            tr_ref = [rows[i] for i in tr if mask[i]]
            pscores[te] = _prompt_only(tr_ref, [rows[i] for i in te], seed)
        if progress:
            progress()
    ev_rows = [rows[i] for i in np.flatnonzero(mask)]
    return {"folds": folds, "seed": seed, "c": c,
            "by_source": _report(ev_rows, escalate[mask], None if pscores is None else pscores[mask], n_boot, seed,
                                 price_ratios)}


def leave_one_source_out(rows, *, seed: int = 0, c: float = DEFAULT_C, spec: AnswerSpec | None = None,
                         n_boot: int = 200, prompt_only: bool = True, feats: _Features | None = None,
                         price_ratios: Sequence[float] = (), progress: Callable[[], None] | None = None) -> dict:
    rows = as_rows(rows)
    src = np.array([r.source for r in rows])
    sources = sorted(set(src) - {""})
    if len(sources) < 2:
        raise TokenomyError("leave-one-source-out needs rows from at least two sources")
    feats = feats or _Features(rows, spec or AnswerSpec())
    mask = _eval_mask(rows)
    out = {}
    for s in sources:
        tr, te = np.flatnonzero(src != s), np.flatnonzero((src == s) & mask)
        v = feats.fit(tr, c, seed)
        test = [rows[i] for i in te]
        ps = _prompt_only([rows[i] for i in tr if mask[i]], test, seed) if prompt_only else None
        out.update(_report(test, 1.0 - feats.scores(v, te), ps, n_boot, seed, price_ratios))
        out[s]["trained_on"] = [x for x in sources if x != s]
        if progress:
            progress()
    return {"by_source": out}


def held_out_models(rows, held_out, *, folds: int = 5, seed: int = 0, c: float = DEFAULT_C,
                    spec: AnswerSpec | None = None, n_boot: int = 200, feats: _Features | None = None,
                    progress: Callable[[], None] | None = None) -> dict:
    """Answers of models outside the training pool (`held_out`: rows with `weak_model` set),
    scored out of fold by prompt: the verifier never saw the model, nor the prompt (folds group
    every source's prompts, so a held-out model's answer is scored by a verifier trained without
    that prompt). A check of transfer to new models, next to leave-one-source-out's new sources."""
    rows, held_out = as_rows(rows), as_rows(held_out)
    if not held_out:
        return {"by_model": {}}
    feats = feats or _Features(rows, spec or AnswerSpec())
    ho = _Features(held_out, feats.spec)
    rng = np.random.default_rng(seed)
    keys = sorted({f"{r.source}\x00{r.prompt}" for r in [*rows, *held_out]})
    fold = {k: i % folds for i, k in enumerate(rng.permutation(keys))}
    fold_tr = np.array([fold[f"{r.source}\x00{r.prompt}"] for r in rows])
    fold_ho = np.array([fold[f"{r.source}\x00{r.prompt}"] for r in held_out])
    escalate = np.zeros(len(held_out))
    for f in range(folds):
        te = np.flatnonzero(fold_ho == f)
        if te.size:
            escalate[te] = 1.0 - ho.scores(feats.fit(np.flatnonzero(fold_tr != f), c, seed), te)
        if progress:
            progress()
    weak = np.array([r.weak for r in held_out])
    strong = np.array([r.strong for r in held_out])
    length = 1.0 - np.array([AnswerLengthVerifier().score(r.prompt, r.weak_output) for r in held_out])
    models = np.array([r.weak_model or "?" for r in held_out])
    out = {}
    for m in sorted(set(models)):
        j = models == m
        if strong[j].mean() <= weak[j].mean():
            continue
        ev = lambda sc: evaluate_scores(sc[j], weak[j], strong[j], n_boot=n_boot, seed=seed).to_json()  # noqa: E731
        out[m] = {"source": held_out[int(np.flatnonzero(j)[0])].source, "cascade": ev(escalate),
                  "answer_length": ev(length)}
    apgrs = [v["cascade"]["apgr"] for v in out.values()]
    return {"folds": folds, "by_model": out, "mean_apgr": round(float(np.mean(apgrs)), 4) if apgrs else None}


def validate(rows, *, seed: int = 0, c: float = DEFAULT_C, spec: AnswerSpec | None = None, n_boot: int = 200,
             prompt_only: bool = True, folds: int = 5, price_ratios: Sequence[float] = (),
             progress: Callable[[], None] | None = None) -> dict:
    """5-fold CV and (with >= 2 sources) leave-one-source-out, featurizing once."""
    rows = as_rows(rows)
    feats = _Features(rows, spec or AnswerSpec())
    rep = {"cv": cross_validate(rows, folds=folds, seed=seed, c=c, n_boot=n_boot, prompt_only=prompt_only,
                                feats=feats, price_ratios=price_ratios, progress=progress)}
    if len({r.source for r in rows} - {""}) >= 2:
        rep["leave_one_source_out"] = leave_one_source_out(rows, seed=seed, c=c, n_boot=n_boot,
                                                           prompt_only=prompt_only, feats=feats,
                                                           price_ratios=price_ratios, progress=progress)
    return rep


def train(rows, *, seed: int = 0, out: Path | str, c: float = DEFAULT_C, spec: AnswerSpec | None = None,
          report: bool = True, n_boot: int = 200, price_ratios: Sequence[float] = (), folds: int = 5,
          loso: bool = True, held_out: Sequence[CascadeRow] = (),
          progress: Callable[[], None] | None = None) -> Path:
    """Train the learned verifier on all rows and write the artifact to `out` (.npz). With
    `report`, the validation report (`folds`-fold CV, and leave-one-source-out when `loso` and
    the rows have >= 2 sources; cost tables for each of `price_ratios`; `held_out`: answers of
    models outside the training pool, scored out of fold) is stored in the artifact's meta and
    written next to it as `<out>.report.json`."""
    import json

    rows = as_rows(rows)
    if len(rows) < 10:
        raise TokenomyError("need at least 10 rows to train a verifier")
    spec = spec or AnswerSpec()
    feats = _Features(rows, spec)
    meta: dict = {"n_rows": len(rows), "sources": sorted({r.source for r in rows}),
                  "weak_models": sorted({r.weak_model for r in rows if r.weak_model})}
    if report:
        rep = {}
        if folds > 1:
            rep["cv"] = cross_validate(rows, folds=folds, seed=seed, c=c, n_boot=n_boot, feats=feats,
                                       price_ratios=price_ratios, progress=progress)
        if loso and len(meta["sources"]) >= 2:
            rep["leave_one_source_out"] = leave_one_source_out(rows, seed=seed, c=c, n_boot=n_boot, feats=feats,
                                                               price_ratios=price_ratios, progress=progress)
        if held_out:
            rep["held_out_models"] = held_out_models(rows, held_out, folds=max(folds, 2), seed=seed, c=c,
                                                     n_boot=n_boot, feats=feats, progress=progress)
        meta["report"] = rep
    v = feats.fit(np.arange(len(rows)), c, seed)
    v.meta.update(meta)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    v.save(out)
    if report:
        Path(str(out) + ".report.json").write_text(json.dumps(meta["report"], indent=1) + "\n")
    return out



def format_report(rep: dict) -> str:
    """Human-readable validation report (5-fold CV and leave-one-source-out)."""
    lines = []
    for part, title in (("cv", "5-fold cross-validation (grouped by prompt)"),
                        ("leave_one_source_out", "leave-one-source-out")):
        if part not in rep:
            continue
        lines.append(title)
        for s, v in rep[part]["by_source"].items():
            c = v["cascade"]
            ci = c.get("apgr_ci95")
            row = (f"  {s:<11} n={c['n']:<5} cascade APGR {c['apgr']:.3f}"
                   + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                   + f" CPT50 {c['cpt50']}% CPT80 {c['cpt80']}%  answer-length {v['answer_length']['apgr']:.3f}")
            if "prompt_only" in v:
                row += f"  prompt-only {v['prompt_only']['apgr']:.3f} (diff {v['cascade_minus_prompt_only']:+.3f})"
            if "trained_on" in v:
                row += f"  trained on {', '.join(v['trained_on'])}"
            lines.append(row)
    ho = rep.get("held_out_models", {}).get("by_model")
    if ho:
        lines.append("models outside the training pool (out of fold by prompt)")
        for m, v in ho.items():
            c = v["cascade"]
            ci = c.get("apgr_ci95")
            lines.append(f"  {m:<22} n={c['n']:<5} cascade APGR {c['apgr']:.3f}"
                         + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                         + f"  answer-length {v['answer_length']['apgr']:.3f}")
    return "\n".join(lines)
