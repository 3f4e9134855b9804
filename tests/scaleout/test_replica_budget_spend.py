"""Budgets that can be spent on 3 gateway replicas sharing PostgreSQL + Redis (issue 14 §2):
the same measurement as tests/gateway/test_budget_spend.py (a hard budget worth 10 requests,
>= 90 % one after another, >= 80 % under a burst of 50, overshoot 0), with requests sent
round-robin over three gateways, each with its own metering (PostgreSQL ledger + Redis
counters, as TOKENOMY_LEDGER_URL / TOKENOMY_REDIS_URL open them) and its own emulated fleet."""

from __future__ import annotations

import contextlib

import pytest

from tests.gateway.gw_helpers import ADMIN_KEY, serve_gateway
from tests.gateway.test_budget_spend import _config, spend_a_budget_worth_10
from tokenomy.metering.backends import open_metering

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("with_max_tokens", [True, False], ids=["max_tokens", "no_max_tokens"])
async def test_a_budget_is_spendable_across_3_replicas(tmp_path, pg, redis_url, redis_prefix, with_max_tokens):
    from tokenomy.gateway.app import build_app

    meterings = [open_metering(tmp_path / f"r{i}", ledger_url=pg, redis_url=redis_url, redis_prefix=redis_prefix,
                               admin_key=ADMIN_KEY) for i in range(3)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            urls = [(await stack.enter_async_context(serve_gateway(build_app(_config(), m))))[0] for m in meterings]
            await spend_a_budget_worth_10(urls, meterings[0], with_max_tokens)
    finally:
        for m in meterings:
            m.shutdown()
