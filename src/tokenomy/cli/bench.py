"""CLI: `tokenomy bench` — benchmark OpenAI-compatible endpoints side by side, priced per token."""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer

_ENDPOINT_HELP = ("NAME=URL[,model=M][,api-key-env=VAR][,price=PRICESPEC][,header=K:V][,timeout=S]; repeat for "
                  "several. PRICESPEC: a price-map id (gpt-4o-mini), in:0.15/out:0.60 (USD/Mtok) or h100x1@us-va "
                  "(self-hosted: hourly cost at the measured throughput; add :ownership for owned hardware).")


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        endpoint: list[str] = typer.Option([], "--endpoint", "-e", help=_ENDPOINT_HELP),
        workload: str | None = typer.Option(None, "--workload", "-w",
                                            help="Trace CSV (arrived_at,num_prefill_tokens,num_decode_tokens) "
                                                 "or a shipped trace: conv, code."),
        synthetic: str | None = typer.Option(None, "--synthetic", help="Fixed lengths, e.g. in=512,out=128 "
                                                                       "(default when no --workload)."),
        rate: str | None = typer.Option(None, "--rate", "-r", help="Poisson arrivals, requests/s; a list "
                                                                    "(1,2,4) sweeps; inf = all at once."),
        concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1,
                                               help="Closed loop: this many clients, each sending back to back."),
        duration: float | None = typer.Option(None, "--duration", "-d", min=0.001,
                                              help="Stop starting requests after this many seconds (per run)."),
        requests: int | None = typer.Option(None, "--requests", "-n", min=1,
                                            help="Requests per run (default 100 when no --duration)."),
        slo_ttft_ms: float | None = typer.Option(None, "--slo-ttft-ms", min=0.0, help="TTFT SLO for goodput."),
        slo_tpot_ms: float | None = typer.Option(None, "--slo-tpot-ms", min=0.0, help="TPOT SLO for goodput."),
        report: Path | None = typer.Option(None, "--report", help="Write a self-contained HTML report here."),
        judge: str | None = typer.Option(None, "--judge", help="Judge endpoint for quality (1-10 rating of "
                                                                "sampled answers): the NAME of an --endpoint, or "
                                                                "NAME=URL[,model=...]. An emulator as judge gives "
                                                                "meaningless scores."),
        judge_samples: int = typer.Option(8, "--judge-samples", min=1, help="Answers judged per endpoint."),
        prompts: Path | None = typer.Option(None, "--prompts", help="Text file, one real prompt per line: used "
                                                                     "as the start of each sized prompt."),
        terms: Path | None = typer.Option(None, "--terms", help="YAML of committed terms per provider "
                                                                 "(price, TTFT/TPOT SLO, availability)."),
        from_ledger: bool = typer.Option(False, "--from-ledger", help="Check --terms against the gateway "
                                                                       "ledger's traffic instead of a benchmark."),
        data_dir: Path | None = typer.Option(None, "--data-dir", help="Gateway data dir (with --from-ledger)."),
        since: str = typer.Option("24h", "--since", help="With --from-ledger: start (24h, 7d, ISO date)."),
        until: str | None = typer.Option(None, "--until", help="With --from-ledger: end (default now)."),
        timeout: float = typer.Option(60.0, "--timeout", min=0.001, help="Per-request timeout, seconds."),
        seed: int = typer.Option(0, "--seed", help="Seed of arrivals and prompts."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object: {\"endpoints\": {NAME: ...}}."),
    ) -> None:
        """Benchmark endpoints (TTFT, TPOT, ITL, E2E, throughput, goodput, errors) and price them per token.

        Example: tokenomy bench -e a=http://127.0.0.1:9001/v1,price=h100x1@us-va
        -e b=https://api.openai.com/v1,model=gpt-4o-mini,api-key-env=OPENAI_API_KEY,price=gpt-4o-mini
        --synthetic in=512,out=128 --rate 1,2,4 --requests 50 --report bench.html
        """
        from tokenomy.errors import TokenomyError

        try:
            if from_ledger:
                out = _from_ledger(terms, data_dir, since, until, endpoint)
                _emit_ledger(out, as_json)
                return
            _run(endpoint, workload, synthetic, rate, concurrency, duration, requests, slo_ttft_ms, slo_tpot_ms,
                 report, judge, judge_samples, prompts, terms, timeout, seed, as_json)
        except TokenomyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


