"""Lexical router: hashed word/char n-grams + logistic regression.

Serving needs only numpy: score = sigmoid(w[buckets] . values + w_dense . dense + bias), well
under a millisecond. Training uses scikit-learn (imported inside `train_lexical`).

Label: each row's expected gain of the strong model, g = strong - weak in [-1, 1], as a soft
target t = (1 + g) / 2 for the logistic loss (every row enters twice, as y=1 weighted t and
y=0 weighted 1 - t). The prediction is then (1 + E[g | prompt]) / 2: ranking by it maximises
the expected quality at every strong-call share, which is what APGR measures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokenomy.routing.quality.features import FeatureSpec, featurize_many, router_dense, sparse_features

KIND = "lexical-lr"


class LexicalRouter:
    name = "lexical"

    def __init__(self, spec: FeatureSpec, weights: np.ndarray, dense_weights: np.ndarray, bias: float,
                 meta: dict | None = None):
        if weights.shape != (spec.buckets,) or dense_weights.shape != (spec.dense_size,):
            raise ValueError("weight shapes do not match the feature spec")
        self.spec = spec
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.dense_weights = np.asarray(dense_weights, dtype=np.float64)
        self.bias = float(bias)
        self.meta = meta or {}

    def logit(self, prompt: str) -> float:
        idx, val = sparse_features(prompt, self.spec)
        # multiply+sum, not `@`: BLAS may fan a long dot product out to threads, which costs
        # tens of ms on a busy machine
        z = float(np.multiply(self.weights[idx], val).sum())
        return z + float(np.multiply(self.dense_weights, router_dense(prompt, self.spec)).sum()) + self.bias

    def strong_win_rate(self, prompt: str) -> float:
        z = self.logit(prompt)
        return 1.0 / (1.0 + math.exp(-z)) if z >= -700 else 0.0

    # artifact I/O: one .npz with the arrays and a JSON header
    def save(self, path: Path | str) -> None:
        header = {"kind": KIND, "spec": self.spec.to_json(), "bias": self.bias, "meta": self.meta}
        np.savez_compressed(Path(path), header=np.array(json.dumps(header)),
                            weights=self.weights.astype(np.float16), dense_weights=self.dense_weights)

    @classmethod
    def from_npz(cls, data, header: dict) -> "LexicalRouter":
        return cls(FeatureSpec.from_json(header["spec"]), data["weights"].astype(np.float64),
                   data["dense_weights"], header["bias"], header.get("meta"))


def soft_targets(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    return (1.0 + np.asarray(strong, float) - np.asarray(weak, float)) / 2.0


class FeatureCache:
    """Featurise each distinct prompt once (CV and LOSO refit on overlapping subsets)."""

    def __init__(self, spec: FeatureSpec):
        self.spec = spec
        self._row: dict[str, int] = {}
        self._blocks: list = []
        self._x = None
        self._dense = None

    def matrices(self, prompts: Sequence[str]):
        from scipy import sparse

        new = [p for p in dict.fromkeys(prompts) if p not in self._row]
        if new:
            x_new, d_new = featurize_many(new, self.spec)
            base = len(self._row)
            self._row.update({p: base + i for i, p in enumerate(new)})
            self._x = x_new if self._x is None else sparse.vstack([self._x, x_new]).tocsr()
            self._dense = d_new if self._dense is None else np.vstack([self._dense, d_new])
        rows = np.fromiter((self._row[p] for p in prompts), dtype=np.int64, count=len(prompts))
        return self._x[rows], self._dense[rows]


def train_lexical(prompts: Sequence[str], weak: Sequence[float], strong: Sequence[float], *,
                  spec: FeatureSpec | None = None, c: float = 1.0, seed: int = 0,
                  sample_weight: Sequence[float] | None = None, meta: dict | None = None,
                  cache: FeatureCache | None = None) -> LexicalRouter:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    spec = spec or (cache.spec if cache else FeatureSpec())
    if cache is not None and cache.spec != spec:
        raise ValueError("feature cache was built with another spec")
    x_sparse, x_dense = (cache or FeatureCache(spec)).matrices(list(prompts))
    x = sparse.hstack([x_sparse, sparse.csr_matrix(x_dense)]).tocsr()
    t = soft_targets(np.asarray(weak), np.asarray(strong))
    base_w = np.ones(len(t)) if sample_weight is None else np.asarray(sample_weight, float)
    xx = sparse.vstack([x, x]).tocsr()
    y = np.r_[np.ones(len(t)), np.zeros(len(t))]
    sw = np.r_[t * base_w, (1.0 - t) * base_w]
    keep = sw > 0
    model = LogisticRegression(C=c, max_iter=3000, tol=1e-3, random_state=seed)
    model.fit(xx[keep], y[keep], sample_weight=sw[keep])
    coef = model.coef_.ravel()
    return LexicalRouter(spec, coef[: spec.buckets], coef[spec.buckets:], float(model.intercept_[0]),
                         {**(meta or {}), "c": c, "seed": seed, "n_train": len(t)})
