"""CLI: `invoice`, `margins`, and `pricing simulate` (billing area).

Plans come from --plans, else env TOKENOMY_PLANS, else DATA_DIR/plans.yaml if present; with no
plans file every tenant pays the gateway's list price. Invoices read the ledger read-only (the
PostgreSQL ledger when TOKENOMY_LEDGER_URL is set, else DATA_DIR/ledger.db) and store closed
invoices in DATA_DIR/billing.db.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

from tokenomy.errors import TokenomyError

ENV_PLANS = "TOKENOMY_PLANS"
PlansOpt = typer.Option(None, "--plans", help="Plans YAML (default: env TOKENOMY_PLANS, else DATA_DIR/plans.yaml).")
DataDirOpt = typer.Option(None, "--data-dir", help="Ledger directory (default: env TOKENOMY_DATA_DIR, else ./.tokenomy).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object.")


def _data_dir(data_dir: Optional[Path]) -> Path:
    from tokenomy.metering.paths import default_data_dir

    return data_dir if data_dir is not None else default_data_dir()


def _book(plans: Optional[Path], data_dir: Path | None):
    from tokenomy.billing.plans import empty_book, load_plans

    if plans is not None:
        return load_plans(plans)
    if os.environ.get(ENV_PLANS):
        return load_plans(os.environ[ENV_PLANS])
    if data_dir is not None and (data_dir / "plans.yaml").exists():
        return load_plans(data_dir / "plans.yaml")
    return empty_book()


def _now() -> float:
    """Wall clock; TOKENOMY_BILLING_NOW (epoch s or ISO) pins it for reproducible runs and tests."""
    import time

    value = os.environ.get("TOKENOMY_BILLING_NOW")
    if not value:
        return time.time()
    from tokenomy.billing.plans import to_epoch

    try:
        return to_epoch(float(value) if value.replace(".", "", 1).isdigit() else value)
    except ValueError:
        raise TokenomyError(f"TOKENOMY_BILLING_NOW '{value}' is not a time") from None


def _table(title: str, columns: list[str], rows: list[list], right: set[int] = frozenset()) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="right" if i in right else "left")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    Console().print(table)


def register(app: typer.Typer) -> None:
    @app.command("invoice")
    def invoice(
        tenant: str = typer.Option(..., "--tenant", help="Tenant to bill."),
        period: str = typer.Option(..., "--period", help="Billing month, YYYY-MM (UTC)."),
        fmt: str = typer.Option("text", "--format", help="text | json | html | pdf."),
        plans: Optional[Path] = PlansOpt,
        data_dir: Optional[Path] = DataDirOpt,
        close: bool = typer.Option(False, "--close", help="Close the period: store the invoice immutably."),
        force: bool = typer.Option(False, "--force", help="With --close: close before the grace window ends."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write html/pdf here (pdf default: "
                                                                          "invoice-TENANT-PERIOD.pdf)."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Invoice of TENANT for PERIOD: line items per plan component, credits, total (deterministic)."""
        from tokenomy.billing.periods import parse_period
        from tokenomy.billing.render import to_html, to_pdf
        from tokenomy.billing.service import Billing

        if as_json:
            fmt = "json"
        if fmt not in ("text", "json", "html", "pdf"):
            raise TokenomyError(f"--format must be text, json, html or pdf, not '{fmt}'")
        p = parse_period(period)
        directory = _data_dir(data_dir)
        book = _book(plans, directory)
        billing = Billing.open(directory, book, clock=_now)
        try:
            inv = billing.close_period(tenant, p, force=force) if close else billing.invoice(tenant, p)
        finally:
            billing.close()
        if fmt == "json":
            typer.echo(json.dumps(inv.to_dict(), sort_keys=True))
        elif fmt == "html":
            text = to_html(inv)
            if output:
                output.write_text(text)
                typer.echo(str(output))
            else:
                typer.echo(text, nl=False)
        elif fmt == "pdf":
            path = output or Path(f"invoice-{tenant}-{p.label}.pdf")
            try:
                path.write_bytes(to_pdf(inv))
            except OSError as exc:
                raise TokenomyError(f"cannot write {path}: {exc.strerror}") from None
            typer.echo(str(path))
        else:
            d = inv.to_dict()
            rows = [[li["kind"], li["description"], li["amount_usd"]] for li in d["lines"]]
            rows.append(["", "TOTAL USD", d["total_usd"]])
            _table(f"Invoice {tenant} {p.label} ({d['status']})", ["kind", "description", "USD"], rows, {2})

    @app.command("margins")
    def margins_cmd(
        period: Optional[str] = typer.Option(None, "--period", help="Billing month YYYY-MM (default: this month)."),
        by: str = typer.Option("tenant", "--by", help="tenant | plan | model."),
        plans: Optional[Path] = PlansOpt,
        data_dir: Optional[Path] = DataDirOpt,
        as_json: bool = JsonOpt,
    ) -> None:
        """Revenue vs serving cost and energy per tenant/plan/model; share of tenants with negative margin."""
        from tokenomy.billing.margins import margins
        from tokenomy.billing.periods import parse_period, period_of
        from tokenomy.billing.service import Billing

        p = parse_period(period) if period else period_of(_now())
        directory = _data_dir(data_dir)
        billing = Billing.open(directory, _book(plans, directory), clock=_now)
        from tokenomy.allocation.report import allocated_by_request
        from tokenomy.allocation.store import CapacityStore

        store = CapacityStore.open(directory)
        try:
            out = margins(billing, p, by, allocation=allocated_by_request(store, p.start, p.end))
        finally:
            billing.close()
            store.close()
        if as_json:
            typer.echo(json.dumps(out))
            return
        c = lambda v: f"{float(v):,.2f}"  # noqa: E731  display only; --json has the exact amounts
        rows = [[r["key"], r["tenants"], r["requests"], c(r["revenue_usd"]), c(r["cost_usd"]), c(r["margin_usd"]),
                 "" if r["margin_share"] is None else f"{100 * r['margin_share']:.1f}%", f"{r['energy_kwh']:.3f}"]
                for r in [*out["rows"], out["total"]]]
        _table(f"Margins {p.label} by {by}", [by, "tenants", "requests", "revenue USD", "cost USD", "margin USD",
                                              "margin", "energy kWh"], rows, {1, 2, 3, 4, 5, 6, 7})
        if float(out["total"]["idle_usd"]):
            typer.echo(f"idle cost of self-hosted deployments: {c(out['total']['idle_usd'])} USD; margin after idle "
                       f"{c(out['total']['margin_after_idle_usd'])} USD")
        typer.echo(f"tenants with negative margin: {len(out['negative_margin_tenants'])} of {out['tenants']} "
                   f"({100 * out['negative_margin_share']:.1f}%)")

    pricing = typer.Typer(help="Pricing: simulate plans against heavy-tailed usage.", no_args_is_help=True)
    app.add_typer(pricing, name="pricing")

    @pricing.command("simulate")
    def simulate_cmd(
        plans: Path = typer.Option(..., "--plans", help="Plans YAML (e.g. examples/plans.yaml)."),
        users: int = typer.Option(10000, "--users", min=1, help="Simulated users."),
        usage: str = typer.Option("lognormal:14.2,1.5", "--usage",
                                  help="lognormal:MU,SIGMA of monthly tokens per user (natural log)."),
        from_ledger: bool = typer.Option(False, "--usage-from-ledger", help="Resample tenant-months from the ledger."),
        data_dir: Optional[Path] = DataDirOpt,
        route_mix: Optional[List[str]] = typer.Option(None, "--route-mix",
                                                      help="GROUP=SHARE of traffic sent to another model group "
                                                           "(repeat, or comma-separate)."),
        elasticity: float = typer.Option(0.0, "--elasticity", min=0.0, help="Price elasticity of demand (>= 0)."),
        target_margin: float = typer.Option(0.2, "--target-margin", help="Margin share the recommended cap aims at."),
        output_share: float = typer.Option(0.25, "--output-share", min=0.0, max=1.0, help="Output share of tokens."),
        cached_share: float = typer.Option(0.2, "--cached-share", min=0.0, max=1.0, help="Cached share of input."),
        tokens_per_request: float = typer.Option(2000.0, "--tokens-per-request", min=1.0),
        active_days: float = typer.Option(22.0, "--active-days", min=1.0, max=31.0, help="Active days per month."),
        active_hours: float = typer.Option(6.0, "--active-hours", min=0.1, max=24.0, help="Active hours per day."),
        seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same numbers)."),
        plot: Optional[Path] = typer.Option(None, "--plot", help="Write a margin-per-user histogram PNG here."),
        as_json: bool = JsonOpt,
    ) -> None:
        """Per plan: revenue, serving cost, margin distribution, unprofitable share, cap/tier/routing effects."""
        import numpy as np

        from tokenomy.billing import simulate as sim
        from tokenomy.billing.plans import load_plans

        if not -1 < target_margin < 1:
            raise TokenomyError(f"--target-margin must be in (-1, 1), not {target_margin}")
        book = load_plans(plans)
        a = sim.Assumptions(output_share=output_share, cached_share=cached_share,
                            tokens_per_request=tokens_per_request, active_days=active_days,
                            active_hours=active_hours, elasticity=elasticity, target_margin=target_margin)
        mix = sim.parse_route_mix(route_mix)
        rng = np.random.default_rng(seed)
        if from_ledger:
            from tokenomy.billing.ledger_source import open_ledger_source

            source = open_ledger_source(_data_dir(data_dir))  # honours TOKENOMY_LEDGER_URL
            try:
                pop = sim.resampled_population(users, sim.ledger_samples(source), rng)
            finally:
                source.close()
            usage_desc = "ledger"
        else:
            mu, sigma = sim.parse_usage(usage)
            pop = sim.lognormal_population(users, mu, sigma, a, rng)
            usage_desc = usage
        collect: dict = {}
        out = sim.simulate(book, pop, a, mix, collect)
        out.update(seed=seed, usage_model=usage_desc)
        if plot:
            sim.plot(out, collect, str(plot))
            out["plot"] = str(plot)
        if as_json:
            typer.echo(json.dumps(out))
            return
        rows = []
        for name, r in out["plans"].items():
            rc = r.get("recommended_cap") or {}
            cap = "" if not rc else (f"{rc['limit']} {rc['unit']}/{rc['window']}" if rc.get("limit")
                                  else ("none needed" if "no binding" in rc.get("note", "") else "unreachable"))
            rows.append([name, r["kind"], f"{r['revenue_usd']:,.0f}", f"{r['cost_usd']:,.0f}", f"{r['margin_usd']:,.0f}",
                         "" if r["margin_share"] is None else f"{100 * r['margin_share']:.1f}%",
                         f"{100 * r['unprofitable_share']:.1f}%", f"{r['margin_per_user_usd']['p10']:.2f}",
                         f"{r['margin_per_user_usd']['p50']:.2f}", f"{r['margin_per_user_usd']['p90']:.2f}", cap])
        _table(f"{users} users, {usage_desc}, seed {seed}",
               ["plan", "kind", "revenue USD", "cost USD", "margin USD", "margin", "unprofitable",
                "p10", "p50", "p90", "recommended cap"], rows, {2, 3, 4, 5, 6, 7, 8, 9})
        if plot:
            typer.echo(f"plot: {plot}")