def _workload(workload: str | None, synthetic: str | None, requests: int | None):  # type: ignore[no-untyped-def]
    from tokenomy.bench.spec import parse_synthetic
    from tokenomy.errors import TokenomyError

    if workload and synthetic:
        raise TokenomyError("give --workload or --synthetic, not both")
    if workload:
        from tokenomy.fleet.workload import load_trace

        trace = load_trace(workload)
        if len(trace) == 0:
            raise TokenomyError(f"workload {workload} has no requests")
        n = min(len(trace), requests or 10_000)
        t0 = float(trace.arrived_at[0])
        lengths = [(max(1, int(p)), max(1, int(o)))
                   for p, o in zip(trace.prompt_tokens[:n], trace.output_tokens[:n])]
        arrivals = [float(t) - t0 for t in trace.arrived_at[:n]]
        desc = {"trace": workload, "requests_in_trace": len(trace),
                "mean_input_tokens": sum(p for p, _ in lengths) / n,
                "mean_output_tokens": sum(o for _, o in lengths) / n}
        return lengths, arrivals, desc
    spec = parse_synthetic(synthetic or "in=512,out=128")
    desc = {"synthetic": f"in={spec.input_tokens},out={spec.output_tokens}"}
    return [(spec.input_tokens, spec.output_tokens)], None, desc


def _run(endpoint, workload, synthetic, rate, concurrency, duration, requests,  # type: ignore[no-untyped-def]
         slo_ttft_ms, slo_tpot_ms, report, judge, judge_samples, prompts, terms, timeout, seed, as_json) -> None:
    from tokenomy.bench.metrics import Slo
    from tokenomy.bench.run import BenchConfig, run_bench_sync
    from tokenomy.bench.spec import parse_endpoint, parse_endpoints, parse_rates
    from tokenomy.bench.terms import load_terms
    from tokenomy.errors import TokenomyError

    if not endpoint:
        raise TokenomyError("give at least one --endpoint NAME=URL (or --from-ledger with --terms)")
    specs = parse_endpoints(endpoint)
    if rate is not None and concurrency is not None:
        raise TokenomyError("give --rate or --concurrency, not both")
    rates = parse_rates(rate) if rate is not None else None
    if requests is None and duration is None:
        requests = 100
    lengths, arrivals, desc = _workload(workload, synthetic, requests)
    judge_spec = None
    if judge:
        by_name = {s.name: s for s in specs}
        judge_spec = by_name.get(judge) or (parse_endpoint(judge) if "=" in judge else None)
        if judge_spec is None:
            raise TokenomyError(f"--judge '{judge}' is not an --endpoint name; give NAME or NAME=URL[,model=M]")
    seed_texts = None
    if prompts is not None:
        try:
            seed_texts = [ln.strip() for ln in prompts.expanduser().read_text().splitlines() if ln.strip()]
        except OSError as exc:
            raise TokenomyError(f"{prompts}: cannot read prompts ({exc.strerror or exc})") from None
        if not seed_texts:
            raise TokenomyError(f"{prompts}: no prompts in the file")
    cfg = BenchConfig(
        endpoints=specs, lengths=lengths, rates=rates, concurrency=concurrency, arrivals_s=arrivals,
        max_requests=requests, duration_s=duration, slo=Slo(slo_ttft_ms, slo_tpot_ms), timeout_s=timeout,
        seed=seed, seed_texts=seed_texts, judge=judge_spec, judge_samples=judge_samples,
        terms=load_terms(terms) if terms else None, workload=desc,
    )
    if report is not None:
        _check_writable(report)
    progress = None if as_json else _RichProgress()
    try:
        result = run_bench_sync(cfg, progress)
    finally:
        if progress is not None:
            progress.close()
    report_path = None
    if report is not None:
        from tokenomy.bench.report import write_report

        report_path = write_report(result, report)
    out = result.to_dict()
    out["report"] = str(report_path) if report_path else None
    if as_json:
        typer.echo(json.dumps(out, default=_json_default))
    else:
        _print_table(out)
        if report_path:
            typer.echo(f"report: {report_path}")
    if all(e["requests_ok"] == 0 for e in out["endpoints"].values()):
        typer.echo("error: every request to every endpoint failed (see the errors column / error_examples)", err=True)
        raise typer.Exit(1)


