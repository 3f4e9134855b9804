"""CLI: `tokenomy costs` — what each self-hosted deployment really cost over a window, allocated
to the requests it served, and its idle cost (tokenomy.allocation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def costs(
    since: str = typer.Option("1h", "--since", help="ISO time or age: 10m, 24h, 7d."),
    until: Optional[str] = typer.Option(None, "--until", help="ISO time or age (exclusive; default now)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Ledger directory (default $TOKENOMY_DATA_DIR "
                                            "or ./.tokenomy; TOKENOMY_LEDGER_URL selects PostgreSQL)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Bill (rental + energy) vs allocated vs idle cost per self-hosted deployment, tokens served and
    the actual $/Mtok next to the cost model's at the same utilisation."""
    import time

    from tokenomy.allocation.report import costs_report
    from tokenomy.allocation.store import CapacityStore
    from tokenomy.errors import TokenomyError
    from tokenomy.metering import default_data_dir
    from tokenomy.metering.timeparse import parse_time

    now = time.time()
    t0 = parse_time(since, now=now, option="--since")
    t1 = parse_time(until, now=now, option="--until") if until else now
    if t1 <= t0:
        raise TokenomyError(f"--until must be after --since ({since})")
    store = CapacityStore.open(data_dir or default_data_dir())
    try:
        report = costs_report(store, t0, t1)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(report))
        return
    from tokenomy.cli.fmt import print_table, usd

    rows = [[name, usd(d["hourly_usd"]), usd(d["bill_usd"]), usd(d["allocated_usd"]), usd(d["idle_usd"]),
             f"{d['tokens']:,}", usd(d["usd_per_mtok_actual"]),
             "-" if d["utilization"] is None else f"{d['utilization']:.1%}"] for name, d in report["deployments"].items()]
    t = report["total"]
    rows.append(["TOTAL", "", usd(t["bill_usd"]), usd(t["allocated_usd"]), usd(t["idle_usd"]), f"{t['tokens']:,}", "", ""])
    cols = ["deployment", "$/h", "bill", "allocated", "idle", "tokens", "$/Mtok actual", "utilisation"]
    print_table("real cost of self-hosted deployments", cols, rows, numeric=cols[1:],
                caption="no self-hosted deployment was provisioned in this window" if not report["deployments"] else
                "bill = rental + energy; allocated to requests in flight; idle = nobody in flight")


def register(app: typer.Typer) -> None:
    app.command("costs")(costs)
