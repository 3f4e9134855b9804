"""Multi-model router: matrix factorisation over prompts x models (after RouteLLM's MF router).

Each model m has an embedding u_m and a bias b_m; a prompt's embedding comes from its hashed
lexical features through a learned projection, v(q) = P x(q), so the router scores prompts it
never saw. Predicted quality of model m on prompt q (e.g. P(win vs a reference answer)):

    quality(q, m) = sigmoid(b_m + u_m . v(q))

Trained on AlpacaEval's per-instruction scores of 50+ models (missing cells masked) with a
logistic loss and L2 penalties, full-batch Adam in numpy (seeded, deterministic).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tokenomy.errors import UnknownNameError
from tokenomy.routing.quality.features import DENSE_NAMES, FeatureSpec, dense_features, featurize_many, sparse_features

KIND = "multi-model-mf"
MF_SPEC = FeatureSpec(buckets_log2=14, char_ngrams=(3, 4), word_bigrams=False, cap_chars=2048, sparse_scale=1.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


class MultiModelRouter:
    name = "mf"

    def __init__(self, spec: FeatureSpec, models: Sequence[str], proj: np.ndarray, proj_dense: np.ndarray,
                 model_emb: np.ndarray, model_bias: np.ndarray, *, weak: str | None = None,
                 strong: str | None = None, meta: dict | None = None):
        self.spec = spec
        self.models = list(models)
        self._col = {m: j for j, m in enumerate(self.models)}
        self.proj = np.asarray(proj, dtype=np.float64)          # (buckets, dim)
        self.proj_dense = np.asarray(proj_dense, dtype=np.float64)  # (n_dense, dim)
        self.model_emb = np.asarray(model_emb, dtype=np.float64)    # (n_models, dim)
        self.model_bias = np.asarray(model_bias, dtype=np.float64)  # (n_models,)
        self.meta = meta or {}
        self.weak = weak or self.meta.get("weak") or self.models[int(np.argmin(self.model_bias))]
        self.strong = strong or self.meta.get("strong") or self.models[int(np.argmax(self.model_bias))]
        for m in (self.weak, self.strong):
            self._index(m)

    def _index(self, model: str) -> int:
        try:
            return self._col[model]
        except KeyError:
            raise UnknownNameError("router model", model, self.models) from None

    def embed(self, prompt: str) -> np.ndarray:
        idx, val = sparse_features(prompt, self.spec)
        # multiply+sum, not `@`: keeps BLAS threads out of the per-request path
        v = np.multiply(self.proj[idx], val[:, None]).sum(axis=0)
        return v + np.multiply(self.proj_dense, dense_features(prompt, self.spec.cap_chars)[:, None]).sum(axis=0)

    def predict_quality(self, prompt: str) -> dict[str, float]:
        q = _sigmoid(self.model_bias + np.multiply(self.model_emb, self.embed(prompt)).sum(axis=1))
        return dict(zip(self.models, q.tolist()))

    def quality_of(self, prompt: str, models: Sequence[str]) -> np.ndarray:
        cols = [self._index(m) for m in models]
        v = self.embed(prompt)
        return _sigmoid(self.model_bias[cols] + np.multiply(self.model_emb[cols], v).sum(axis=1))

    def strong_win_rate(self, prompt: str) -> float:
        """(1 + q_strong - q_weak) / 2 for the configured weak/strong pair (same scale as lexical)."""
        qw, qs = self.quality_of(prompt, [self.weak, self.strong])
        return float((1.0 + qs - qw) / 2.0)

    def with_pair(self, weak: str, strong: str) -> "MultiModelRouter":
        return MultiModelRouter(self.spec, self.models, self.proj, self.proj_dense, self.model_emb,
                                self.model_bias, weak=weak, strong=strong, meta=self.meta)

    def save(self, path: Path | str) -> None:
        header = {"kind": KIND, "spec": self.spec.to_json(), "models": self.models, "weak": self.weak,
                  "strong": self.strong, "meta": self.meta}
        np.savez_compressed(Path(path), header=np.array(json.dumps(header)),
                            proj=self.proj.astype(np.float16), proj_dense=self.proj_dense,
                            model_emb=self.model_emb, model_bias=self.model_bias)

    @classmethod
    def from_npz(cls, data, header: dict) -> "MultiModelRouter":
        return cls(FeatureSpec.from_json(header["spec"]), header["models"], data["proj"].astype(np.float64),
                   data["proj_dense"], data["model_emb"], data["model_bias"], weak=header.get("weak"),
                   strong=header.get("strong"), meta=header.get("meta"))


def train_mf(prompts: Sequence[str], models: Sequence[str], scores: np.ndarray, *, dim: int = 8,
             steps: int = 400, lr: float = 0.03, l2_proj: float = 1e-3, l2_model: float = 1e-3,
             seed: int = 0, spec: FeatureSpec = MF_SPEC, weak: str | None = None,
             strong: str | None = None, meta: dict | None = None) -> MultiModelRouter:
    """Fit on a prompts x models matrix of qualities in [0, 1] (NaN = unknown)."""
    scores = np.asarray(scores, dtype=float)
    if scores.shape != (len(prompts), len(models)):
        raise ValueError("scores must be len(prompts) x len(models)")
    x, d = featurize_many(list(prompts), spec)
    mask = ~np.isnan(scores)
    y = np.where(mask, scores, 0.0)
    n_obs = mask.sum()
    rng = np.random.default_rng(seed)
    params = {
        "proj": rng.normal(0, 0.01, (spec.buckets, dim)),
        "proj_dense": rng.normal(0, 0.01, (d.shape[1], dim)),
        "model_emb": rng.normal(0, 0.1, (len(models), dim)),
        "model_bias": np.log((np.nanmean(scores, axis=0) + 0.01) / (1.01 - np.nanmean(scores, axis=0))),
    }
    m1 = {k: np.zeros_like(v) for k, v in params.items()}
    m2 = {k: np.zeros_like(v) for k, v in params.items()}
    b1, b2, eps = 0.9, 0.999, 1e-8
    xt = x.T.tocsr()
    for step in range(1, steps + 1):
        v = x @ params["proj"] + d @ params["proj_dense"]              # (n, dim)
        logits = params["model_bias"] + v @ params["model_emb"].T      # (n, M)
        r = (_sigmoid(logits) - y) * mask / n_obs                      # dLoss/dlogit
        g_v = r @ params["model_emb"]
        grads = {
            "model_bias": r.sum(axis=0),
            "model_emb": r.T @ v + l2_model * params["model_emb"],
            "proj": xt @ g_v + l2_proj * params["proj"],
            "proj_dense": d.T @ g_v + l2_proj * params["proj_dense"],
        }
        for k, g in grads.items():
            m1[k] = b1 * m1[k] + (1 - b1) * g
            m2[k] = b2 * m2[k] + (1 - b2) * g * g
            params[k] -= lr * (m1[k] / (1 - b1**step)) / (np.sqrt(m2[k] / (1 - b2**step)) + eps)
    return MultiModelRouter(spec, models, params["proj"], params["proj_dense"], params["model_emb"],
                            params["model_bias"], weak=weak, strong=strong,
                            meta={**(meta or {}), "dim": dim, "steps": steps, "seed": seed,
                                  "n_prompts": len(prompts), "n_models": len(models)})