def _check_writable(path: Path) -> None:
    from tokenomy.errors import TokenomyError

    parent = path.expanduser().resolve().parent
    if not parent.exists():
        raise TokenomyError(f"--report {path}: directory {parent} does not exist")
    if path.exists() and path.is_dir():
        raise TokenomyError(f"--report {path} is a directory")


def _json_default(o: object) -> object:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


class _RichProgress:
    """One rich progress bar per run (endpoint x load level), on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[errors]} errors"), TimeElapsedColumn(),
                           console=Console(stderr=True), transient=False)
        self._tasks: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._p.start()

    def start(self, label: str, total: int | None) -> None:
        self._tasks[label] = self._p.add_task(label, total=total, errors=0)
        self._done[label] = self._errors[label] = 0

    def advance(self, label: str, result) -> None:  # type: ignore[no-untyped-def]
        self._done[label] += 1
        self._errors[label] += 0 if result.ok else 1
        self._p.update(self._tasks[label], completed=self._done[label], errors=self._errors[label])

    def finish(self, label: str) -> None:  # a duration-bounded run: the total is what was sent
        self._p.update(self._tasks[label], total=self._done[label], completed=self._done[label])

    def close(self) -> None:
        self._p.stop()


def _f(v: object, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _load_text(run: dict) -> str:
    if run.get("concurrency") is not None:
        return f"c={run['concurrency']}"
    rate = run.get("rate_per_s")
    return "trace" if rate is None else ("max" if rate == "inf" else f"{rate:g}/s")


def _print_table(out: dict) -> None:
    """One row per endpoint and load level (a --rate sweep shows every rate, not only the last)."""
    from rich.table import Table

    from tokenomy.cli.fmt import usd

    eps = out["endpoints"]
    judged = any(e.get("quality") for e in eps.values())
    checked = any(e.get("compliance") for e in eps.values())
    t = Table(title="tokenomy bench")
    cols = ["endpoint", "load", "ok", "errors", "TTFT p50/p99 ms", "TPOT p50/p99 ms", "E2E p50 ms", "in/out tok",
            "out tok/s", "goodput req/s", "$/Mtok in", "$/Mtok out", "$/1k req"]
    cols += ["quality"] * judged + ["terms"] * checked
    for col in cols:
        text = col in ("endpoint", "errors", "load")
        t.add_column(col, justify="left" if text else "right", overflow="fold" if text else "ellipsis")
    for name, e in eps.items():
        comp = e.get("compliance")
        runs = e.get("sweep") or [e]
        for i, r in enumerate(runs):
            errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items() if v) or "0"
            row = [name if i == 0 else "", _load_text(r if e.get("sweep") else _only_load(out)),
                   f"{r['requests_ok']}/{r['requests']}", errs,
                   f"{_f(r['ttft_ms']['p50'])}/{_f(r['ttft_ms']['p99'])}",
                   f"{_f(r['tpot_ms']['p50'], 2)}/{_f(r['tpot_ms']['p99'], 2)}", _f(r["e2e_ms"]["p50"]),
                   f"{_f(r['mean_input_tokens'], 0)}/{_f(r['mean_output_tokens'], 0)}",
                   _f(r["output_tokens_per_s"]), _f(r["goodput_rps"], 2), usd(r["usd_per_mtok_input"]),
                   usd(r["usd_per_mtok_output"]), usd(r["usd_per_1k_requests"])]
            if judged:
                row.append(_f((e.get("quality") or {}).get("mean_score")) if i == len(runs) - 1 else "")
            if checked:
                row.append(("–" if comp is None else ("met" if comp["compliant"] else "BREACHED"))
                           if i == len(runs) - 1 else "")
            t.add_row(*row)
    console = _console()
    console.print(t)
    for line in length_warnings(out):
        console.print(f"[yellow]{line}[/]")


def _only_load(out: dict) -> dict:
    """The load of a single-run endpoint, in the shape of a sweep row."""
    load = out.get("load") or {}
    rates = load.get("rates_per_s") or [None]
    return {"rate_per_s": rates[-1], "concurrency": load.get("concurrency")}


def length_warnings(out: dict) -> list[str]:
    """Endpoints whose achieved mean output length is off the requested one by > 5 %: their
    $/Mtok and tokens/s are not comparable with the others'."""
    spec = (out.get("workload") or {}).get("synthetic")
    if not spec:
        return []
    wanted = int(dict(kv.split("=") for kv in spec.split(","))["out"])
    lines = []
    for name, e in out["endpoints"].items():
        got = e.get("mean_output_tokens")
        if got and abs(got - wanted) > 0.05 * wanted:
            lines.append(f"{name}: mean output {got:.0f} tokens, requested {wanted} (the endpoint stopped early "
                         "and ignores ignore_eos/min_tokens): per-token figures are not like for like")
    return lines


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=200)


