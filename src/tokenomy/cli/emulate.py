"""CLI: `tokenomy emulate` — serve an OpenAI-compatible digital twin of one deployment."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("emulate")
    def emulate(
        model: str = typer.Option("llama-3-8b", "--model", "-m", help="Model id, e.g. llama-3-8b."),
        accelerator: str = typer.Option("h100", "--accelerator", "-a", help="Accelerator id, e.g. h100."),
        count: int = typer.Option(1, "--count", "-n", min=1, help="Devices per replica (tensor parallel)."),
        dtype: str = typer.Option("bf16", "--dtype", "--quant", help="Weight format: bf16, fp8 or int4-awq."),
        kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="KV-cache format: bf16 or fp8."),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
        port: int = typer.Option(9001, "--port", "-p", min=0, max=65535, help="Port (0 = any free port)."),
        time_scale: float = typer.Option(1.0, "--time-scale", min=0.0,
                                         help="Multiply every step's sleep (0.01 = 100x faster, 0 = no sleeping)."),
        max_batch: int | None = typer.Option(None, "--max-batch", min=1, help="Max running sequences (default 256)."),
        engine_efficiency: float = typer.Option(1.0, "--engine-efficiency", min=0.01,
                                                help="Speed-up of the engine over the perf profile."),
        served_model_name: str | None = typer.Option(None, "--served-model-name",
                                                     help="Model name clients use (default: the model id)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the synthetic outputs and random faults."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the URL and setup) when ready."),
    ) -> None:
        """Serve MODEL on COUNT x ACCELERATOR as an OpenAI-compatible server (until Ctrl-C).

        Timing follows the perf model under the real concurrent load (continuous batching),
        text is synthetic, usage exact. Header `x-emulator-fault: 500|429|garbage|
        broken-stream|hang|slow` injects a fault into one request.
        """
        import asyncio

        from tokenomy.emulator import EmulatorConfig, serve_emulator
        from tokenomy.errors import TokenomyError

        try:
            cfg = EmulatorConfig(model=model, accelerator=accelerator, count=count, dtype=dtype, kv_dtype=kv_dtype,
                                 time_scale=time_scale, max_batch=max_batch,
                                 engine_efficiency=engine_efficiency, served_model_name=served_model_name,
                                 seed=seed)
        except ValueError as exc:  # pydantic validation
            raise TokenomyError(str(exc).splitlines()[0]) from None

        async def run() -> None:
            try:
                cm = serve_emulator(cfg, host=host, port=port)
                base_url = await cm.__aenter__()
            except OSError as exc:
                raise TokenomyError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            try:
                if as_json:
                    typer.echo(json.dumps({"url": base_url, "model": cfg.name, "accelerator": accelerator,
                                           "count": count, "dtype": dtype, "kv_dtype": kv_dtype,
                                           "time_scale": time_scale}))
                else:
                    typer.echo(f"emulating {cfg.model} on {count}x {accelerator} ({dtype}) at {base_url}")
                await asyncio.Event().wait()
            finally:
                await cm.__aexit__(None, None, None)

        try:
            try:
                import uvloop

                uvloop.run(run())
            except ImportError:
                asyncio.run(run())
        except KeyboardInterrupt:
            pass
        except TokenomyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
