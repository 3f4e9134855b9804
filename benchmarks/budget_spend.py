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
    .venv/bin/python benchmarks/budget_spend.py --replicas 3          # 3 gateways on PostgreSQL + Redis

`--replicas N` (N > 1): N gateway instances, each with its own metering (PostgreSQL ledger in a
fresh schema + Redis counters under a fresh prefix, as `tokenomy up` opens them with
TOKENOMY_LEDGER_URL / TOKENOMY_REDIS_URL) and its own emulated fleet, in one process on their
own ports; requests go round-robin over them, as a load balancer would send them. The budget is
shared through Redis reservations; spent is read back from the shared ledger.

`--time-scale` is the emulators' (1 = real-time model speed, as `tokenomy up`); `--wait-s` the
gateway's bounded wait for in-flight reservations (budgets.wait_s, default 2 s). The
burst share depends on both: a request that needs budget held by others waits at most wait_s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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


class _RoundRobin:
    """The replicas' base URLs, one after another (a balancer's round-robin)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls, self.i = urls, 0

    def __call__(self) -> str:
        self.i += 1
        return self.urls[(self.i - 1) % len(self.urls)]


async def _measure(urls: list[str], metering, body: dict, label: str, worth: int, burst: int) -> dict:
    tag = label.replace(" ", "_")
    nxt = _RoundRobin(urls)
    url = urls[0]
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
            st, h, b = await _post(sess, nxt(), key, body)
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
        results = await asyncio.gather(*(_post(sess, nxt(), key, body) for _ in range(burst)))
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
    import uuid

    from aiohttp import web

    from tokenomy.config import default_config
    from tokenomy.gateway.app import build_app
    from tokenomy.gateway.fastpath import fast_front
    from tokenomy.metering import Metering
    from tokenomy.metering.backends import open_metering

    cfg = default_config(time_scale=args.time_scale)
    if args.wait_s is not None:
        cfg = cfg.model_copy(update={"budgets": cfg.budgets.model_copy(update={"wait_s": args.wait_s})})
    rows = []
    schema = f"tk_budget_{uuid.uuid4().hex[:8]}"
    pg = f"{args.pg_url}{'&' if '?' in args.pg_url else '?'}schema={schema}"
    prefix = f"tkbudget:{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory(prefix="tokenomy-budget-") as tmp:
        if args.replicas == 1:
            meterings = [Metering.open(Path(tmp), admin_key=ADMIN_KEY)]
        else:
            meterings = [open_metering(Path(tmp) / f"r{i}", ledger_url=pg, redis_url=args.redis_url,
                                       redis_prefix=prefix, admin_key=ADMIN_KEY) for i in range(args.replicas)]
        served: list[tuple] = []
        try:
            urls = []
            for m in meterings:
                app = build_app(cfg, m)
                runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
                await runner.setup()
                front = fast_front(app, runner)
                served.append((front, runner))
                urls.append(f"http://127.0.0.1:{await front.start('127.0.0.1', 0)}")
            for label, body in (("max_tokens", {"model": "llama-3-8b", "messages": MSGS, "max_tokens": args.max_tokens}),
                                ("no max_tokens", {"model": "llama-3-8b", "messages": MSGS})):
                rows.append(await _measure(urls, meterings[0], body, label, args.worth, args.burst))
        finally:
            for front, runner in served:
                await front.shutdown(0.5)
                await runner.cleanup()
            for m in meterings:
                m.shutdown()
            if args.replicas > 1:
                _drop_schema(args.pg_url, schema)
    return rows


def _drop_schema(pg_url: str, schema: str) -> None:
    import sqlalchemy as sa

    from tokenomy.metering.postgres_ledger import split_url

    url, _ = split_url(pg_url)
    eng = sa.create_engine(url)
    with eng.begin() as c:
        c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    eng.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worth", type=int, default=10, help="the budget, in requests of the body (default 10)")
    ap.add_argument("--burst", type=int, default=50, help="concurrent requests of the burst (default 50)")
    ap.add_argument("--max-tokens", type=int, default=200, help="max_tokens of the body that has one (default 200)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="emulators' time scale (default 1: real time)")
    ap.add_argument("--wait-s", type=float, default=None, help="budgets.wait_s (default: the config's, 2 s)")
    ap.add_argument("--replicas", type=int, default=1,
                    help="gateway replicas (default 1: SQLite ledger; N > 1: PostgreSQL + Redis, round-robin)")
    ap.add_argument("--pg-url", default=os.environ.get("TOKENOMY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--redis-url", default=os.environ.get("TOKENOMY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.replicas < 1:
        ap.error("--replicas must be >= 1")
    rows = asyncio.run(run(args))
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}, indent=2))
        return
    where = "1 gateway, SQLite ledger" if args.replicas == 1 else f"{args.replicas} gateways on PostgreSQL + Redis"
    print(f"# {where}; default fleet, time scale {args.time_scale:g}, budget worth {args.worth} requests, "
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
