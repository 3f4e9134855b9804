"""CLI: `tokenomy catalog list accelerators|models|sites|prices` — every name the other commands accept."""

from __future__ import annotations

import json
from typing import Optional

import typer

SECTIONS = ("accelerators", "models", "sites", "prices")


def _cheapest(acc) -> tuple[float | None, str]:
    prices = [p for p in acc.rental_prices if getattr(p, "usd_per_hour", None)]
    if not prices:
        return None, ""
    best = min(prices, key=lambda p: p.usd_per_hour)
    return best.usd_per_hour, f"{best.provider} {getattr(best, 'kind', '')} ({best.date})".replace("  ", " ")


def rows_for(section: str, match: str | None) -> list[dict]:
    """Plain dicts per entry (what --json prints)."""
    from tokenomy.catalog import load_catalog
    from tokenomy.catalog.prices import default_price_map

    needle = (match or "").lower()
    keep = lambda *names: not needle or any(needle in str(n).lower() for n in names)  # noqa: E731
    if section == "prices":
        out = []
        for p in default_price_map().all():
            std = p.tiers.get("standard")
            if std is None or not keep(p.id, p.provider):
                continue
            out.append({"id": p.id, "provider": p.provider, "mode": p.mode,
                        "usd_per_mtok_input": std.input * 1e6, "usd_per_mtok_output": std.output * 1e6,
                        "usd_per_mtok_cached_input": None if std.cached_input is None else std.cached_input * 1e6,
                        "max_input_tokens": p.max_input_tokens, "date": p.date})
        return sorted(out, key=lambda r: r["id"])
    cat = load_catalog()
    if section == "accelerators":
        out = []
        for a in cat.accelerators.values():
            usd_h, where = _cheapest(a)
            if keep(a.id, a.name, a.vendor):
                out.append({"id": a.id, "name": a.name, "memory_gb": a.memory_gb, "bf16_tflops": a.bf16_tflops,
                            "memory_tb_per_s": a.memory_tb_per_s, "cheapest_usd_per_hour": usd_h,
                            "cheapest_price": where})
        return sorted(out, key=lambda r: r["id"])
    if section == "models":
        return sorted(({"id": m.id, "name": m.name, "family": m.family, "params_b": m.total_params_b,
                        "active_params_b": m.active_params_b, "context_length": m.context_length}
                       for m in cat.models.values() if keep(m.id, m.name, m.family)), key=lambda r: r["id"])
    return sorted(({"id": s.id, "name": s.name, "country": s.country, "usd_per_kwh": s.usd_per_kwh, "pue": s.pue,
                    "gco2_per_kwh": s.gco2_per_kwh} for s in cat.sites.values() if keep(s.id, s.name, s.country)),
                  key=lambda r: r["usd_per_kwh"])


def register(app: typer.Typer) -> None:
    catalog = typer.Typer(help="What the catalog knows: accelerators, models, sites, API prices.",
                          no_args_is_help=True)
    app.add_typer(catalog, name="catalog")

    @catalog.command("list")
    def list_(
        section: str = typer.Argument(..., help="accelerators | models | sites | prices"),
        match: Optional[str] = typer.Option(None, "--match", help="Only entries whose id/name contains this."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """List every entry of a catalog section (sites: cheapest energy first)."""
        from tokenomy.cli.fmt import count, print_table, usd
        from tokenomy.errors import UnknownNameError

        if section not in SECTIONS:
            raise UnknownNameError("catalog section", section, SECTIONS)
        rows = rows_for(section, match)
        if as_json:
            typer.echo(json.dumps({section: rows}))
            return
        title = f"{section} ({len(rows)})"
        if section == "accelerators":
            print_table(title, ["id", "name", "memory GB", "bf16 TFLOP/s", "cheapest $/h", "from"],
                        [[r["id"], r["name"], f"{r['memory_gb']:g}", f"{r['bf16_tflops']:g}",
                          usd(r["cheapest_usd_per_hour"]), r["cheapest_price"]] for r in rows],
                        numeric=["memory GB", "bf16 TFLOP/s", "cheapest $/h"])
        elif section == "models":
            print_table(title, ["id", "family", "params B", "context"],
                        [[r["id"], r["family"], f"{r['params_b']:g}", count(r["context_length"])] for r in rows],
                        numeric=["params B", "context"])
        elif section == "sites":
            print_table(title, ["id", "name", "$/kWh", "PUE", "gCO2/kWh"],
                        [[r["id"], r["name"], usd(r["usd_per_kwh"]), f"{r['pue']:.2f}", f"{r['gco2_per_kwh']:g}"]
                         for r in rows], numeric=["$/kWh", "PUE", "gCO2/kWh"])
        else:
            print_table(title, ["id", "provider", "$/Mtok in", "$/Mtok out"],
                        [[r["id"], r["provider"], usd(r["usd_per_mtok_input"]), usd(r["usd_per_mtok_output"])]
                         for r in rows], numeric=["$/Mtok in", "$/Mtok out"])
