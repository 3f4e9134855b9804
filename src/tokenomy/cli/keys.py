"""CLI commands: `keys` (create/list/revoke), `tenants` (create/list) and `usage`.

They open the same ledger as a running gateway (data dir: --data-dir, env TOKENOMY_DATA_DIR,
else ./.tokenomy); SQLite WAL + short transactions make that safe. Keys are shown once.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Optional

import typer

from tokenomy.errors import TokenomyError

keys_app = typer.Typer(help="Create, list and revoke API keys (shown once; stored hashed).", no_args_is_help=True)
tenants_app = typer.Typer(help="Create and list tenants (budgets apply to all their keys).", no_args_is_help=True)

DataDir = typer.Option(None, "--data-dir", help="Ledger directory (default: env TOKENOMY_DATA_DIR, else ./.tokenomy).")
Json = typer.Option(False, "--json", help="Print one JSON object.")
BudgetUsd = typer.Option(None, "--budget-usd", help="Hard budget in USD (requests beyond it get 429).")
BudgetPeriod = typer.Option("total", "--budget-period", help="total | daily | monthly (UTC calendar).")
SoftBudgetUsd = typer.Option(None, "--soft-budget-usd", help="Soft budget in USD (warning header + audit event).")


def _choose_data_dir(data_dir: Optional[Path]) -> Path:
    """--data-dir, else $TOKENOMY_DATA_DIR, else ./.tokenomy if it holds a ledger, else the ledger
    of the one running gateway; never silently a fresh ledger that no gateway reads."""
    import os

    from tokenomy.gateway.registry import running
    from tokenomy.metering import default_data_dir
    from tokenomy.metering.backends import ENV_LEDGER_URL, ledger_present
    from tokenomy.metering.paths import ENV_DATA_DIR

    if data_dir is not None or os.environ.get(ENV_DATA_DIR) or os.environ.get(ENV_LEDGER_URL):
        return data_dir if data_dir is not None else default_data_dir()
    local = default_data_dir()
    if ledger_present(local):
        return local
    gateways = {g["data_dir"]: g for g in running()}
    if len(gateways) == 1:
        g = next(iter(gateways.values()))
        typer.echo(f"using the ledger of the gateway running on {g['host']}:{g['port']} (pid {g['pid']}): "
                   f"{g['data_dir']}", err=True)
        return Path(g["data_dir"])
    if len(gateways) > 1:
        listed = "; ".join(f"{g['data_dir']} (pid {g['pid']}, port {g['port']})" for g in gateways.values())
        raise TokenomyError(f"several gateways are running on different ledgers, pass --data-dir: {listed}")
    return local


def _open(data_dir: Optional[Path], *, must_exist: bool = False):
    from tokenomy.metering.backends import ledger_present, open_metering

    directory = _choose_data_dir(data_dir)
    if not must_exist and not ledger_present(directory) and data_dir is None:
        typer.echo(f"warning: no gateway is running and {directory} has no ledger: creating a NEW ledger there. "
                   "A gateway started with another --data-dir will not know this key; pass --data-dir to choose.",
                   err=True)
    if must_exist and not ledger_present(directory):
        raise TokenomyError(f"no ledger in {directory}: create a tenant or key first, or pass --data-dir")
    # The CLI never generates the admin key: `tokenomy up` does, and prints it once.
    return open_metering(directory, ensure_admin=False)  # honours TOKENOMY_LEDGER_URL / _REDIS_URL


def _print_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, default=str))


def _spent_usd(m, kind: str, subject: str, period: str | None) -> Decimal:
    """Spend of a key or tenant in its budget's current period (all time without a budget)."""
    from tokenomy.metering.money import from_pusd
    from tokenomy.metering.periods import period_bounds

    since, until = period_bounds(period or "total", time.time())
    return from_pusd(m.ledger.spend_pusd(kind=kind, subject=subject, since=since, until=until))


def _budget_text(budget_usd, period: str | None) -> str:
    from tokenomy.cli.fmt import usd

    if budget_usd is None:
        return "none"
    return f"{usd(budget_usd)} {period}" if period and period != "total" else usd(budget_usd)


