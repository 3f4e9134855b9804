"""Cascade routing: the weak model answers first; a verifier decides whether to escalate.

    from tokenomy.routing.cascade import load_verifier, evaluate, train, run_cascade
    v = load_verifier("cascade-default")          # shipped learned verifier, numpy-only
    v.score(prompt, weak_answer)                  # -> P(answer good) in [0, 1]; escalate if < threshold
    evaluate(rows, "cascade-default", price_ratio=20.0)   # APGR/CPT + cost view vs prompt-only
    train(rows, seed=0, out="verifier.npz")       # + 5-fold CV / leave-one-source-out report
    res = await run_cascade(call_weak, call_strong, v, threshold=0.5, prompt=prompt, text_of=...)

Other verifiers: JudgeVerifier (LLM-as-judge over an OpenAI-compatible endpoint),
AgreementVerifier (k-sample final-answer agreement for maths/code) and LogprobVerifier
(`cascade-logprobs`: the text verifier moved by the weak answer's token logprobs, an unfitted prior).
"""

from tokenomy.routing.cascade.agreement import AgreementVerifier
from tokenomy.routing.cascade.answers import extract_final_answer
from tokenomy.routing.cascade.data import (CASCADE_SOURCES, CascadeRow, convert_alpacaeval_outputs,
                                           convert_gsm8k_outputs, has_weak_output, load_source, read_rows, write_rows)
from tokenomy.routing.cascade.evaluate import cost_view, evaluate, format_eval
from tokenomy.routing.cascade.judge import JudgeVerifier, parse_score
from tokenomy.routing.cascade.logprobs import LogprobStats, LogprobVerifier, logprob_stats
from tokenomy.routing.cascade.orchestrate import CascadeCall, CascadeResult, run_cascade
from tokenomy.routing.cascade.registry import (VERIFIER_NAMES, is_cascade_artifact, is_verifier_name, load_verifier,
                                               wants_cascade)
from tokenomy.routing.cascade.train import format_report, train, validate

__all__ = ["CASCADE_SOURCES", "load_source", "AgreementVerifier", "CascadeCall", "CascadeResult", "CascadeRow", "JudgeVerifier", "LogprobStats",
           "LogprobVerifier", "VERIFIER_NAMES", "logprob_stats",
           "convert_alpacaeval_outputs", "convert_gsm8k_outputs", "cost_view", "evaluate", "extract_final_answer",
           "format_eval", "format_report", "has_weak_output", "is_cascade_artifact", "is_verifier_name",
           "load_verifier", "parse_score", "read_rows", "run_cascade", "train", "validate", "wants_cascade",
           "write_rows"]