def _from_ledger(terms: Path | None, data_dir: Path | None, since: str, until: str | None,
                 endpoint: list[str]) -> dict:
    import time

    from tokenomy.bench.ledger import read_ledger
    from tokenomy.bench.terms import check_terms, load_terms
    from tokenomy.errors import TokenomyError
    from tokenomy.metering.timeparse import parse_time

    if terms is None:
        raise TokenomyError("--from-ledger needs --terms FILE.yaml (the providers' committed terms)")
    if data_dir is None:
        raise TokenomyError("--from-ledger needs --data-dir (the gateway's data directory)")
    if endpoint:
        raise TokenomyError("--from-ledger reads the gateway's traffic: do not give --endpoint")
    committed = load_terms(terms)
    now = time.time()
    t0 = parse_time(since, now=now, option="--since")
    t1 = parse_time(until, now=now, option="--until") if until else None
    stats = read_ledger(data_dir, t0, t1, deployments=committed)
    from tokenomy.bench.ledger import DeploymentStats

    out: dict = {"endpoints": {}, "source": "ledger", "data_dir": str(data_dir), "since": t0, "until": t1 or now}
    for name, term in committed.items():
        s = stats.get(name) or DeploymentStats(name)
        out["endpoints"][name] = {**s.to_dict(), "compliance": check_terms(term, s.measured())}
    return out


def _emit_ledger(out: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(out, default=_json_default))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="contract compliance from the gateway ledger")
    for col in ("deployment", "requests", "availability %", "TTFT p90 ms", "$/Mtok in", "$/Mtok out", "terms"):
        t.add_column(col, justify="left" if col == "deployment" else "right")
    for name, e in out["endpoints"].items():
        avail = e["availability"]
        t.add_row(name, str(e["requests"]), _f(None if avail is None else avail * 100, 2), _f(e["ttft_ms"]["p90"]),
                  _f(e["usd_per_mtok_input"], 4), _f(e["usd_per_mtok_output"], 4),
                  "met" if e["compliance"]["compliant"] else "BREACHED")
    _console().print(t)
