"""The planner's verification simulations count prefix-cache hits (a flag passed through)."""

from __future__ import annotations

import numpy as np

from tokenomy.catalog import load_catalog
from tokenomy.fleet.milp import Candidate, PlanRequest
from tokenomy.fleet.planner import _Judge
from tokenomy.fleet.workload import head, load_trace, scale_rate
from tokenomy.perf import make_step_model


def test_verification_with_the_cache_meets_more_slos_on_a_prefix_sharing_trace():
    cat = load_catalog()
    model, acc = cat.model("llama-3.1-8b"), cat.accelerator("h200")
    sm = make_step_model(model, acc)
    tr = scale_rate(head(load_trace("mooncake"), 1500), 0.5)
    cand = Candidate(acc, 1, "bf16", sm, 2.0, [], 0.0)
    mask = np.ones(len(tr), dtype=bool)
    mask[::7] = False  # a masked subset keeps its block hashes
    met = {}
    for caching in (True, False):
        req = PlanRequest(model=model, accelerators=(acc,), slo_tpot_ms=60.0, slo_ttft_ms=1000.0,
                          prefix_caching=caching, routing="prefix-affinity")
        judge = _Judge(tr, req, np.zeros(len(tr), dtype=np.int64))
        met[caching], _ = judge.run(cand, mask, 4)
    # measured 879 vs 843 of 1,285 (deterministic simulation): the hits shorten prefills
    assert met[True] >= met[False] + 20
