"""CLI commands: `keys` (create/list/revoke), `tenants` (create/list) and `usage`.

They open the same ledger as a running gateway (data dir: --data-dir, env TOKENOMY_DATA_DIR,
else ./.tokenomy); SQLite WAL + short transactions make that safe. Keys are shown once.
"""

from __future__ import annotations

import json
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


def _open(data_dir: Optional[Path], *, must_exist: bool = False):
    from tokenomy.metering import default_data_dir
    from tokenomy.metering.backends import ledger_present, open_metering

    directory = data_dir if data_dir is not None else default_data_dir()
    if must_exist and not ledger_present(directory):
        raise TokenomyError(f"no ledger in {directory}: create a tenant or key first, or pass --data-dir")
    # The CLI never generates the admin key: `tokenomy up` does, and prints it once.
    return open_metering(directory, ensure_admin=False)  # honours TOKENOMY_LEDGER_URL / _REDIS_URL


def _print_json(obj: dict) -> None:
    typer.echo(json.dumps(obj, default=str))


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


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
    with _open(data_dir, must_exist=True) as m:
        keys = m.list_keys(tenant)
    if as_json:
        _print_json({"keys": keys})
        return
    _table("keys", ["key id", "tenant", "name", "status", "budget $", "soft $", "rpm", "tpm"],
           [[k["key_id"], k["tenant"], k["name"], "active" if k["active"] else "revoked",
             None if k["budget_usd"] is None else f'{k["budget_usd"]} {k["budget_period"]}',
             k["soft_budget_usd"], k["rpm"], k["tpm"]] for k in keys])


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
    with _open(data_dir, must_exist=True) as m:
        tenants = m.list_tenants()
    if as_json:
        _print_json({"tenants": tenants})
        return
    _table("tenants", ["tenant", "budget $", "period", "soft $", "created"],
           [[t["name"], t["budget_usd"], t["budget_period"], t["soft_budget_usd"], t["created"]] for t in tenants])


def usage(
    tenant: Optional[str] = typer.Option(None, "--tenant", help="Tenant (default: all tenants)."),
    since: Optional[str] = typer.Option(None, "--since", help="ISO time or age: 24h, 7d, 2026-11-01."),
    until: Optional[str] = typer.Option(None, "--until", help="ISO time or age (exclusive)."),
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
    with _open(data_dir, must_exist=True) as m:
        report = m.usage(tenant, since_ts, until_ts)
    if as_json:
        _print_json(report)
        return
    columns = ["requests", "errors", "input_tokens", "output_tokens", "cost_usd", "price_usd", "energy_joules"]
    for title, groups in (("by model", report["by_model"]), ("by deployment", report["by_deployment"])):
        rows = [[name, *(g[c] for c in columns)] for name, g in groups.items()]
        rows.append(["TOTAL", *(report[c] for c in columns)])
        headers = ["name", "requests", "errors", "input tok", "output tok", "cost $", "price $", "energy J"]
        _table(f"usage of {tenant or 'all tenants'} {title}", headers, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
    app.add_typer(tenants_app, name="tenants")
    app.command("usage")(usage)
