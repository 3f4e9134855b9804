"""Training report for the multi-model router: k-fold CV over prompts on AlpacaEval."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tokenomy.errors import UnknownNameError
from tokenomy.routing.quality.baselines import LengthRouter
from tokenomy.routing.quality.data import load_alpacaeval_matrix
from tokenomy.routing.quality.metrics import evaluate_scores
from tokenomy.routing.quality.mf import train_mf

# Size ladders reported next to the main pair (weak, strong), when both are in the data.
LADDER_PAIRS = (("llama-2-7b-chat-hf", "llama-2-70b-chat-hf"), ("tulu-2-dpo-7b", "tulu-2-dpo-70b"),
                ("llama-2-13b-chat-hf", "gpt4"), ("gpt-3.5-turbo-0301", "gpt4"))


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def train_mf_report(path: Path | str, out: Path | str, *, seed: int = 0, folds: int = 5,
                    weak: str = "llama-2-7b-chat-hf", strong: str = "gpt4", n_boot: int = 300,
                    dim: int = 8, steps: int = 400) -> dict:
    mat = load_alpacaeval_matrix(path)
    for m in (weak, strong):
        if m not in mat.models:
            raise UnknownNameError("AlpacaEval model", m, mat.models)
    scores = mat.scores
    n = len(mat.prompts)
    report: dict = {"router": "mf", "n_prompts": n, "n_models": len(mat.models), "seed": seed,
                    "weak": weak, "strong": strong, "out": str(out)}
    if folds:
        rng = np.random.default_rng(seed)
        fold_of = rng.permutation(n) % folds
        pred = np.full(scores.shape, np.nan)
        bias_pred = np.full(scores.shape, np.nan)
        for f in range(folds):
            tr, te = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
            r = train_mf([mat.prompts[i] for i in tr], mat.models, scores[tr], seed=seed, dim=dim, steps=steps)
            for i in te:
                pred[i] = list(r.predict_quality(mat.prompts[i]).values())
            bias_pred[te] = np.nanmean(scores[tr], axis=0)
        obs = ~np.isnan(scores)
        report["cv"] = {"folds": folds,
                        "log_loss": round(_log_loss(pred[obs], scores[obs]), 4),
                        "log_loss_model_mean_only": round(_log_loss(bias_pred[obs], scores[obs]), 4),
                        "pairs": {}}
        length = np.array([LengthRouter().strong_win_rate(p) for p in mat.prompts])
        for w, s in ((weak, strong),) + tuple(p for p in LADDER_PAIRS if p != (weak, strong)):
            if w not in mat.models or s not in mat.models:
                continue
            jw, js = mat.models.index(w), mat.models.index(s)
            ok = ~np.isnan(scores[:, jw]) & ~np.isnan(scores[:, js])
            if scores[ok, js].mean() <= scores[ok, jw].mean():
                continue
            win = (1 + pred[ok, js] - pred[ok, jw]) / 2
            res = evaluate_scores(win, scores[ok, jw], scores[ok, js], n_boot=n_boot, seed=seed).to_json()
            base = evaluate_scores(length[ok], scores[ok, jw], scores[ok, js], n_boot=0).to_json()
            report["cv"]["pairs"][f"{w} -> {s}"] = {"router": res, "length_apgr": base["apgr"]}
    final = train_mf(mat.prompts, mat.models, scores, seed=seed, dim=dim, steps=steps, weak=weak, strong=strong,
                     meta={"data": Path(path).name, "label": "ae1_win_vs_davinci003"})
    final.save(out)
    return report
