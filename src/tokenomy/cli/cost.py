"""CLI: `tokenomy cost` (one deployment) and `tokenomy cost compare` (every accelerator x site)."""

from __future__ import annotations

import json
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    cost = typer.Typer(help="Unit cost: $/Mtok (input, output) and J/token of a deployment.",
                       invoke_without_command=True)
    app.add_typer(cost, name="cost")

    @cost.callback(invoke_without_command=True)
    def one(
        ctx: typer.Context,
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Model id, e.g. llama-3-70b."),
        accelerator: Optional[str] = typer.Option(None, "--accelerator", "-a", help="Accelerator id, e.g. h100."),
        count: int = typer.Option(1, "--count", "-n", min=1, help="Devices per replica (tensor parallel)."),
        site: str = typer.Option("us-va", "--site", "-s", help="Site id (energy price, PUE, carbon)."),
        slo_tpot_ms: Optional[float] = typer.Option(None, "--slo-tpot-ms", help="Max time per output token (ms)."),
        context: int = typer.Option(2048, "--context", "-c", min=1, help="KV tokens per sequence; prompt length."),
        utilization: float = typer.Option(1.0, "--utilization", "-u", help="Busy share of the hour (0-1]."),
        ownership: bool = typer.Option(False, "--ownership", help="Own the hardware (4-year amortisation) instead of renting."),
        provider: Optional[str] = typer.Option(None, "--provider", help="Rental provider (default: the cheapest in the class)."),
        price_class: str = typer.Option("hyperscaler-on-demand", "--price-class", help="Rental price class: "
                                        "hyperscaler-on-demand | neocloud-on-demand | reserved-1y | reserved-3y | spot."),
        dtype: str = typer.Option("bf16", "--dtype", help="Weight format: bf16, fp8 or int4-awq."),
        engine_efficiency: float = typer.Option(1.0, "--engine-efficiency", help="Engine speed-up over the profile."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """$/Mtok and J/token of MODEL on COUNT x ACCELERATOR at SITE (or `cost compare`)."""
        if ctx.invoked_subcommand is not None:
            return
        from tokenomy.catalog import load_catalog
        from tokenomy.catalog.price_classes import check_price_class
        from tokenomy.economics import self_hosted_unit_cost
        from tokenomy.errors import TokenomyError

        if not model or not accelerator:
            raise TokenomyError("cost needs --model and --accelerator (or use `tokenomy cost compare --model ...`)")
        cat = load_catalog()
        uc = self_hosted_unit_cost(
            cat.model(model), cat.accelerator(accelerator), cat.site(site), count=count, dtype=dtype,
            slo_tpot_ms=slo_tpot_ms, context=context, utilization=utilization, ownership=ownership,
            provider=provider, engine_efficiency=engine_efficiency, price_class=check_price_class(price_class))
        out = uc.to_dict()
        if as_json:
            typer.echo(json.dumps(out))
            return
        _print_one(out)

    @cost.command("compare")
    def compare(
        model: str = typer.Option(..., "--model", "-m", help="Model id."),
        slo_tpot_ms: Optional[float] = typer.Option(None, "--slo-tpot-ms", help="Max time per output token (ms)."),
        sites: Optional[str] = typer.Option(None, "--sites", help="Comma-separated site ids (default: all)."),
        accelerators: Optional[str] = typer.Option(None, "--accelerators", help="Comma-separated ids (default: all)."),
        context: int = typer.Option(2048, "--context", "-c", min=1),
        utilization: float = typer.Option(1.0, "--utilization", "-u"),
        ownership: bool = typer.Option(False, "--ownership"),
        dtype: str = typer.Option("bf16", "--dtype"),
        engine_efficiency: float = typer.Option(1.0, "--engine-efficiency"),
        price_class: str = typer.Option("hyperscaler-on-demand", "--price-class", help="Rental price class "
                                        "(accelerators without a price in it are listed as skipped)."),
        top: int = typer.Option(0, "--top", min=0, help="Show only the N cheapest rows (0: all)."),
        all_sites: bool = typer.Option(False, "--all-sites", help="Every accelerator x site (default: the cheapest "
                                       "site per accelerator)."),
        api: bool = typer.Option(True, "--api/--no-api", help="Add API models of the same class as reference rows."),
        plot: Optional[str] = typer.Option(None, "--plot", help="Write a bar chart PNG here."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Every accelerator x site (x devices, where one is not enough) that serves MODEL, cheapest first."""
        from tokenomy.catalog import load_catalog
        from tokenomy.catalog.price_classes import check_price_class
        from tokenomy.economics.compare import api_reference_rows, best_site_per_accelerator, compare_deployments

        check_price_class(price_class)
        cat = load_catalog()
        m = cat.model(model)
        site_list = [cat.site(s) for s in _split(sites)] if sites else list(cat.sites.values())
        acc_list = [cat.accelerator(a) for a in _split(accelerators)] if accelerators else list(cat.accelerators.values())
        rows, skipped = compare_deployments(m, acc_list, site_list, slo_tpot_ms=slo_tpot_ms, context=context,
                                            utilization=utilization, ownership=ownership, dtype=dtype,
                                            engine_efficiency=engine_efficiency, price_class=price_class)
        api_rows = api_reference_rows(m) if api else []
        listed = rows if all_sites else best_site_per_accelerator(rows)
        shown = listed[:top] if top else listed
        if plot:
            from tokenomy.economics.plot import plot_compare

            plot_compare(m.id, rows, api_rows, plot, slo_tpot_ms=slo_tpot_ms)
        if as_json:
            typer.echo(json.dumps({"model": m.id, "slo_tpot_ms": slo_tpot_ms, "context": context, "dtype": dtype,
                                   "price_class": price_class,
                                   "rows": [r.to_dict() for r in shown], "api": [r.to_dict() for r in api_rows],
                                   "skipped": skipped, "plot": plot}))
            return
        _print_compare(m.id, shown, api_rows, skipped, slo_tpot_ms, plot)


def _split(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _fmt(x, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _print_one(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{out['model']} on {out['count']} x {out['accelerator']} at {out['site']} ({out['dtype']})")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("$/Mtok input", _fmt(out["usd_per_mtok_input"], ".4f"))
    t.add_row("$/Mtok output", _fmt(out["usd_per_mtok_output"], ".4f"))
    t.add_row("J/token output (input)", f"{out['joules_per_token_output']:.4f} ({out['joules_per_token_input']:.4f})")
    t.add_row("output tokens/s (input)", f"{out['tokens_per_s']:,.0f} ({out['tokens_per_s_input']:,.0f})")
    t.add_row("batch (memory max)", f"{out['max_batch']} ({out['memory_max_batch']})")
    t.add_row("TPOT", f"{out['tpot_ms']:.1f} ms" + (f" (SLO {out['slo_tpot_ms']:g})" if out["slo_tpot_ms"] else ""))
    t.add_row("$/h (accelerators + energy)",
              f"{out['usd_per_hour']:.3f} ({out['usd_per_hour_accelerators']:.3f} + {out['usd_per_hour_energy']:.3f})")
    t.add_row("power", f"{out['watts']:,.0f} W")
    t.add_row("price", f"{out['price_basis']} {out['price_class'] or ''} {out['price_provider'] or ''} "
                       f"{out['price_kind'] or ''} ({out['price_date']})")
    t.add_row("calibration", out["source"])
    Console().print(t)


def _print_compare(model_id, rows, api_rows, skipped, slo, plot) -> None:
    from rich.console import Console
    from rich.table import Table

    from tokenomy.cli.fmt import usd
    from tokenomy.economics.compare import ranked

    t = Table(title=f"{model_id}: cheapest deployments and API offers" + (f" at TPOT <= {slo:g} ms" if slo else ""))
    for col in ("#", "deployment", "$/Mtok in", "$/Mtok out", "tok/s out", "batch", "TPOT ms", "J/tok", "$/h", "price"):
        t.add_column(col, justify="left" if col in ("deployment", "price") else "right",
                     overflow="fold" if col in ("deployment", "price") else "ellipsis",
                     no_wrap=col not in ("deployment", "price"))
    for i, r in enumerate(ranked(rows, api_rows), 1):  # API offers ranked in, not appended
        if r.price_basis == "api":
            t.add_row(str(i), f"API {r.model}", usd(r.usd_per_mtok_input), usd(r.usd_per_mtok_output),
                      "", "", "", "", "", f"{r.price_provider} list {r.price_date}", style="dim")
            continue
        t.add_row(str(i), f"{r.count}x {r.accelerator} @ {r.site}", usd(r.usd_per_mtok_input),
                  usd(r.usd_per_mtok_output), f"{r.tokens_per_s:,.0f}", str(r.max_batch), f"{r.tpot_ms:.1f}",
                  f"{r.joules_per_token:.3f}", usd(r.usd_per_hour),
                  f"{r.price_provider or r.price_basis} {r.price_date} ({r.source})")
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(t)
    if skipped:
        console.print(f"[dim]skipped {len(skipped)}: " + "; ".join(f"{s['accelerator']}: {s['reason']}" for s in skipped[:6])
                      + (" ..." if len(skipped) > 6 else "") + "[/]")
    if plot:
        console.print(f"chart written to {plot}")