@keys_app.command("create")
def keys_create(
    tenant: str = typer.Option(..., "--tenant", help="Tenant of the key (created if missing)."),
    budget_usd: Optional[str] = BudgetUsd,
    budget_period: str = BudgetPeriod,
    soft_budget_usd: Optional[str] = SoftBudgetUsd,
    rpm: Optional[int] = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: Optional[int] = typer.Option(None, "--tpm", help="Tokens per minute."),
    name: Optional[str] = typer.Option(None, "--name", help="A label for the key."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = Json,
) -> None:
    """Create an API key. The key is printed only this once."""
    with _open(data_dir) as m:
        key_id, key = m.create_key(tenant, budget_usd=budget_usd, budget_period=budget_period, rpm=rpm, tpm=tpm,
                                   soft_budget_usd=soft_budget_usd, name=name)
        info = next(k for k in m.list_keys(tenant) if k["key_id"] == key_id)
    if as_json:
        _print_json({"key": key, **info})
        return
    typer.echo(key)
    typer.echo(f"key id {key_id}, tenant '{tenant}'. Save the key now: it is stored only as a hash.", err=True)


@keys_app.command("list")
def keys_list(
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Only this tenant's keys."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = Json,
) -> None:
    """List keys (ids, tenants, limits; never the secrets)."""
    from tokenomy.cli.fmt import print_table, usd

    with _open(data_dir, must_exist=True) as m:
        keys = m.list_keys(tenant)
        for k in keys:  # spend in the budget's current period (all time when there is no budget)
            k["spent_usd"] = str(_spent_usd(m, "key", k["key_id"], k["budget_period"] if k["budget_usd"] else None))
    if as_json:
        _print_json({"keys": keys})
        return
    print_table("keys", ["key id", "tenant", "name", "status", "spent", "budget", "rpm", "tpm"],
                [[k["key_id"], k["tenant"], k["name"], "active" if k["active"] else "revoked", usd(k["spent_usd"]),
                  _budget_text(k["budget_usd"], k["budget_period"]), k["rpm"], k["tpm"]] for k in keys],
                numeric=["spent", "rpm", "tpm"])


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="Key id (the part after 'tk-')."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = Json,
) -> None:
    """Revoke a key; a running gateway rejects it within about a second."""
    with _open(data_dir, must_exist=True) as m:
        m.revoke_key(key_id)
    if as_json:
        _print_json({"revoked": key_id})
    else:
        typer.echo(f"revoked key {key_id}")


@tenants_app.command("create")
def tenants_create(
    name: str = typer.Argument(..., help="Tenant name."),
    budget_usd: Optional[str] = BudgetUsd,
    budget_period: str = BudgetPeriod,
    soft_budget_usd: Optional[str] = SoftBudgetUsd,
    data_dir: Optional[Path] = DataDir,
    as_json: bool = Json,
) -> None:
    """Create a tenant, optionally with a budget shared by all its keys."""
    with _open(data_dir) as m:
        tenant = m.create_tenant(name, budget_usd=budget_usd, budget_period=budget_period,
                                 soft_budget_usd=soft_budget_usd)
    if as_json:
        _print_json(tenant)
    else:
        typer.echo(f"created tenant '{name}'")


@tenants_app.command("list")
def tenants_list(data_dir: Optional[Path] = DataDir, as_json: bool = Json) -> None:
    """List tenants and their budgets."""
    from tokenomy.cli.fmt import print_table, usd

    with _open(data_dir, must_exist=True) as m:
        tenants = m.list_tenants()
        for t in tenants:
            t["spent_usd"] = str(_spent_usd(m, "tenant", t["name"], t["budget_period"] if t["budget_usd"] else None))
    if as_json:
        _print_json({"tenants": tenants})
        return
    print_table("tenants", ["tenant", "spent", "budget", "soft budget", "created"],
                [[t["name"], usd(t["spent_usd"]), _budget_text(t["budget_usd"], t["budget_period"]),
                  usd(t["soft_budget_usd"]) if t["soft_budget_usd"] else "none", t["created"]] for t in tenants],
                numeric=["spent"])


