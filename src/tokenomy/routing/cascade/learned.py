"""Learned answer-quality verifier: answer features + logistic regression, numpy-only serving.

score(prompt, answer) = P(the answer is good) = sigmoid(w_dense . DENSE_SCALE * dense features
+ w[buckets] . hashed answer n-grams + bias). Trained on answers of several weak models with
their quality q in [0, 1] as a soft target (cross-entropy against q), so the prediction is
E[q | prompt, answer]; a cascade escalates when the score is below its threshold.

Training is an L2-regularised logistic regression solved with scipy's L-BFGS-B so that dense
weights can carry sign priors (features.DENSE_SIGNS). Dense features are not standardised on
the training set: a feature that is rare there would otherwise be blown up on another source.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokenomy.routing.cascade.features import (DENSE_NAMES, DENSE_SIGNS, AnswerSpec, answer_ngrams,
                                               dense_features, featurize_many)

KIND = "cascade-lr"
DENSE_SCALE = 3.0  # dense features are ~[0, 1]; scaled up so the shared L2 penalty shrinks them less


class LearnedVerifier:
    name = "learned"

    def __init__(self, spec: AnswerSpec, weights: np.ndarray, dense_weights: np.ndarray, bias: float,
                 meta: dict | None = None):
        if weights.shape != (spec.buckets,) or dense_weights.shape != (len(DENSE_NAMES),):
            raise ValueError("weight shapes do not match the feature spec")
        self.spec = spec
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.dense_weights = np.asarray(dense_weights, float)
        self._wd = self.dense_weights * DENSE_SCALE
        self.bias = float(bias)
        self.meta = meta or {}

    def logit(self, prompt: str, answer: str) -> float:
        idx, val = answer_ngrams(answer, self.spec)
        z = float(self.weights[idx] @ val) if idx.size else 0.0
        return z + float(self._wd @ dense_features(prompt, answer)) + self.bias

    def score(self, prompt: str, answer: str) -> float:
        """P(answer is good) in [0, 1]; higher = keep the weak answer."""
        z = self.logit(prompt, answer)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def scores(self, prompts: Sequence[str], answers: Sequence[str]) -> np.ndarray:
        return np.array([self.score(p, a) for p, a in zip(prompts, answers)])

    def explain(self, prompt: str, answer: str, top: int = 5) -> list[tuple[str, float]]:
        """The dense features that moved this score most (name, logit contribution)."""
        contrib = self._wd * dense_features(prompt, answer)
        order = np.argsort(-np.abs(contrib))[:top]
        return [(DENSE_NAMES[i], round(float(contrib[i]), 4)) for i in order if contrib[i] != 0]

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        header = {"kind": KIND, "spec": self.spec.to_json(), "bias": self.bias, "dense_names": list(DENSE_NAMES),
                  "dense_scale": DENSE_SCALE, "meta": self.meta}
        with path.open("wb") as fh:  # a file handle keeps numpy from appending ".npz"
            np.savez_compressed(fh, header=np.array(json.dumps(header)), weights=self.weights.astype(np.float16),
                                dense_weights=self.dense_weights)
        return path

    @classmethod
    def from_npz(cls, data, header: dict) -> "LearnedVerifier":
        if list(header.get("dense_names", [])) != list(DENSE_NAMES) or header.get("dense_scale") != DENSE_SCALE:
            raise ValueError("artifact was trained with a different feature set")
        return cls(AnswerSpec.from_json(header["spec"]), data["weights"].astype(np.float64), data["dense_weights"],
                   header["bias"], header.get("meta"))


def fit_soft_logistic(x, q: np.ndarray, *, l2: float, bounds: list[tuple[float | None, float | None]],
                      sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Minimise sum_i s_i * CE(q_i, sigmoid(x_i w + b)) + l2/2 |w|^2 with per-weight bounds."""
    from scipy.optimize import minimize

    n, d = x.shape
    s = np.ones(n) if sample_weight is None else np.asarray(sample_weight, float)
    xt = x.T.tocsr() if hasattr(x, "tocsr") else x.T

    def f(wb: np.ndarray):
        w, b = wb[:-1], wb[-1]
        z = np.asarray(x @ w).ravel() + b
        loss = float(s @ (np.logaddexp(0.0, z) - q * z)) + 0.5 * l2 * float(w @ w)
        g = s * (0.5 * (1.0 + np.tanh(0.5 * z)) - q)   # stable sigmoid
        return loss, np.r_[np.asarray(xt @ g).ravel() + l2 * w, g.sum()]

    res = minimize(f, np.zeros(d + 1), jac=True, method="L-BFGS-B", bounds=[*bounds, (None, None)],
                   options={"maxiter": 2000})
    return res.x[:-1], float(res.x[-1])


def train_verifier(prompts: Sequence[str], answers: Sequence[str], quality: Sequence[float], *,
                   spec: AnswerSpec | None = None, c: float = 2.0, seed: int = 0, sign_priors: bool = True,
                   sample_weight: Sequence[float] | None = None, meta: dict | None = None) -> LearnedVerifier:
    """Fit on (prompt, answer, quality). `c` is the inverse L2 strength per unit of sample weight
    (sample weights are normalised to mean 1). Deterministic: `seed` is recorded only."""
    spec = spec or AnswerSpec()
    x_sparse, x_dense = featurize_many(list(prompts), list(answers), spec)
    return fit_features(x_sparse, x_dense, quality, spec=spec, c=c, seed=seed, sign_priors=sign_priors,
                        sample_weight=sample_weight, meta=meta)


def fit_features(x_sparse, x_dense: np.ndarray, quality: Sequence[float], *, spec: AnswerSpec, c: float = 2.0,
                 seed: int = 0, sign_priors: bool = True, sample_weight: Sequence[float] | None = None,
                 meta: dict | None = None) -> LearnedVerifier:
    """Fit on precomputed features (featurize_many), so cross-validation featurizes once."""
    from scipy import sparse

    # only buckets seen in training get a weight (the others stay 0 under L2): a smaller problem
    used = np.unique(sparse.csr_matrix(x_sparse).indices)
    x = sparse.hstack([sparse.csr_matrix(x_sparse)[:, used], sparse.csr_matrix(x_dense * DENSE_SCALE)]).tocsr()
    q = np.clip(np.asarray(quality, float), 0.0, 1.0)
    sw = np.ones(len(q)) if sample_weight is None else np.asarray(sample_weight, float)
    sw = sw / sw.mean()
    bounds: list[tuple[float | None, float | None]] = [(None, None)] * used.size
    for sign in DENSE_SIGNS:
        if sign_priors and sign < 0:
            bounds.append((None, 0.0))
        elif sign_priors and sign > 0:
            bounds.append((0.0, None))
        else:
            bounds.append((None, None) if spec.free_dense else (0.0, 0.0))
    w, b = fit_soft_logistic(x, q, l2=1.0 / c, bounds=bounds, sample_weight=sw)
    weights = np.zeros(spec.buckets)
    weights[used] = w[: used.size]
    return LearnedVerifier(spec, weights, w[used.size:], b,
                           {**(meta or {}), "c": c, "seed": seed, "n_train": len(q), "sign_priors": sign_priors})
