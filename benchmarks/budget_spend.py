"""Budgets that can be spent: how much of a hard budget the gateway lets a key spend, and by how
much it is overshot (issue 14 §2).

On `tokenomy up`'s default fleet (gateway/config.py default_config: llama-3-8b on L4 and H100
in one group, emulated in-process, served through the lean front as `tokenomy up` serves it),
with a ledger in a temp dir:
  1. one request of the body on a key without a budget: its real cost on the deployment chosen;
  2. a key with a hard budget of `--worth` (10) times that cost:
       sequential: requests one after another until the first refusal;
       burst: `--burst` (50) concurrent requests at once;
  share = what the ledger recorded as spent / the budget; overshoot = max(0, spent - budget).
Both for a body with `max_tokens` and one without. Before issue 14 §2 (reservation priced at
the dearest deployment of the group, 4,096 output tokens assumed without max_tokens, refusal
at once while others held the budget) the measured shares were 30 % / 10 % with max_tokens and
0 % without.

    .venv/bin/python benchmarks/budget_spend.py                     # ~1 min at time scale 1
    .venv/bin/python benchmarks/budget_spend.py --time-scale 0.01 --json

`--time-scale` is the emulators' (1 = real-time model speed, as `tokenomy up`); `--wait-s` the
gateway's bounded wait for in-flight reservations (budgets.wait_s, default 2 s). The
burst share depends on both: a request that needs budget held by others waits at most wait_s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

MSGS = [{"role": "user", "content": "Explain in a few sentences why the sky is blue."}]
ADMIN_KEY = "tk-admin-budgetspendbench0123"


async def _post(sess: aiohttp.ClientSession, url: str, key: str, body: dict) -> tuple[int, dict, dict]:
    async with sess.post(url + "/v1/chat/completions", data=orjson.dumps(body),
                         headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, dict(r.headers), orjson.loads(await r.read())


def _spent(metering, tenant: str) -> Decimal:
    return sum((e.price_usd for e in metering.events(tenant)), Decimal(0))


async def _measure(url: str, metering, body: dict, label: str, worth: int, burst: int) -> dict:
    tag = label.replace(" ", "_")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as sess:
        _, free_key = metering.create_key(f"calibrate-{tag}")
        st, h, b = await _post(sess, url, free_key, body)
        if st != 200:
            raise SystemExit(f"calibration request failed: HTTP {st}: {b}")
        per_request = Decimal(h["x-tokenomy-cost-usd"])
        deployment = h["x-tokenomy-deployment"]
        budget = per_request * worth
        out: dict = {"body": label, "deployment": deployment, "per_request_usd": str(per_request),
                     "budget_usd": str(budget)}

        _, key = metering.create_key(f"seq-{tag}", budget_usd=str(budget))
        served, capped, refusal = 0, 0, None
        t = time.perf_counter()
        for _ in range(worth * 3):
            st, h, b = await _post(sess, url, key, body)
            if st != 200:
                refusal = (st, b.get("error", {}).get("code"))
                break
            served += 1
            capped += "x-tokenomy-max-tokens-capped" in h
        spent = _spent(metering, f"seq-{tag}")
        out["sequential"] = {"served": served, "capped": capped, "refusal": refusal,
                             "share": float(spent / budget), "overshoot_usd": str(max(Decimal(0), spent - budget)),
                             "seconds": round(time.perf_counter() - t, 2)}

        _, key = metering.create_key(f"burst-{tag}", budget_usd=str(budget))
        t = time.perf_counter()
        results = await asyncio.gather(*(_post(sess, url, key, body) for _ in range(burst)))
        spent = _spent(metering, f"burst-{tag}")
        codes: dict[str, int] = {}
        for st, _, b in results:
            if st != 200:
                c = f"{st} {b.get('error', {}).get('code')}"
                codes[c] = codes.get(c, 0) + 1
        out["burst"] = {"served": sum(1 for r in results if r[0] == 200), "refused": codes,
                        "share": float(spent / budget), "overshoot_usd": str(max(Decimal(0), spent - budget)),
                        "seconds": round(time.perf_counter() - t, 2)}
    return out


async def run(args) -> list[dict]:
    from aiohttp import web

    from tokenomy.config import default_config
    from tokenomy.gateway.app import build_app
    from tokenomy.gateway.fastpath import fast_front
    from tokenomy.metering import Metering

    cfg = default_config(time_scale=args.time_scale)
    if args.wait_s is not None:
        cfg = cfg.model_copy(update={"budgets": cfg.budgets.model_copy(update={"wait_s": args.wait_s})})
    rows = []
    with tempfile.TemporaryDirectory(prefix="tokenomy-budget-") as tmp:
        metering = Metering.open(Path(tmp), admin_key=ADMIN_KEY)
        app = build_app(cfg, metering)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        front = fast_front(app, runner)
        try:
            port = await front.start("127.0.0.1", 0)
            url = f"http://127.0.0.1:{port}"
            for label, body in (("max_tokens", {"model": "llama-3-8b", "messages": MSGS, "max_tokens": args.max_tokens}),
                                ("no max_tokens", {"model": "llama-3-8b", "messages": MSGS})):
                rows.append(await _measure(url, metering, body, label, args.worth, args.burst))
        finally:
            await front.shutdown(0.5)
            await runner.cleanup()
            metering.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worth", type=int, default=10, help="the budget, in requests of the body (default 10)")
    ap.add_argument("--burst", type=int, default=50, help="concurrent requests of the burst (default 50)")
    ap.add_argument("--max-tokens", type=int, default=200, help="max_tokens of the body that has one (default 200)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="emulators' time scale (default 1: real time)")
    ap.add_argument("--wait-s", type=float, default=None, help="budgets.wait_s (default: the config's, 2 s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    rows = asyncio.run(run(args))
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}, indent=2))
        return
    print(f"# default fleet, time scale {args.time_scale:g}, budget worth {args.worth} requests, "
          f"burst of {args.burst}; goal: >= 90 % sequential, >= 80 % burst, overshoot 0")
    print(f"{'body':<14} {'deployment':<18} {'mode':<11} {'served':>6} {'share':>7} {'overshoot $':>12} {'s':>6}  refusals")
    for r in rows:
        for mode in ("sequential", "burst"):
            m = r[mode]
            ref = m.get("refused") if mode == "burst" else m.get("refusal")
            print(f"{r['body']:<14} {r['deployment']:<18} {mode:<11} {m['served']:>6} {m['share'] * 100:>6.1f}% "
                  f"{m['overshoot_usd']:>12} {m['seconds']:>6}  {ref}")


if __name__ == "__main__":
    main()