def usage(
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Tenant (default: all tenants)."),
    since: Optional[str] = typer.Option(None, "--since", help="ISO time or age: 24h, 7d, 2026-11-01."),
    until: Optional[str] = typer.Option(None, "--until", help="ISO time or age (exclusive)."),
    wide: bool = typer.Option(False, "--wide", help="All columns (errors, cached tokens, price)."),
    by: Optional[str] = typer.Option(None, "--by", help="Also group by the requests' end user or tags: user | tag."),
    only_user: Optional[str] = typer.Option(None, "--user", help="With --by: only this end user's requests."),
    only_tag: Optional[str] = typer.Option(None, "--tag", help="With --by: only requests with this tag (key=value)."),
    data_dir: Optional[Path] = DataDir,
    as_json: bool = Json,
) -> None:
    """Usage totals (requests, tokens, cost, energy) by model and by deployment."""
    import time

    from tokenomy.metering.timeparse import parse_time

    now = time.time()
    since_ts = None if since is None else parse_time(since, now=now, option="--since")
    until_ts = None if until is None else parse_time(until, now=now, option="--until")
    if since_ts is not None and until_ts is not None and until_ts <= since_ts:
        raise TokenomyError(f"--until ({until}) must be after --since ({since})")
    only = None
    if by is not None or only_user is not None or only_tag is not None:
        from tokenomy.dashboard.spend import SpendQueryError, parse_query

        if by is None:
            raise TokenomyError("--user and --tag filter a --by user|tag breakdown: add --by")
        try:
            only = parse_query({"by": by, "user": only_user or "", "tag": only_tag or ""})
        except SpendQueryError as exc:
            raise TokenomyError(f"--{exc.param}: {exc}") from None
    with _open(data_dir, must_exist=True) as m:
        report = m.usage(tenant, since_ts, until_ts)
        if only is not None:
            from tokenomy.ledgerdb import LedgerDB
            from tokenomy.metering.spend_by import usage_by

            db = LedgerDB.for_ledger(m.ledger)
            if db is None:
                raise TokenomyError("--by needs the SQLite or PostgreSQL ledger")
            try:
                report[f"by_{by}"] = usage_by(db, by, tenant, since_ts, until_ts, user=only.user, tag=only.tag)
            finally:
                db.close()
    if as_json:
        _print_json(report)
        return
    from tokenomy.cli.fmt import count, joules, print_table, usd

    who = tenant or "all tenants"
    sections = [("by model", report["by_model"]), ("by deployment", report["by_deployment"])]
    if by is not None:
        scope = "".join(f", {k} {v}" for k, v in (("user", only_user), ("tag", only_tag)) if v)
        sections.append((f"by {by}{scope}", report[f"by_{by}"]))
    for title, groups in sections:
        named = [*groups.items(), ("TOTAL", report)]
        if wide:
            headers = ["name", "requests", "errors", "input tok", "cached tok", "output tok", "cost", "price",
                       "energy"]
            rows = [[n, count(g["requests"]), count(g.get("errors")), count(g["input_tokens"]),
                     count(g.get("cached_input_tokens")), count(g["output_tokens"]), usd(g["cost_usd"]),
                     usd(g["price_usd"]), joules(g["energy_joules"])] for n, g in named]
        else:  # what fits 80 columns: the figures people read first
            headers = ["name", "requests", "tokens in/out", "cost", "energy"]
            rows = [[n, count(g["requests"]), f'{count(g["input_tokens"])} / {count(g["output_tokens"])}',
                     usd(g["cost_usd"]), joules(g["energy_joules"])] for n, g in named]
        print_table(f"usage of {who} {title}", headers, rows, numeric=headers[1:],
                    caption=None if wide else "more columns: --wide")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(tenants_app, name="tenants")
    app.command("usage")(usage)
