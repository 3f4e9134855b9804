"""CLI commands: `tokenomy simulate` (a deployment on a trace) and `tokenomy plan` (fleet mix)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Optional

import typer

from tokenomy.errors import TokenomyError

TRACE_HELP = ("CSV trace (arrived_at,num_prefill_tokens,num_decode_tokens), 'conv' / 'code' (shipped Splitwise "
              "traces), a Mooncake-format JSONL (timestamp,input_length,output_length,hash_ids; 'mooncake' = the shipped "
              "Kimi conversation slice), synthetic 'poisson:RATE[:SECONDS[:LENGTHS]]' / 'diurnal:...' / "
              "'session:RATE[:SECONDS]' (multi-turn sessions with block hashes), or 'ledger[:DATA_DIR]' "
              "(the gateway's ok events; see --since/--until/--tenant)")
DATA_DIR_HELP = "data dir of the metering ledger and saved plans (default: TOKENOMY_DATA_DIR or ./.tokenomy)"


@contextmanager
def _progress(description: str, enabled: bool):
    """A rich progress bar on stderr; yields a callback(done, total)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


class LedgerOpts:
    """Where and which ledger events: --from-ledger / --trace ledger[:DIR], --data-dir, --since, --until, --tenant."""

    def __init__(self, from_ledger: bool, data_dir: Optional[str], since: Optional[str], until: Optional[str],
                 tenant: Optional[str]):
        import time

        from tokenomy.metering.timeparse import parse_time

        now = time.time()
        self.from_ledger = from_ledger
        self.data_dir_opt = data_dir
        self.since = parse_time(since, now=now, option="--since") if since else None
        self.until = parse_time(until, now=now, option="--until") if until else None
        self.tenant = tenant

    def data_dir(self, trace: Optional[str] = None):
        from pathlib import Path

        from tokenomy.metering.paths import default_data_dir

        if trace and trace.startswith("ledger:") and trace.partition(":")[2]:
            return Path(trace.partition(":")[2]).expanduser()
        return Path(self.data_dir_opt).expanduser() if self.data_dir_opt else default_data_dir()

    def save_dir(self, trace: Optional[str] = None):
        """--data-dir if given, else the ledger's dir of --trace ledger:DIR, else the default."""
        from pathlib import Path

        return Path(self.data_dir_opt).expanduser() if self.data_dir_opt else self.data_dir(trace)


def _is_ledger(trace: Optional[str]) -> bool:
    return trace is not None and (trace == "ledger" or trace.startswith("ledger:"))


def _resolve_trace(trace: Optional[str], lo: LedgerOpts, growth_from_ledger: bool = False) -> str:
    if lo.from_ledger:
        if trace is not None and not _is_ledger(trace):
            raise TokenomyError("give either --trace or --from-ledger, not both")
        return trace or "ledger"
    if trace is None:
        raise TokenomyError("missing --trace (a CSV, conv, code, poisson:RATE, ledger[:DATA_DIR]) or --from-ledger")
    if not _is_ledger(trace):
        if lo.since is not None and growth_from_ledger:
            raise TokenomyError("--since selects the ledger trace; to window the growth fit use --growth ledger:90d")
        if not growth_from_ledger and (lo.since is not None or lo.until is not None or lo.tenant):
            raise TokenomyError("--since/--until/--tenant select ledger events: use them with --trace ledger, "
                                "--from-ledger or --growth ledger")
    return trace


def _load_workload(trace: str, rate_scale: float, start: float, end: Optional[float], limit: Optional[int],
                   seed: int = 0, lo: Optional[LedgerOpts] = None, peak_to_mean: float = 1.5,
                   session_model: Optional[str] = None):
    from tokenomy.fleet.workload import head, load_workload, scale_rate, window

    if _is_ledger(trace):
        from tokenomy.fleet.ledger import load_ledger_workload

        lo = lo or LedgerOpts(True, None, None, None, None)
        tr = load_ledger_workload(lo.data_dir(trace), since=lo.since, until=lo.until, tenant=lo.tenant)
    else:
        tr = load_workload(trace, seed=seed, peak_to_mean=peak_to_mean)
    if start > 0 or end is not None:
        tr = window(tr, start, end)
    if limit is not None:
        tr = head(tr, limit)
    if session_model:
        from tokenomy.fleet.sessions import apply_session_model

        tr = apply_session_model(tr, session_model, seed=seed)
    if rate_scale != 1.0:
        tr = scale_rate(tr, rate_scale)
    return tr


