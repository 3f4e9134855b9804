"""Task router: "how much will the stronger model help on this prompt", from task kind and demand.

score = sigmoid(w . task_features(prompt) + b), numpy only (tens of microseconds plus the regexes).
The features (`taskkind.FEATURE_NAMES`) say what kind of task a prompt is and how demanding it is
within its kind; they carry across prompt sets because none of them names a data set.

Training (`train_task_router`, scipy L-BFGS): logistic loss on the soft target t = (1 + g) / 2 with
g = strong - weak (as the lexical router), with two things that make it transfer:
- a per-source intercept, used in training and dropped at serving: each source's base rate of
  "the strong model helps" (MMLU 0.13, GSM8K 0.22, AlpacaEval ~0.25 on their own label scales) is
  absorbed there, so the task weights learn only what ranks prompts *within* a source and cannot
  learn "this looks like GSM8K, so strong";
- a weak-supervision prior `PRIOR`: the penalty pulls w towards hand-set weights (chit-chat, edits,
  translations far below proofs, systems code, formal maths) instead of towards 0, so kinds the
  training data hardly holds (greetings, translations: none of the sources has them) keep the
  order any person would give them, and data moves the weights only where it has evidence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokenomy.routing.quality.taskkind import FEATURE_NAMES, KINDS, profile

KIND = "task-lr"

# Hand-set prior weights (logit units of t = (1 + gain) / 2; 0.5 ~ +0.12 expected gain). Payload
# and small-talk kinds below open prompts, proofs, maths, systems and domain depth above; demand cues
# add. The backbone is the instruction's length in words (`log_words`, x 1.0: 5 -> 50 words adds 2.2):
# it is the one signal that ranks prompts inside every training source, and words rank them better
# than characters in each (APGR alone: MMLU 0.594 / GSM8K 0.601 / AlpacaEval 0.527 vs 0.586 / 0.598 /
# 0.523 for characters: digits, formulas and options inflate characters, not demand). The kinds order
# prompts *across* kinds, which no single source shows; they are large enough that a one-line proof
# or lock-free queue outranks the 70th percentile of real users' requests (the gateway's start-up
# cut for strong_share 0.3), which are long. Labels decide the sign: under correctness labels (MMLU,
# 4 options) the strong model helps *less* on maths questions (gain 0.05 vs 0.13 overall: both models
# fail, and the weak one's guess is right a quarter of the time), under open answers and judged
# labels more; so a maths question weighs +1.0 unless its answer options are given (`math_choice`
# cancels it), and the `formal` cue (mostly on such questions in the data) and the generic
# `constraints` cue (in a third of every source, no sign of its own in any) weigh nothing.
PRIOR: dict[str, float] = {
    "kind_chitchat": -1.6, "kind_rewrite": -1.1, "kind_translation": -1.1, "kind_extraction": -1.0,
    "kind_factual": -0.6, "kind_writing": -0.6, "kind_open": 0.0, "kind_coding": 0.8, "kind_math": 1.0,
    "kind_reasoning": 0.5, "kind_proof": 1.6,
    "formal": 0.0, "systems": 1.4, "domain": 1.2, "constraints": 0.0, "steps": 0.3, "log_quantities": 0.1,
    "log_code_lines": 0.2, "log_instruction_chars": 0.0, "log_instruction_words": 0.0, "log_words": 1.0,
    "very_short": -0.4, "question_marks": 0.0, "explain_why": 0.1, "math_choice": -1.0,
}
DEFAULT_L2 = 3.0
# Weight of the task part (every feature but the `log_words` backbone) relative to the backbone, chosen
# by leave-one-source-out (`train.select_task_scale`): the largest scale on a grid at which no held-out
# source ranks below the length baseline. Within one training source the kinds hardly vary (MMLU is
# multiple choice, GSM8K word problems), so LOSO sees the task part mostly as noise and prefers 0; across
# kinds it is what orders a greeting below a proof, which no source shows and the hand-written sets do.
# So LOSO sets the floor and the task part gets as much weight as the floor allows, at most its hand-set
# scale (1): on the shipped data every held-out source is above length at 1 (report: task_scale_selection).
DEFAULT_TASK_SCALE = 1.0
BACKBONE = "log_words"


def prior_vector() -> np.ndarray:
    return np.array([PRIOR.get(n, 0.0) for n in FEATURE_NAMES])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))


class TaskRouter:
    name = "task"

    def __init__(self, weights: np.ndarray, bias: float, meta: dict | None = None,
                 feature_names: Sequence[str] = FEATURE_NAMES):
        if tuple(feature_names) != FEATURE_NAMES:
            raise ValueError("artifact was built for other task features; retrain it")
        self.weights = np.asarray(weights, dtype=np.float64)
        if self.weights.shape != (len(FEATURE_NAMES),):
            raise ValueError("weight shape does not match the task features")
        self.bias = float(bias)
        self.meta = meta or {}

    def logit(self, prompt: str) -> float:
        return float(np.multiply(self.weights, profile(prompt).vector()).sum()) + self.bias

    def strong_win_rate(self, prompt: str) -> float:
        z = self.logit(prompt)
        return 1.0 / (1.0 + math.exp(-z)) if z >= -700 else 0.0

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        return _sigmoid(feature_matrix(prompts) @ self.weights + self.bias)

    def explain(self, prompt: str, top: int = 6) -> dict:
        """Score, task kind and the features that moved the score most (weight x value)."""
        prof = profile(prompt)
        x = prof.vector()
        contrib = self.weights * x
        order = np.argsort(-np.abs(contrib), kind="stable")
        # features that moved the logit by less than 0.005 (a 0.1 % change of the score) explain nothing
        feats = [{"feature": FEATURE_NAMES[i], "value": round(float(x[i]), 4), "weight": round(float(self.weights[i]), 4),
                  "contribution": round(float(contrib[i]), 4)} for i in order if abs(contrib[i]) >= 0.005][:top]
        z = float(contrib.sum()) + self.bias
        return {"score": 1.0 / (1.0 + math.exp(-z)), "logit": z, "bias": self.bias, "kind": prof.kind,
                "kind_cues": {k: v for k, v in prof.kind_scores.items() if v > 0}, "top_features": feats}

    def save(self, path: Path | str) -> None:
        header = {"kind": KIND, "feature_names": list(FEATURE_NAMES), "bias": self.bias, "meta": self.meta}
        np.savez_compressed(Path(path), header=np.array(json.dumps(header)), weights=self.weights)

    @classmethod
    def from_npz(cls, data, header: dict) -> "TaskRouter":
        return cls(data["weights"], header["bias"], header.get("meta"), tuple(header["feature_names"]))


def feature_matrix(prompts: Sequence[str]) -> np.ndarray:
    return np.array([profile(p).vector() for p in prompts]).reshape(len(prompts), len(FEATURE_NAMES))


def scale_task_part(weights: np.ndarray, task_scale: float) -> np.ndarray:
    """Weights with every feature but the length backbone multiplied by `task_scale` (1 = unchanged,
    0 = the backbone alone, i.e. prompt length in words)."""
    out = np.asarray(weights, float) * task_scale
    i = FEATURE_NAMES.index(BACKBONE)
    out[i] = weights[i]
    return out


def train_task_router(prompts: Sequence[str], weak: Sequence[float], strong: Sequence[float],
                      sources: Sequence[str], *, l2: float = DEFAULT_L2, use_prior: bool = True,
                      sample_weight: Sequence[float] | None = None, x: np.ndarray | None = None,
                      meta: dict | None = None, task_scale: float = 1.0) -> TaskRouter:
    """Fit w (pulled towards PRIOR with strength `l2`, per mean row) and one intercept per source;
    then scale the task part against the backbone by `task_scale` (`scale_task_part`)."""
    if not 0.0 <= task_scale <= 4.0:
        raise ValueError("task_scale must be in [0, 4]")
    from scipy.optimize import minimize

    xm = feature_matrix(prompts) if x is None else np.asarray(x, float)
    t = (1.0 + np.asarray(strong, float) - np.asarray(weak, float)) / 2.0
    src = np.asarray(sources)
    names = sorted(set(src.tolist()))
    s_idx = np.array([names.index(s) for s in src])
    sw = np.ones(len(t)) if sample_weight is None else np.asarray(sample_weight, float)
    sw = sw / sw.sum()
    w0 = prior_vector() if use_prior else np.zeros(xm.shape[1])
    d, k = xm.shape[1], len(names)

    def loss(theta):
        w, a = theta[:d], theta[d:]
        z = xm @ w + a[s_idx]
        p = _sigmoid(z)
        # logistic loss with soft targets, written stably
        ll = np.logaddexp(0.0, z) - t * z
        f = float(sw @ ll) + 0.5 * l2 * float((w - w0) @ (w - w0))
        r = sw * (p - t)
        gw = xm.T @ r + l2 * (w - w0)
        ga = np.bincount(s_idx, weights=r, minlength=k)
        return f, np.r_[gw, ga]

    theta0 = np.r_[w0, np.zeros(k)]
    res = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    w, a = res.x[:d], res.x[d:]
    counts = np.bincount(s_idx, weights=sw, minlength=k)
    bias = float(a @ counts)   # serving intercept: the sources' weighted mean (ranking does not depend on it)
    if task_scale != 1.0:   # keep the score's level near the fitted one: centre the scaled part on the data
        x_mean = sw @ xm
        w_scaled = scale_task_part(w, task_scale)
        bias += float(x_mean @ (w - w_scaled))
        w = w_scaled
    return TaskRouter(w, bias, {**(meta or {}), "l2": l2, "use_prior": use_prior, "n_train": len(t),
                                "task_scale": task_scale,
                                "source_intercepts": {n: round(float(v), 4) for n, v in zip(names, a)},
                                "converged": bool(res.success)})


def kinds_table(prompts: Sequence[str]) -> dict[str, int]:
    out = {k: 0 for k in KINDS}
    for p in prompts:
        out[profile(p).kind] += 1
    return out
