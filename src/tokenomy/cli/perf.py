"""CLI: `tokenomy perf step` — predicted step time, throughput and energy of one replica."""

from __future__ import annotations

import json
from enum import Enum

import typer


class Phase(str, Enum):
    decode = "decode"
    prefill = "prefill"


def register(app: typer.Typer) -> None:
    perf = typer.Typer(help="Performance model: step time, throughput, memory and power.", no_args_is_help=True)
    app.add_typer(perf, name="perf")

    @perf.command("step")
    def step(
        model: str = typer.Option(..., "--model", "-m", help="Model id, e.g. llama-3-8b."),
        accelerator: str = typer.Option(..., "--accelerator", "-a", help="Accelerator id, e.g. h100."),
        phase: Phase = typer.Option(Phase.decode, "--phase", help="decode: one decode step; prefill: one prompt."),
        batch: int = typer.Option(1, "--batch", "-b", min=1, help="Decode: sequences in the batch."),
        context: int = typer.Option(2048, "--context", "-c", min=0, help="Decode: KV tokens per sequence."),
        tokens: int = typer.Option(2048, "--tokens", "-t", min=1, help="Prefill: prompt tokens."),
        count: int = typer.Option(1, "--count", "-n", min=1, help="Devices per replica (tensor parallel)."),
        dtype: str = typer.Option("bf16", "--dtype", "--quant", help="Weight format: bf16, fp8 or int4-awq."),
        kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV-cache format: bf16 or fp8."),
        engine_efficiency: float = typer.Option(
            1.0, "--engine-efficiency", help="Speed-up of your engine over the plain-PyTorch profile (vLLM ~1.1-1.3)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Predict one decode step (or one prefill) of MODEL on COUNT x ACCELERATOR."""
        from tokenomy.catalog import load_catalog
        from tokenomy.perf import batch_capacity, decode_prediction, make_step_model, prefill_prediction

        cat = load_catalog()
        m, acc = cat.model(model), cat.accelerator(accelerator)
        sm = make_step_model(m, acc, count=count, dtype=dtype, kv_dtype=kv_dtype, engine_efficiency=engine_efficiency)
        if phase is Phase.decode:
            pred = decode_prediction(sm, batch=batch, context=context)
        else:
            pred = prefill_prediction(sm, tokens=tokens)
        out = {
            "phase": phase.value, "model": m.id, "accelerator": acc.id, "count": count, "dtype": dtype,
            "kv_dtype": kv_dtype, "engine_efficiency": engine_efficiency,
            **({"batch": batch, "context": context} if phase is Phase.decode else {"tokens": tokens}),
            **pred.to_dict(),
            "ms": pred.seconds * 1e3,
            "max_batch": batch_capacity(sm, context=context if phase is Phase.decode else tokens),
            "max_kv_tokens": sm.max_kv_tokens,
            "kv_bytes_per_token": sm.kv_bytes_per_token * count,
            "weight_bytes": sm.weight_bytes,
            "idle_watts": sm.idle_watts,
        }
        if phase is Phase.decode and batch > out["max_batch"]:
            out["warning"] = f"batch {batch} exceeds the {out['max_batch']} sequences of {context} tokens that fit"
        if as_json:
            typer.echo(json.dumps(out))
            return
        _print_table(out)


def _print_table(out: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    what = (f"decode step, batch {out['batch']} x {out['context']} ctx" if out["phase"] == "decode"
            else f"prefill of {out['tokens']} tokens")
    t = Table(title=f"{out['model']} on {out['count']} x {out['accelerator']} ({out['dtype']}): {what}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("time", f"{out['ms']:.2f} ms")
    t.add_row("tokens/s", f"{out['tokens_per_s']:,.0f}")
    t.add_row("power (all devices)", f"{out['watts']:,.0f} W")
    t.add_row("energy", f"{out['joules_per_token']:.4f} J/token")
    t.add_row("max batch at this context", f"{out['max_batch']:,}")
    t.add_row("KV cache", f"{out['kv_bytes_per_token'] / 1024:,.0f} KiB/token")
    t.add_row("calibration", out["source"])
    console = Console()
    console.print(t)
    if "warning" in out:
        console.print(f"[yellow]warning:[/] {out['warning']}")