def _parse_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _parse_power_caps(values: list[str]) -> dict[str, float]:
    caps: dict[str, float] = {}
    for item in values:
        site, sep, mw = item.partition("=")
        try:
            if not sep:
                raise ValueError
            caps[site.strip()] = float(mw.strip().lower().removesuffix("mw"))
        except ValueError:
            raise TokenomyError(f"bad --power-cap '{item}': expected SITE=MW, e.g. us-va=0.5") from None
    return caps


def _parse_prices(values: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        acc, sep, usd = item.partition("=")
        try:
            if not sep or float(usd) <= 0:
                raise ValueError
            out[acc.strip()] = float(usd)
        except ValueError:
            raise TokenomyError(f"bad --price '{item}': expected ACCELERATOR=USD_PER_HOUR, e.g. h100=6.88") from None
    return out


def _growth_from_ledger(value: str, lo: LedgerOpts, trace: str) -> dict:
    """`--growth ledger[:WINDOW]`: fit the ledger's daily tokens (WINDOW e.g. 90d; default all
    of it, same --until/--tenant as the trace)."""
    import time

    from tokenomy.fleet.ledger import ledger_growth
    from tokenomy.metering.timeparse import parse_time

    window = value.strip().partition(":")[2]
    since = parse_time(window, now=time.time(), option="--growth ledger:WINDOW") if window else None
    return ledger_growth(lo.data_dir(trace if _is_ledger(trace) else None), since=since, until=lo.until,
                         tenant=lo.tenant)


def _save(data_dir, name: str, doc: dict) -> str:
    from tokenomy.fleet.saved import save_result

    return str(save_result(data_dir, name, doc))


def _parse_growth(value: str) -> float:
    v = value.strip().lower().replace(" ", "").removesuffix("/month").removesuffix("/mo")
    try:
        return float(v.removesuffix("%")) / 100.0 if v.endswith("%") else float(v)
    except ValueError:
        raise TokenomyError(f"bad --growth '{value}': expected e.g. 8%/month") from None


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate_cmd(
        trace: Optional[str] = typer.Option(None, "--trace", help=TRACE_HELP),
        from_ledger: bool = typer.Option(False, "--from-ledger", help="the workload is the metering ledger's ok events"),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
        since: Optional[str] = typer.Option(None, "--since", help="ledger events from (7d, 24h, 2026-11-01)"),
        until: Optional[str] = typer.Option(None, "--until", help="ledger events before"),
        tenant: Optional[str] = typer.Option(None, "--tenant", help="ledger events of this tenant only"),
        save: Optional[str] = typer.Option(None, "--save", help="also write the JSON to <data-dir>/plans/NAME.json (dashboard)"),
        model: str = typer.Option("llama-3-8b", "--model", help="catalog model id"),
        accelerator: str = typer.Option("h100", "--accelerator", help="catalog accelerator id"),
        replicas: int = typer.Option(1, "--replicas", min=1, help="replicas behind the load balancer"),
        count: int = typer.Option(1, "--count", min=1, help="devices per replica (tensor parallel)"),
        dtype: str = typer.Option("bf16", "--dtype", "--quant", help="weight format: bf16 | fp8 | int4-awq"),
        kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV-cache format: bf16 | fp8"),
        site: Optional[str] = typer.Option(None, "--site", help="catalog site id: energy x PUE x price in the cost"),
        provider: Optional[str] = typer.Option(None, "--provider", help="rental price of this provider only (an error where it lists none)"),
        price_class: str = typer.Option("hyperscaler-on-demand", "--price-class",
                                         help="rental prices of one class, never mixed: hyperscaler-on-demand | "
                                              "neocloud-on-demand | reserved-1y | reserved-3y | spot"),
        rate_scale: float = typer.Option(1.0, "--rate-scale", help="multiply the arrival rate"),
        start: float = typer.Option(0.0, "--start", help="window start (s after the trace start)"),
        end: Optional[float] = typer.Option(None, "--end", help="window end (s)"),
        limit: Optional[int] = typer.Option(None, "--limit", help="first N requests only"),
        seed: int = typer.Option(0, "--seed", help="seed of synthetic workloads"),
        slo_ttft_ms: Optional[float] = typer.Option(None, "--slo-ttft-ms"),
        slo_tpot_ms: Optional[float] = typer.Option(None, "--slo-tpot-ms"),
        max_num_seqs: int = typer.Option(256, "--max-num-seqs", help="max running sequences per replica"),
        max_batched_tokens: int = typer.Option(2048, "--max-batched-tokens", help="token budget per step"),
        kv_policy: str = typer.Option("preempt", "--kv-policy", help="preempt (vLLM recompute) | reserve"),
        session_model: Optional[str] = typer.Option(None, "--session-model",
                                                    help="give a trace without hash_ids session block hashes: "
                                                         "mooncake[:BLOCK_TOKENS] (shared system prompt + multi-turn "
                                                         "growth fitted to Kimi's Mooncake trace; 512-token blocks)"),
        lb: str = typer.Option("least-loaded", "--routing", "--lb",
                               help="round-robin | least-loaded | prefix-affinity (replica choice per request)"),
        prefix_cache: bool = typer.Option(True, "--prefix-cache/--no-prefix-cache",
                                          help="keep prompt KV blocks for reuse (needs a trace with hash_ids)"),
        block_tokens: int = typer.Option(16, "--block-tokens", min=1,
                                         help="KV block size (a Mooncake trace's 512-token hash blocks override it)"),
        engine_efficiency: float = typer.Option(1.0, "--engine-efficiency"),
        plot: Optional[str] = typer.Option(None, "--plot", help="write a latency CDF plot (PNG)"),
        as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    ) -> None:
        """Simulate replicas of one deployment serving a request trace (continuous batching)."""
        from tokenomy.catalog import load_catalog
        from tokenomy.catalog.price_classes import check_price_class
        from tokenomy.fleet.deployment import make_deployment
        from tokenomy.fleet.metrics import latency_cdf_plot, summarize
        from tokenomy.fleet.sessions import session_summary
        from tokenomy.fleet.simulator import SchedulerConfig, simulate

        cat = load_catalog()
        site_obj = cat.site(site) if site else None
        dep = make_deployment(model, accelerator, count=count, dtype=dtype, kv_dtype=kv_dtype,
                              engine_efficiency=engine_efficiency, provider=provider, catalog=cat,
                              price_class=check_price_class(price_class))
        lo = LedgerOpts(from_ledger, data_dir, since, until, tenant)
        trace = _resolve_trace(trace, lo)
        tr = _load_workload(trace, rate_scale, start, end, limit, seed, lo, session_model=session_model)
        cfg = SchedulerConfig(max_num_seqs=max_num_seqs, max_batched_tokens=max_batched_tokens,
                              kv_policy=kv_policy, lb=lb, prefix_caching=prefix_cache, block_tokens=block_tokens)
        with _progress(f"simulating {len(tr)} requests", not as_json) as cb:
            result = simulate(tr, dep.step_model, replicas=replicas, config=cfg, progress=cb)
        report = {
            "deployment": {"model": dep.model.id, "accelerator": dep.accelerator.id, "count": count,
                           "dtype": dtype, "kv_dtype": kv_dtype, "replicas": replicas, "site": site,
                           "replica_usd_per_hour": round(dep.usd_per_hour, 6), "price_class": price_class,
                           "provider": provider,
                           "max_kv_tokens": int(dep.step_model.max_kv_tokens), "routing": lb,
                           "prefix_cache": prefix_cache,
                           "perf_source": getattr(dep.step_model, "source", None)},
            "trace": {**tr.summary(), **session_summary(tr)},
            **summarize(result, slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms,
                        replica_usd_per_hour=dep.usd_per_hour, site=site_obj),
        }
        if plot:
            latency_cdf_plot(result, plot, title=f"{dep.label} x{replicas} on {tr.name}",
                             slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms)
            report["plot"] = plot
        report["kind"] = "fleet-simulation"
        if save:
            report["saved"] = _save(lo.save_dir(trace), save, report)
        if as_json:
            typer.echo(json.dumps(report))
            return
        _print_simulation(report)

    @app.command("plan")
    def plan_cmd(
        trace: Optional[str] = typer.Option(None, "--trace", help=TRACE_HELP),
        from_ledger: bool = typer.Option(False, "--from-ledger", help="the workload is the metering ledger's ok events"),
        data_dir: Optional[str] = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
        since: Optional[str] = typer.Option(None, "--since", help="ledger events from (7d, 24h, 2026-11-01)"),
        until: Optional[str] = typer.Option(None, "--until", help="ledger events before"),
        tenant: Optional[str] = typer.Option(None, "--tenant", help="ledger events of this tenant only"),
        save: Optional[str] = typer.Option(None, "--save", help="also write the JSON to <data-dir>/plans/NAME.json (dashboard)"),
        model: str = typer.Option("llama-3-8b", "--model"),
        slo_tpot_ms: float = typer.Option(..., "--slo-tpot-ms", help="time per output token SLO"),
        slo_ttft_ms: float = typer.Option(2000.0, "--slo-ttft-ms", help="time to first token SLO"),
        accelerators: str = typer.Option("l4,a10g,a100-80g,h100", "--accelerators", help="comma-separated catalog ids"),
        sites: Optional[str] = typer.Option(None, "--sites", help="comma-separated catalog site ids (default: none, rental only)"),
        power_cap: list[str] = typer.Option([], "--power-cap", help="SITE=MW facility power cap (repeatable)"),
        rate_scale: float = typer.Option(1.0, "--rate-scale"),
        dtype: str = typer.Option("bf16", "--dtype", "--quant",
                                  help="comma-separated weight formats to choose among: bf16,fp8,int4-awq"),
        kv_dtypes: str = typer.Option("bf16", "--kv-dtype", help="comma-separated KV-cache formats to choose among: bf16,fp8"),
        counts: str = typer.Option("1,2,4,8", "--counts", help="tensor-parallel degrees to consider"),
        provider: Optional[str] = typer.Option(None, "--provider", help="rental prices of this provider only (an error "
                                               "naming the accelerators it lists none for)"),
        price_class: str = typer.Option("hyperscaler-on-demand", "--price-class",
                                         help="rental prices of one class, never mixed: hyperscaler-on-demand | "
                                              "neocloud-on-demand | reserved-1y | reserved-3y | spot"),
        price: list[str] = typer.Option([], "--price", help="ACCELERATOR=USD per device-hour, overrides the catalog (repeatable)"),
        growth: Optional[str] = typer.Option(None, "--growth", help="traffic growth, e.g. 8%/month, or 'ledger[:WINDOW]' "
                                             "(fitted to the ledger's daily tokens, e.g. ledger:90d)"),
        months: int = typer.Option(12, "--months", help="horizon for --growth"),
        attainment_target: float = typer.Option(0.99, "--attainment", help="simulated SLO attainment to reach (share of requests)"),
        overlong: str = typer.Option("exclude", "--overlong", help="requests beyond the model's context length: "
                                     "exclude (reported in the plan) | fail"),
        no_verify: bool = typer.Option(False, "--no-verify", help="skip the simulation check"),
        plot: Optional[str] = typer.Option(None, "--plot", help="write the plan composition plot (PNG)"),
        slo_sweep: Optional[str] = typer.Option(None, "--slo-sweep", help="also plan at these TPOT SLOs (ms), e.g. 20,40,80,120"),
        sweep_plot: Optional[str] = typer.Option(None, "--sweep-plot", help="write the cost vs TPOT SLO plot (PNG)"),
        rate_sweep: Optional[str] = typer.Option(None, "--rate-sweep", help="also plan at these rate scales, e.g. 1,2,4,8"),
        rate_plot: Optional[str] = typer.Option(None, "--rate-plot", help="write the cost vs rate plot (PNG; default sweep 1,2,4,8)"),
        plan_prefix_cache: bool = typer.Option(True, "--prefix-cache/--no-prefix-cache",
                                               help="verify with prefix caching (traces with hash_ids, e.g. mooncake)"),
        session_model: Optional[str] = typer.Option(None, "--session-model",
                                                    help="give a trace without hash_ids session block hashes: "
                                                         "mooncake[:BLOCK_TOKENS] (shared system prompt + multi-turn "
                                                         "growth fitted to Kimi's Mooncake trace; 512-token blocks)"),
        plan_routing: str = typer.Option("least-loaded", "--routing",
                                         help="replica choice in the verification: round-robin | least-loaded | prefix-affinity"),
        autoscale: bool = typer.Option(False, "--autoscale", help="a schedule over the trace's intervals (e.g. a day of "
                                       "--trace diurnal:RATE:86400:conv): reserved base + on-demand (+ spot), one MILP, "
                                       "every interval simulated; --plot draws replicas and cost over the day"),
        interval_minutes: float = typer.Option(60.0, "--interval-minutes", help="--autoscale: scaling interval"),
        min_replicas: int = typer.Option(1, "--min-replicas", help="--autoscale: replicas in service at all times"),
        lead_minutes: float = typer.Option(10.0, "--lead-minutes", help="--autoscale: scale-up lead time (a new replica "
                                           "is started and billed this long before it serves; an assumption)"),
        reserved: Optional[str] = typer.Option(None, "--reserved", help="--autoscale: a reserved base in this class "
                                               "(reserved-1y | reserved-3y), where the catalog prices it"),
        spot: bool = typer.Option(False, "--spot", help="--autoscale: spot replicas on top (price class spot)"),
        spot_interruptions: float = typer.Option(0.05, "--spot-interruptions-per-hour", help="--autoscale --spot: "
                                                 "interruptions per spot replica-hour (an assumption)"),
        check_seconds: float = typer.Option(0.0, "--check-seconds", help="--autoscale: simulate only the first N s of "
                                            "each interval (0: all of it)"),
        peak_to_mean: Optional[float] = typer.Option(None, "--peak-to-mean", help="a diurnal:RATE:... trace's daily "
                                                     "peak over its mean, in [1, 2] (default 1.5)"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Cheapest accelerator mix (and sites) that serves a trace under TTFT/TPOT SLOs (MILP)."""
        from tokenomy.catalog import load_catalog
        from tokenomy.catalog.price_classes import check_price_class
        from tokenomy.fleet.planner import PlanRequest, plan_fleet, plan_growth

        if peak_to_mean is not None and not (trace or "").startswith("diurnal:"):
            raise TokenomyError("--peak-to-mean shapes a synthetic diurnal:RATE[:SECONDS[:LENGTHS]] trace only")
        if autoscale and (slo_sweep or rate_sweep or rate_plot or growth or sweep_plot or sites or power_cap):
            raise TokenomyError("--autoscale plans one schedule: drop --slo-sweep/--rate-sweep/--growth/--sites/--power-cap")
        if not autoscale and (reserved or spot or check_seconds):
            raise TokenomyError("--reserved/--spot/--check-seconds shape an --autoscale schedule: add --autoscale")
        if sweep_plot and not slo_sweep:
            raise TokenomyError("--sweep-plot needs --slo-sweep (the TPOT SLOs to plot), e.g. --slo-sweep 40,80,120")
        if overlong not in ("exclude", "fail"):
            raise TokenomyError(f"bad --overlong '{overlong}': expected exclude or fail")
        cat = load_catalog()
        lo = LedgerOpts(from_ledger, data_dir, since, until, tenant)
        growth_from_ledger = bool(growth) and growth.strip().lower().startswith("ledger")
        trace = _resolve_trace(trace, lo, growth_from_ledger)
        rate_scales = None
        if rate_sweep or rate_plot:
            try:
                rate_scales = [float(v) for v in _parse_list(rate_sweep or "1,2,4,8")]
                if not rate_scales or min(rate_scales) <= 0:
                    raise ValueError
            except ValueError:
                raise TokenomyError(f"bad --rate-sweep '{rate_sweep}': expected scales > 0, e.g. 1,2,4,8") from None
        growth_fit = None
        if growth_from_ledger:
            growth_fit = _growth_from_ledger(growth, lo, trace)  # fails fast, before planning
            monthly_growth = growth_fit["monthly_growth"]
        elif growth:
            monthly_growth = _parse_growth(growth)
        tr = _load_workload(trace, rate_scale, 0.0, None, None, lo=lo,
                            peak_to_mean=1.5 if peak_to_mean is None else peak_to_mean, session_model=session_model)
        req = PlanRequest(
            model=cat.model(model),
            accelerators=tuple(cat.accelerator(a) for a in _parse_list(accelerators)),
            sites=tuple(cat.site(s) for s in _parse_list(sites)) if sites else (),
            power_caps_mw=_parse_power_caps(power_cap),
            dtypes=tuple(_parse_list(dtype)),
            kv_dtypes=tuple(_parse_list(kv_dtypes)),
            counts=tuple(int(c) for c in _parse_list(counts)),
            slo_tpot_ms=slo_tpot_ms,
            slo_ttft_ms=slo_ttft_ms,
            provider=provider,
            price_class=check_price_class(price_class),
            usd_per_hour_overrides=_parse_prices(price),
            attainment_target=attainment_target,
            overlong=overlong,
            prefix_caching=plan_prefix_cache,
            routing=plan_routing,
        )
        slos = None
        if slo_sweep:
            try:
                slos = [float(v) for v in _parse_list(slo_sweep)]
                if not slos or min(slos) <= 0:
                    raise ValueError
            except ValueError:
                raise TokenomyError(f"bad --slo-sweep '{slo_sweep}': expected SLOs > 0 ms, e.g. 20,40,80") from None
        if autoscale:
            from tokenomy.fleet.autoscale import AutoscaleRequest, plan_autoscale

            ar = AutoscaleRequest(interval_minutes=interval_minutes, min_replicas=min_replicas, lead_minutes=lead_minutes,
                                  reserved_class=reserved, spot=spot, spot_interruptions_per_hour=spot_interruptions,
                                  check_seconds=check_seconds)
            ar.validate()  # bad flags fail before any simulation
            with _progress("autoscale plan (simulations run)", not as_json) as cb:
                result = plan_autoscale(tr, req, ar, progress=cb)
            if plot:
                from tokenomy.fleet.plots import autoscale_plot

                autoscale_plot(result, plot)
                result["plot"] = plot
            if save:
                result["saved"] = _save(lo.save_dir(trace), save, result)
            if as_json:
                typer.echo(json.dumps(result))
                return
            _print_autoscale(result)
            return
        with _progress("planning (simulations run)", not as_json) as cb:
            if slos:
                from tokenomy.fleet.planner import plan_with_slo_sweep

                # One search over the sweep and the plan's own SLO, tightest first: each plan
                # bounds the looser ones, and the plan equals its sweep point.
                result, sweep = plan_with_slo_sweep(tr, req, slos, verify=not no_verify, progress=cb)
                result["cost_vs_slo"] = sweep
            else:
                result = plan_fleet(tr, req, verify=not no_verify, progress=cb)
            if growth:
                result["growth"] = plan_growth(tr, req, monthly_growth=monthly_growth, months=months)
                if growth_fit is not None:
                    result["growth"]["fit"] = growth_fit
            if rate_scales:
                from tokenomy.fleet.planner import cost_vs_rate

                result["cost_vs_rate"] = cost_vs_rate(tr, req, rate_scales, verify=not no_verify,
                                                      base_rate_scale=rate_scale, progress=cb)
        if plot:
            from tokenomy.fleet.plots import plan_composition_plot

            plan_composition_plot(result, plot)
            result["plot"] = plot
        if sweep_plot and result.get("cost_vs_slo"):
            from tokenomy.fleet.plots import cost_vs_slo_plot

            cost_vs_slo_plot([p for p in result["cost_vs_slo"] if p["feasible"]], sweep_plot,
                             title=f"{model} on {tr.name}: cost vs TPOT SLO")
            result["sweep_plot"] = sweep_plot
        if rate_plot:
            from tokenomy.fleet.plots import cost_vs_rate_plot

            feasible = [p for p in result["cost_vs_rate"] if p["feasible"]]
            if not feasible:
                raise TokenomyError("no feasible plan at any --rate-sweep scale: nothing to plot")
            cost_vs_rate_plot(feasible, rate_plot, title=f"{model} on {tr.name}: cost vs arrival rate "
                                                         f"(TPOT {slo_tpot_ms:g} ms, TTFT {slo_ttft_ms:g} ms)")
            result["rate_plot"] = rate_plot
        result["kind"] = "fleet-plan"
        if save:
            result["saved"] = _save(lo.save_dir(trace), save, result)
        if as_json:
            typer.echo(json.dumps(result))
            return
        _print_plan(result)


def _fmt(p: dict) -> str:
    return " / ".join("-" if p[k] is None else f"{p[k]:.1f}" for k in ("p50", "p90", "p99"))


def _print_simulation(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    d = r["deployment"]
    kv = f", kv {d['kv_dtype']}" if d.get("kv_dtype", "bf16") != "bf16" else ""
    t = Table(title=f"{d['model']} on {d['replicas']} x ({d['count']} x {d['accelerator']}, {d['dtype']}{kv})",
              show_header=False)
    t.add_row("requests completed", f"{r['requests_completed']} / {r['requests']}")
    t.add_row("TTFT ms p50/p90/p99", _fmt(r["ttft_ms"]))
    t.add_row("TPOT ms p50/p90/p99", _fmt(r["tpot_ms"]))
    t.add_row("E2E ms p50/p90/p99", _fmt(r["e2e_ms"]))
    t.add_row("SLO attainment", f"{r['slo_attainment']:.2%}")
    t.add_row("busy / batch slots / token budget",
              f"{r['busy_share']:.1%} / {r['batch_slot_utilization']:.1%} / {r['token_budget_utilization']:.1%}")
    t.add_row("prefix cache hit share", f"{r['prefix_cache_hit_share']:.1%} of prompt tokens"
              f" ({r['affinity_routed_share']:.0%} routed for affinity)")
    t.add_row("energy (IT)", f"{r['energy_kwh']:.3f} kWh")
    t.add_row("cost", f"${r['cost_usd']:.4f}  (${r['usd_per_mtok']:.4f}/Mtok)" if r["usd_per_mtok"] else f"${r['cost_usd']:.4f}")
    t.add_row("preemptions", str(r["preemptions"]))
    if r.get("saved"):
        t.add_row("saved", r["saved"])
    Console().print(t)


def _print_plan(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    t = Table(title=f"plan: ${r['usd_per_hour']:.2f}/h, ${r['usd_per_mtok']:.4f}/Mtok, "
                    f"SLO attainment {r['slo_attainment'] if r['slo_attainment'] is None else format(r['slo_attainment'], '.2%')}")
    for col in ("accelerator", "count", "dtype", "site", "replicas", "$/h", "load"):
        t.add_column(col)
    for a in r["assignments"]:
        kv = f"+kv-{a['kv_dtype']}" if a.get("kv_dtype", "bf16") != "bf16" else ""
        t.add_row(a["accelerator"], str(a["count"]), a["dtype"] + kv, a["site"] or "-", str(a["replicas"]),
                  f"{a['usd_per_hour']:.2f}", f"{a['utilization_planned']:.0%}")
    c.print(t)
    b = r["best_single"]
    if b:
        c.print(f"best single type: {b['accelerator']} ${b['usd_per_hour']:.2f}/h -> saving {r['saving_fraction']:.1%}")
    if r.get("excluded_overlong"):
        c.print(f"excluded: {r['excluded_overlong']['note']}")
    for s, mw in (r.get("site_mw") or {}).items():
        c.print(f"site {s}: {mw:.4f} MW")
    for m in (r.get("growth") or {}).get("months", []):
        if m["feasible"]:
            c.print(f"month {m['month']:>2}: ${m['usd_per_hour']:.2f}/h ${m['usd_per_mtok']:.4f}/Mtok "
                    f"{' '.join(f'{k}={v}' for k, v in m['replicas'].items())}"
                    + (f"  cap binds: {', '.join(m['caps_binding'])}" if m["caps_binding"] else ""))
        else:
            c.print(f"month {m['month']:>2}: infeasible ({m['binding']} binds)")
    fit = (r.get("growth") or {}).get("fit")
    if fit:
        c.print(f"growth fitted to {fit['days']} days of ledger tokens ({fit['first_day']} .. {fit['last_day']}): "
                f"{fit['daily_growth']:+.2%}/day = {fit['monthly_growth']:+.1%}/month (R^2 {fit['r2']:.2f})")
    for p in r.get("cost_vs_rate") or []:
        if p["feasible"]:
            c.print(f"rate x{p['rate_scale_total']:g} of the trace ({p['rate_per_s']:g}/s): ${p['usd_per_hour']:.2f}/h "
                    f"${p['usd_per_mtok']:.4f}/Mtok vs best single {p['best_single_accelerator']} "
                    f"${p['best_single_usd_per_hour']:.2f}/h")
        else:
            c.print(f"rate x{p['rate_scale_total']:g} of the trace: infeasible: {p['reason']}")
    if r.get("saved"):
        c.print(f"saved: {r['saved']}")
    for p in r.get("cost_vs_slo") or []:
        if p["feasible"]:
            c.print(f"TPOT {p['slo_tpot_ms']:g} ms: ${p['usd_per_hour']:.2f}/h vs best single "
                    f"{p['best_single_accelerator']} ${p['best_single_usd_per_hour']:.2f}/h (saving {p['saving_fraction']:.1%})")
        else:
            c.print(f"TPOT {p['slo_tpot_ms']:g} ms: infeasible: {p['reason']}")


def _print_autoscale(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    classes = r["price_classes"]
    t = Table(title=f"autoscale: {r['model']} on {r['trace']['name']}, {r['intervals']} x {r['interval_minutes']:g} min, "
                    f"TPOT {r['slo_tpot_ms']:g} ms, target {r['attainment_target']:.0%}")
    for col in ("start h", "req/s", "reserved", "on-demand", "spot", "$", "attainment"):
        t.add_column(col, justify="right")

    def by(row: dict, cls: str) -> str:
        return " ".join(f"{k.split('/')[0]}={v[cls]}" for k, v in row["replicas"].items() if v[cls]) or "-"

    for row in r["schedule"]:
        att = row["slo_attainment"]
        t.add_row(f"{row['start_hour']:g}", f"{row['rate_per_s']:.2f}", by(row, "reserved"), by(row, "on_demand"),
                  by(row, "spot"), f"{row['usd']:.2f}", "-" if att is None else f"{att:.2%}")
    c.print(t)
    c.print(f"usd_per_day_static {r['usd_per_day_static']:.2f} ({' '.join(f'{k}={v}' for k, v in r['static_fleet'].items())}, "
            f"{classes['on_demand']})")
    c.print(f"usd_per_day_autoscale_on_demand {r['usd_per_day_autoscale_on_demand']:.2f} "
            f"(saving {r['saving_autoscale_alone']:.1%} from autoscaling alone)")
    c.print(f"usd_per_day {r['usd_per_day']:.2f} (saving {r['saving_vs_static']:.1%} vs static; reserved: "
            f"{classes['reserved'] or 'off'}, spot: {'on' if classes['spot'] else 'off'})")
    for cls, accs in (r.get("not_offered") or {}).items():
        c.print(f"no {cls} price in the catalog for: {', '.join(accs)} (not used in that class)")
    if not r["meets_target"]:
        c.print(f"[red]intervals below the target after {r['replan_rounds']} re-plan rounds: {r['failing_intervals']}[/]")
    c.print(f"{r['simulations']} simulations, {r['replan_rounds']} re-plan rounds")
    if r.get("plot"):
        c.print(f"plot: {r['plot']}")
