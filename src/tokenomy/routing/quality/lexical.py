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
        if weights.shape != (spec.table_size,) or dense_weights.shape != (spec.dense_size,):
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
    return LexicalRouter(spec, coef[: spec.table_size], coef[spec.table_size:], float(model.intercept_[0]),
                         {**(meta or {}), "c": c, "seed": seed, "n_train": len(t)})


MIN_EXPERT_ROWS = 200


def train_gated(prompts: Sequence[str], weak: Sequence[float], strong: Sequence[float], *, spec: FeatureSpec,
                c: float = 1.0, seed: int = 0, sample_weight: Sequence[float] | None = None, meta: dict | None = None,
                caches: dict | None = None, min_expert_rows: int = MIN_EXPERT_ROWS) -> LexicalRouter:
    """Hard-gated mixture (`spec.expert_shared` False): a shared head fitted on every row (the
    single-head router), then one expert head per format of `spec.expert_formats` fitted on that
    format's rows alone; a prompt is scored by its format's head, or the shared one. A format with
    fewer than `min_expert_rows` training rows gets no head (its prompts fall back to the shared one)."""
    from dataclasses import replace

    from tokenomy.routing.quality.features import DENSE_NAMES, EXPERT_DENSE_SIZE, _capped
    from tokenomy.routing.quality.formats import FORMAT_NAMES, prompt_format

    if not spec.format_experts or spec.expert_shared:
        raise ValueError("train_gated needs a spec with format_experts and expert_shared=False")
    caches = {} if caches is None else caches
    cache = lambda s: caches.setdefault(s, FeatureCache(s))   # noqa: E731
    prompts, weak, strong = list(prompts), np.asarray(weak, float), np.asarray(strong, float)
    sw = np.ones(len(prompts)) if sample_weight is None else np.asarray(sample_weight, float)
    fmt = np.array([prompt_format(_capped(p, spec.cap_chars)) for p in prompts])
    experts = tuple(n for n in spec.expert_formats if (fmt == FORMAT_NAMES.index(n)).sum() >= min_expert_rows)
    single = replace(spec, format_experts=False, expert_scale=1.0, expert_formats=FORMAT_NAMES, expert_shared=True)
    meta = {**(meta or {}), "experts": list(experts)}
    shared = train_lexical(prompts, weak, strong, spec=single, c=c, seed=seed, sample_weight=sw, meta=meta,
                           cache=cache(single))
    if not experts:
        return shared
    gated = replace(spec, expert_formats=experts)
    weights = np.zeros(gated.table_size)
    weights[: gated.buckets] = shared.weights
    dense = np.zeros(gated.dense_size)
    dense[: len(DENSE_NAMES)] = shared.dense_weights
    for slot, name in enumerate(experts):
        j = np.flatnonzero(fmt == FORMAT_NAMES.index(name))
        head = train_lexical([prompts[i] for i in j], weak[j], strong[j], spec=gated, c=c, seed=seed,
                             sample_weight=sw[j], cache=cache(gated))
        lo = gated.buckets * (1 + slot)
        weights[lo: lo + gated.buckets] = head.weights[lo: lo + gated.buckets]
        start = len(DENSE_NAMES) + slot * EXPERT_DENSE_SIZE
        dense[start: start + EXPERT_DENSE_SIZE] = head.dense_weights[start: start + EXPERT_DENSE_SIZE]
        dense[start + EXPERT_DENSE_SIZE - 1] += head.bias - shared.bias   # the head's own intercept
    return LexicalRouter(gated, weights, dense, shared.bias, {**shared.meta, **meta})
