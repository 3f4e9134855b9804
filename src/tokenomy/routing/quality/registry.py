"""Router names -> router objects, and artifacts on disk -> router objects."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from tokenomy.errors import TokenomyError, UnknownNameError

ARTIFACT_DIR = Path(__file__).resolve().parent / "artifacts"
# default: the task router (task kind + demand, numpy only); lexical: the earlier hashed n-gram
# router (kept for comparison: it learned which data set a prompt came from)
DEFAULT_ARTIFACT = ARTIFACT_DIR / "default.npz"
LEXICAL_ARTIFACT = ARTIFACT_DIR / "lexical.npz"
MF_ARTIFACT = ARTIFACT_DIR / "mf_alpacaeval.npz"
ROUTER_NAMES = ("default", "task", "lexical", "mf", "embed", "random", "length", "oracle")


class QualityRouter(Protocol):
    name: str

    def strong_win_rate(self, prompt: str) -> float: ...


def load_artifact(path: Path | str):
    """Load any trained router artifact (.npz written by `tokenomy route train`)."""
    path = Path(path)
    if not path.is_file():
        raise TokenomyError(f"no such router artifact: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        header = json.loads(str(data["header"]))
    except (OSError, ValueError, KeyError) as exc:
        raise TokenomyError(f"{path}: not a router artifact ({exc})") from None
    kind = header.get("kind")
    if kind == "task-lr":
        from tokenomy.routing.quality.taskrouter import TaskRouter

        try:
            return TaskRouter.from_npz(data, header)
        except (KeyError, ValueError) as exc:
            raise TokenomyError(f"{path}: {exc}") from None
    if kind == "lexical-lr":
        from tokenomy.routing.quality.lexical import LexicalRouter

        return LexicalRouter.from_npz(data, header)
    if kind == "multi-model-mf":
        from tokenomy.routing.quality.mf import MultiModelRouter

        return MultiModelRouter.from_npz(data, header)
    if kind == "embed-lr":
        from tokenomy.routing.quality.embed import EmbeddingRouter

        return EmbeddingRouter.from_npz(data, header)
    raise TokenomyError(f"{path}: unknown router kind {kind!r}")


def load_router(name: str = "default", *, model: Path | str | None = None, seed: int = 0, rows=None):
    """A router by name. `model` (an artifact path) overrides the shipped artifact; `rows`
    (evaluation rows with labels) are needed only by `oracle`."""
    from tokenomy.routing.quality import baselines

    if name == "random":
        return baselines.RandomRouter(seed)
    if name == "length":
        return baselines.LengthRouter()
    if name == "oracle":
        if rows is None:
            raise TokenomyError("the oracle router needs labelled rows (use it with `tokenomy route eval`)")
        return baselines.OracleRouter(rows)
    if name in ("default", "task"):
        return load_artifact(model or DEFAULT_ARTIFACT)
    if name == "lexical":
        return load_artifact(model or LEXICAL_ARTIFACT)
    if name == "mf":
        return load_artifact(model or MF_ARTIFACT)
    if name == "embed":
        if model is None:
            raise TokenomyError("the embed router has no shipped artifact: train one with "
                                "`tokenomy route train --router embed` and pass --model")
        from tokenomy.routing.quality.embed import embed_available

        ok, why = embed_available()
        if not ok:
            raise TokenomyError(why)
        return load_artifact(model)
    if Path(name).suffix == ".npz":
        return load_artifact(name)
    raise UnknownNameError("router", name, ROUTER_NAMES)


def score_prompts(router, prompts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Scores of many prompts (batched when the router supports it)."""
    if hasattr(router, "scores"):
        out = np.asarray(router.scores(list(prompts)), dtype=float)
        if progress:
            progress(len(prompts))
        return out
    out = np.empty(len(prompts))
    for i, p in enumerate(prompts):
        out[i] = router.strong_win_rate(p)
        if progress and (i + 1) % 256 == 0:
            progress(256)
    if progress:
        progress(len(prompts) % 256)
    return out
