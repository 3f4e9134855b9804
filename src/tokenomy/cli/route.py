"""CLI commands: `tokenomy route data|eval|train|choose` (quality routing)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from tokenomy.errors import TokenomyError

route_app = typer.Typer(help="Quality routing: build eval data, evaluate and train routers, choose models.",
                        no_args_is_help=True)

SOURCE_FILES = {"routellm": "routellm_mmlu_gsm8k.jsonl", "alpacaeval": "alpacaeval_per_instruction.jsonl",
                "alpacaeval-groups": "alpacaeval_per_instruction.jsonl"}


def _shared_routing_dir() -> Path:
    return Path(os.environ.get("TOKENOMY_ROUTING_DATA", "../shared/data/routing"))


def _shipped_sample() -> Path | None:
    """The evaluation rows that ship with the project (a source checkout): RouteLLM MMLU/GSM8K and
    AlpacaEval rows already converted, usable at once with `route eval|train --data`."""
    p = Path(__file__).resolve().parents[3] / "tests" / "routing" / "data" / "routing_sample.jsonl"
    return p if p.is_file() else None


def _missing_source(source: str, path: Path) -> TokenomyError:
    where = ("--input PATH" if source not in SOURCE_FILES else
             f"--input PATH (the file {SOURCE_FILES[source]}), or TOKENOMY_ROUTING_DATA=DIR")
    msg = (f"no {source} source data at {path} (the full reference data sits beside the project in "
           f"../shared/data/routing/, not in a clone); give {where}")
    sample = _shipped_sample()
    if sample is not None:
        msg += (f"; or use the 1,000 evaluation rows that ship with the project, already converted: "
                f"tokenomy route eval --data {sample} --by-source")
    return TokenomyError(msg)


def _emit_trained(path: Path, report: dict, text: str, as_json: bool) -> None:
    """A trained artifact's path and validation report: one JSON object, or the report's text."""
    if as_json:
        _emit({"out": str(path), "report": report})
    else:
        typer.echo(text)
        typer.echo(f"wrote {path}")


def _emit(obj: dict) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False))


def _progress(total: int, label: str, enabled: bool):
    """A rich progress bar on stderr (a no-op context when disabled)."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import Progress

    p = Progress(console=Console(stderr=True), transient=True)

    class _Ctx:
        def __enter__(self):
            p.__enter__()
            task = p.add_task(label, total=total)
            return lambda n=1: p.advance(task, n)

        def __exit__(self, *exc):
            return p.__exit__(*exc)

    return _Ctx()


