"""Quality routing: which model does a prompt need?

Public API (used by the gateway):

    from tokenomy.routing.quality import load_router, choose_model
    r = load_router("default")            # shipped lexical router, numpy-only, < 1 ms
    r.strong_win_rate("prove that ...")   # -> float in [0, 1]; higher = strong model needed
    mm = load_router("mf")                # multi-model router (AlpacaEval's 50+ models)
    mm.predict_quality(prompt)            # -> {model: predicted quality}
    choose_model(prompt, [("llama-2-7b-chat-hf", 0.2), ("gpt4", 30.0)], threshold=0.5)
"""

from tokenomy.routing.quality.choose import Decision, choose_model, threshold_for_strong_share
from tokenomy.routing.quality.registry import ROUTER_NAMES, QualityRouter, load_artifact, load_router, score_prompts

__all__ = ["Decision", "QualityRouter", "ROUTER_NAMES", "choose_model", "load_artifact", "load_router",
           "score_prompts", "threshold_for_strong_share"]