@route_app.command("data")
def data_cmd(
    source: str = typer.Option(..., help="routellm | alpacaeval | alpacaeval-groups (mean of small vs large models) | "
                                         "cascade-alpacaeval | cascade-gsm8k"),
    out: Path = typer.Option(..., help="output JSONL {id, prompt, weak, strong, source}"),
    input: Optional[Path] = typer.Option(None, "--input", help="source file (default: ../shared/data/routing/...)"),
    weak: str = typer.Option("llama-2-7b-chat-hf", help="alpacaeval: weak model"),
    strong: str = typer.Option("gpt4", help="alpacaeval: strong model"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Convert shared routing data to evaluation rows (contaminated / excluded entries dropped)."""
    from tokenomy.routing import cascade
    from tokenomy.routing.quality import data

    if source in cascade.CASCADE_SOURCES:  # rows that also carry the weak model's answer
        if input is not None and not input.exists():
            raise _missing_source(source, input)
        if input is None and not (_shared_routing_dir() / "cascade").is_dir():
            raise _missing_source(source, _shared_routing_dir() / "cascade")
        crows = cascade.load_source(source, _shared_routing_dir() / "cascade", input=input,
                                    weak=weak if source == "cascade-alpacaeval" else None,
                                    strong=None if strong == "gpt4" else strong)
        n = cascade.write_rows(crows, out)
        if as_json:
            _emit({"out": str(out), "n": n, "source": source})
        else:
            typer.echo(f"wrote {n} cascade rows to {out}")
        return
    if source not in SOURCE_FILES:
        raise TokenomyError(f"unknown source '{source}'; known: {', '.join(SOURCE_FILES)}")
    path = input or _shared_routing_dir() / SOURCE_FILES[source]
    if not path.is_file():
        raise _missing_source(source, path)
    if source == "routellm":
        rows = data.convert_routellm(path)
    elif source == "alpacaeval-groups":
        rows = data.convert_alpacaeval_groups(path)
    else:
        rows = data.convert_alpacaeval(path, weak, strong)
    n = data.write_rows(rows, out)
    by_source: dict[str, int] = {}
    for r in rows:
        by_source[r.source] = by_source.get(r.source, 0) + 1
    if as_json:
        _emit({"out": str(out), "n": n, "by_source": by_source})
    else:
        typer.echo(f"wrote {n} rows to {out} ({', '.join(f'{k}: {v}' for k, v in by_source.items())})")


def _read_many(paths: list[Path]):
    from tokenomy.routing.quality.data import read_rows

    rows = []
    for p in paths:
        rows.extend(read_rows(p))
    return rows


@route_app.command("eval")
def eval_cmd(
    data: list[Path] = typer.Option(..., help="evaluation JSONL (repeatable)"),
    router: str = typer.Option("default", help="default (= task) | lexical | mf | embed | random | length | oracle | PATH.npz"),
    model: Optional[Path] = typer.Option(None, help="trained router artifact (.npz)"),
    by_source: bool = typer.Option(False, "--by-source", help="also report each source separately"),
    bootstrap: int = typer.Option(1000, help="bootstrap resamples for the APGR CI (0 = none)"),
    seed: int = typer.Option(0, help="seed (random router, bootstrap)"),
    plot: Optional[Path] = typer.Option(None, help="write the quality vs strong-call-share curve (PNG)"),
    price_ratio: Optional[float] = typer.Option(
        None, "--price-ratio", help="cascades: strong/weak cost per call; adds the cost view vs a prompt-only gate"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """APGR / CPT(50%) / CPT(80%) of a router on labelled rows (RouteLLM's metrics).

    Rows that carry `weak_output` with a cascade verifier (--router cascade-default, or a cascade
    artifact) are scored on (prompt, weak answer): the same metrics over the escalation share."""
    import numpy as np

    from tokenomy.routing import cascade

    if cascade.wants_cascade(router, model):
        crows = [r for p in data for r in cascade.read_rows(p)]
        out = cascade.evaluate(crows, model or router, price_ratio=price_ratio, n_boot=bootstrap, seed=seed,
                               by_source=by_source)
        _emit(out) if as_json else typer.echo(cascade.format_eval(out))
        return

    from tokenomy.routing.quality import load_router, score_prompts
    from tokenomy.routing.quality.metrics import curve, evaluate_scores

    rows = _read_many(data)
    r = load_router(router, model=model, seed=seed, rows=rows)
    prompts = [x.prompt for x in rows]
    with _progress(len(rows), f"scoring with {router}", not as_json) as adv:
        scores = score_prompts(r, prompts, progress=adv)
    weak = np.array([x.weak for x in rows])
    strong = np.array([x.strong for x in rows])
    if strong.mean() <= weak.mean():
        raise TokenomyError("strong mean quality does not exceed weak mean quality: APGR is undefined")
    res = evaluate_scores(scores, weak, strong, n_boot=bootstrap, seed=seed)
    out = {**res.to_json(), "router": router}
    if by_source:
        src = np.array([x.source or "all" for x in rows])
        out["by_source"] = {}
        for s in sorted(set(src)):
            j = src == s
            if strong[j].mean() > weak[j].mean():
                out["by_source"][s] = evaluate_scores(scores[j], weak[j], strong[j], n_boot=bootstrap, seed=seed).to_json()
    if plot:
        from tokenomy.routing.quality.baselines import OracleRouter
        from tokenomy.routing.quality.plot import plot_curves, random_curve

        oracle = OracleRouter(rows)
        curves = {router: curve(scores, weak, strong), "random": random_curve(weak, strong),
                  "oracle": curve([oracle.strong_win_rate(p) for p in prompts], weak, strong)}
        plot_curves(curves, plot, title=f"{router}: APGR {res.apgr:.3f} (n={res.n})")
        out["plot"] = str(plot)
    if as_json:
        _emit(out)
        return
    ci = f" (95% CI {res.apgr_ci[0]:.3f}-{res.apgr_ci[1]:.3f})" if res.apgr_ci else ""
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}%"
    typer.echo(f"{router}: n={res.n} APGR={res.apgr:.3f}{ci} CPT(50%)={fmt(res.cpt50)} CPT(80%)={fmt(res.cpt80)} "
               f"weak={res.weak_mean:.3f} strong={res.strong_mean:.3f}")
    for s, v in out.get("by_source", {}).items():
        typer.echo(f"  {s}: n={v['n']} APGR={v['apgr']:.3f} CPT(50%)={fmt(v['cpt50'])} CPT(80%)={fmt(v['cpt80'])}")
    if plot:
        typer.echo(f"plot: {plot}")


def _print_report(title: str, rep: dict) -> None:
    typer.echo(title)
    for s, v in rep["by_source"].items():
        r, b = v["router"], v["length"]
        ci = r.get("apgr_ci95")
        cis = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        typer.echo(f"  {s:<11} n={r['n']:<6} APGR {r['apgr']:.3f}{cis}  length {b['apgr']:.3f}  "
                   f"diff {v['apgr_minus_length']:+.3f}  CPT50 {r['cpt50']}%  CPT80 {r['cpt80']}%")


@route_app.command("train")
def train_cmd(
    router: str = typer.Option("task", help="task (the default's kind) | lexical | embed | mf | cascade | "
                                            "cascade-logprobs (rows with weak_logprobs)"),
    data: list[Path] = typer.Option([], help="rows JSONL (lexical/embed, repeatable) or AlpacaEval per-instruction JSONL (mf)"),
    from_ledger: bool = typer.Option(False, "--from-ledger", help="also train on feedback labels stored by the gateway"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="gateway data dir (with --from-ledger)"),
    out: Path = typer.Option(..., help="artifact to write (.npz)"),
    seed: int = typer.Option(0, help="seed (folds, initialisation)"),
    c: float = typer.Option(1.0, help="inverse L2 strength (lexical/embed/cascade-logprobs)"),
    sparse_scale: Optional[float] = typer.Option(None, help="lexical: n-gram value scale (default: FeatureSpec's)"),
    balance_sources: bool = typer.Option(False, "--balance-sources", help="lexical: equal total weight per source"),
    format_experts: bool = typer.Option(
        True, "--format-experts/--single-head",
        help="lexical: per-format expert heads (multiple choice, maths word problem, open; gated by the prompt's "
             "form) next to shared weights, the shipped layout; --single-head: one head for every prompt"),
    expert_scale: Optional[float] = typer.Option(
        None, help="lexical: value scale of the per-format n-gram copies (default: the shipped one)"),
    expert_formats: Optional[str] = typer.Option(
        None, help="lexical: comma list of formats with an expert head among multiple_choice, math_word_problem, "
                   "open (default: the shipped ones)"),
    expert_shared: Optional[bool] = typer.Option(
        None, "--expert-shared/--expert-gated",
        help="lexical: expert-format prompts read shared weights plus their head, fitted jointly (--expert-shared), "
             "or their head alone, fitted on their format's rows after a shared head on all rows (--expert-gated; "
             "default: the shipped one)"),
    l2: Optional[float] = typer.Option(None, help="task: pull of the weights towards the hand-set prior (default: shipped)"),
    prior: bool = typer.Option(True, "--prior/--no-prior", help="task: regularise towards the task-kind prior (else 0)"),
    grouped_cv: int = typer.Option(0, "--grouped-cv", help="folds of a CV holding out whole MMLU subjects / AlpacaEval "
                                                          "sub-collections (0 = skip)"),
    cv: int = typer.Option(5, help="folds for the cross-validation report (0 = skip)"),
    loso: bool = typer.Option(True, "--loso/--no-loso", help="also report leave-one-source-out"),
    bootstrap: int = typer.Option(300, help="bootstrap resamples for CIs in reports"),
    weak: str = typer.Option("llama-2-7b-chat-hf", help="mf: weak model of the reported pair"),
    strong: str = typer.Option("gpt4", help="mf: strong model of the reported pair"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Train a router (seeded, reproducible) with a k-fold CV and leave-one-source-out report."""
    if out.suffix != ".npz":
        raise TokenomyError(f"artifact path must end in .npz: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if router == "cascade-logprobs":  # the logprob weights over the default text verifier (rows with weak_logprobs)
        from tokenomy.routing.cascade import logprob_fit

        lrows = [r for p in data for r in logprob_fit.read_logprob_rows(p)]
        v, rep = logprob_fit.fit_logprob_verifier(lrows, folds=cv, loso=loso, seed=seed, l2=1.0 / c)
        path = logprob_fit.save_logprob_verifier(v, out, rep)
        _emit_trained(path, rep, logprob_fit.format_report(rep), as_json)
        return
    if router == "cascade":  # the learned answer verifier, on rows carrying weak_output
        from tokenomy.routing import cascade

        crows = [r for p in data for r in cascade.read_rows(p)]
        path = cascade.train(crows, seed=seed, out=out, folds=cv, loso=loso, n_boot=bootstrap, price_ratios=(5, 20, 50))
        rep = cascade.load_verifier(path).meta["report"]
        _emit_trained(path, rep, cascade.format_report(rep), as_json)
        return
    if router == "mf":
        from tokenomy.routing.quality.train_mf import train_mf_report

        if len(data) != 1:
            raise TokenomyError("mf trains on one AlpacaEval per-instruction file")
        report = train_mf_report(data[0], out, seed=seed, folds=cv, weak=weak, strong=strong, n_boot=bootstrap)
        if as_json:
            _emit(report)
        else:
            typer.echo(json.dumps(report, indent=1))
        return
    from tokenomy.routing.quality.train import cross_validate, grouped_cross_validate, leave_one_source_out, make_trainer

    rows = _read_many(data)
    if from_ledger:  # online improvement loop: outcome labels from POST /v1/feedback
        from tokenomy.metering.paths import default_data_dir
        from tokenomy.routing.feedback import load_training_rows
        from tokenomy.routing.quality.data import Row

        directory = data_dir or default_data_dir()
        fb = [Row(str(r["id"]), str(r["prompt"]), float(r["weak"]), float(r["strong"]), str(r.get("source") or "ledger"))
              for r in load_training_rows(directory)]
        if not fb:
            where = "the PostgreSQL ledger (TOKENOMY_LEDGER_URL)" if os.environ.get("TOKENOMY_LEDGER_URL") else directory
            raise TokenomyError(f"no feedback with stored prompts in {where}: set routing.store_prompts: true in the "
                                "gateway config and send POST /v1/feedback {request_id, score}")
        rows = rows + fb
    if not rows:
        raise TokenomyError("no training rows: pass --data FILE and/or --from-ledger")
    if router in ("task", "default"):
        lexical_only = {"--sparse-scale": sparse_scale, "--expert-scale": expert_scale, "--expert-formats": expert_formats,
                        "--expert-shared/--expert-gated": expert_shared, "--balance-sources": balance_sources or None}
        given = [k for k, v in lexical_only.items() if v is not None]
        if given:
            raise TokenomyError(f"{', '.join(given)}: lexical router options (pass --router lexical)")
    elif l2 is not None or not prior:
        raise TokenomyError("--l2 and --no-prior apply to the task router only")
    trainer = make_trainer(router, seed=seed, c=c, sparse_scale=sparse_scale, balance_sources=balance_sources,
                           format_experts=format_experts, expert_scale=expert_scale,
                           expert_formats=None if expert_formats is None else
                           [x.strip() for x in expert_formats.split(",") if x.strip()], expert_shared=expert_shared,
                           l2=l2, use_prior=prior)
    n_sources = len({r.source for r in rows if r.source})
    steps = (cv or 0) + (grouped_cv or 0) + (n_sources if loso and n_sources >= 2 else 0) + 1
    report: dict = {"router": router, "n": len(rows), "seed": seed, "c": c, "out": str(out)}
    with _progress(steps, f"training {router}", not as_json) as adv:
        if cv:
            report["cv"] = cross_validate(rows, trainer, folds=cv, seed=seed, n_boot=bootstrap, progress=adv)
        if grouped_cv:
            report["grouped_cv"] = grouped_cross_validate(rows, trainer, folds=grouped_cv, seed=seed, n_boot=bootstrap,
                                                          progress=adv)
        if loso and n_sources >= 2:
            report["loso"] = leave_one_source_out(rows, trainer, seed=seed, n_boot=bootstrap, progress=adv)
        final = trainer(rows)
        final.meta["data"] = [p.name for p in data]
        final.save(out)
        if adv:
            adv()
    if as_json:
        _emit(report)
        return
    if "cv" in report:
        _print_report(f"{cv}-fold CV (per source, out-of-fold):", report["cv"])
    if "grouped_cv" in report:
        _print_report(f"{grouped_cv}-fold CV holding out whole subjects / sub-collections:", report["grouped_cv"])
    if "loso" in report:
        _print_report("leave-one-source-out (trained on the others):", report["loso"])
    typer.echo(f"wrote {out}")


@route_app.command("savings")
def savings_cmd(
    since: Optional[str] = typer.Option(None, help="start: 24h, 7d, 2026-11-01 or ISO time"),
    until: Optional[str] = typer.Option(None, help="end (default now)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="gateway data dir (default TOKENOMY_DATA_DIR or ./.tokenomy)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Routed traffic's actual cost vs the all-strong and all-weak baselines (cascades include weak calls),
    and committed-first groups' total cost (committed bill + spend elsewhere) vs cost routing on list prices."""
    import time

    from tokenomy.allocation.savings import committed_savings, format_committed
    from tokenomy.allocation.store import CapacityStore

    from tokenomy.metering.paths import default_data_dir, ledger_path
    from tokenomy.metering.timeparse import parse_time
    from tokenomy.routing.savings import format_savings, savings

    from tokenomy.routing.feedback import _ledger_url

    directory = data_dir or default_data_dir()
    if not _ledger_url(None) and not ledger_path(directory).exists():
        raise TokenomyError(f"no gateway ledger in {directory} (pass --data-dir, set TOKENOMY_DATA_DIR, "
                            "or TOKENOMY_LEDGER_URL for a PostgreSQL ledger)")
    now = time.time()
    lo = parse_time(since, now=now, option="--since") if since else None
    hi = parse_time(until, now=now, option="--until") if until else None
    s = savings(directory, lo, hi)
    store = CapacityStore.open(directory)
    try:
        s["committed_first"] = committed_savings(store, lo if lo is not None else 0.0, hi if hi is not None else now)
    finally:
        store.close()
    if as_json:
        _emit(s)
    else:
        typer.echo(format_savings(s))
        if s["committed_first"]["requests"]:
            typer.echo(format_committed(s["committed_first"]))


@route_app.command("choose")
def choose_cmd(
    prompt: str = typer.Option(..., help="the prompt"),
    candidates: str = typer.Option(..., help="model=price,... (price in any one unit, e.g. $/Mtok)"),
    threshold: Optional[float] = typer.Option(
        None, help="binary router: score threshold (default: the cut strong_share 0.3 gives on the gateway's "
                   "start-up sample, as `route explain`); mf: minimum quality (default 0.5)"),
    router: str = typer.Option("default", help="default | mf | PATH.npz"),
    model: Optional[Path] = typer.Option(None, help="router artifact"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Which candidate model a prompt goes to (the gateway's `auto` decision)."""
    from tokenomy.routing.quality import choose_model, load_router

    cands = []
    for part in candidates.split(","):
        name, sep, price = part.strip().rpartition("=")
        if not sep or not name:
            raise TokenomyError(f"candidate '{part}' must be model=price")
        try:
            cands.append((name, float(price)))
        except ValueError:
            raise TokenomyError(f"candidate '{part}': price is not a number") from None
    r = load_router(router, model=model)
    if threshold is None:
        # a binary router's scores rank prompts (per-source intercepts are dropped at serving), so its
        # default cut is the gateway's own start-up one, not a fixed 0.5
        from tokenomy.routing.quality.threshold import startup_threshold

        threshold = 0.5 if hasattr(r, "quality_of") else startup_threshold(r, 0.3)
    d = choose_model(prompt, cands, threshold, router=r)
    if as_json:
        _emit(d.to_json())
    else:
        pq = "" if d.predicted_quality is None else f" predicted quality {d.predicted_quality:.3f}"
        typer.echo(f"{d.model} ({d.reason}; strong win rate {d.strong_win_rate:.3f}, threshold {d.threshold:.4f}){pq}")


@route_app.command("explain")
def explain_cmd(
    prompt: str = typer.Argument(..., help="the prompt to explain"),
    router: str = typer.Option("default", help="default | task | lexical | PATH.npz"),
    model: Optional[Path] = typer.Option(None, help="router artifact"),
    threshold: Optional[float] = typer.Option(None, help="score threshold (default: the one `strong_share` gives)"),
    strong_share: float = typer.Option(0.3, help="target strong share the threshold is calibrated for (gateway "
                                                 "start-up sample), unless --threshold"),
    top: int = typer.Option(6, help="how many features to list"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Why a prompt goes where it goes: score, decision, task kind and the features that drove it."""
    from tokenomy.routing.quality import load_router
    from tokenomy.routing.quality.taskkind import profile

    if not prompt.strip():
        raise TokenomyError("prompt is empty")
    if top < 1:
        raise TokenomyError("--top must be >= 1")
    if not 0.0 <= strong_share <= 1.0:
        raise TokenomyError("--strong-share must be in [0, 1]")
    r = load_router(router, model=model)
    if not hasattr(r, "strong_win_rate") or hasattr(r, "quality_of"):
        raise TokenomyError(f"router '{router}' is a multi-model router: use `tokenomy route choose`")
    if threshold is None:
        from tokenomy.routing.quality.threshold import startup_threshold

        threshold, how = startup_threshold(r, strong_share), f"strong_share {strong_share:g} on the start-up sample"
    else:
        how = "given"
    if hasattr(r, "explain"):
        out = r.explain(prompt, top=top)
    else:
        prof = profile(prompt)
        out = {"score": float(r.strong_win_rate(prompt)), "kind": prof.kind,
               "kind_cues": {k: v for k, v in prof.kind_scores.items() if v > 0}, "top_features": []}
    out = {"router": router, **out, "threshold": round(float(threshold), 6), "threshold_from": how,
           "decision": "strong" if out["score"] >= threshold else "weak"}
    out["score"] = round(float(out["score"]), 6)
    if as_json:
        _emit(out)
        return
    typer.echo(f"score {out['score']:.4f}  threshold {out['threshold']:.4f} ({how})  ->  {out['decision']}")
    typer.echo(f"task kind: {out['kind']}" + (f"  (cues: {', '.join(f'{k} {v:g}' for k, v in out['kind_cues'].items())})"
                                            if out["kind_cues"] else ""))
    if not out["top_features"]:
        typer.echo(f"  (router '{router}' has no per-feature breakdown; the task kind is shown for context)")
        return
    typer.echo(f"logit {out['logit']:+.3f} = bias {out['bias']:+.3f} + the features' contributions; the largest:")
    for f in out["top_features"]:
        typer.echo(f"  {f['feature']:<24} value {f['value']:>7.3f} x weight {f['weight']:>7.3f} = {f['contribution']:+.3f}")


def register(app: typer.Typer) -> None:
    app.add_typer(route_app, name="route")
