"""CLI command: `tokenomy up` — the gateway with its embedded ledger (default: emulated fleet)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def up(
    host: Optional[str] = typer.Option(None, "--host", help="Interface to listen on (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default 8080; 0 = any free port)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Ledger directory (default: ledger.path of the config, "
                                            "else $TOKENOMY_DATA_DIR, else ./.tokenomy)"),
    config: Optional[Path] = typer.Option(None, "--config", help="tokenomy.yaml; none = default emulated fleet"),
    redis_fail_mode: Optional[str] = typer.Option(
        None, "--redis-fail-mode", help="When the Redis counters are unreachable: closed = 503 (default), open = "
        "per-replica limits and caps (overrides counters.fail_mode of the config and $TOKENOMY_REDIS_FAIL_MODE)"),
) -> None:
    """Run the OpenAI-compatible gateway: cost-aware routing, budgets, durable metering.

    With no --config: an embedded SQLite ledger and an emulated fleet (llama-3-8b on L4 and H100, llama-3-70b on 4 x H100, gpt-4o-mini priced from the real price map). Prints the admin key (if generated) and a demo API key once. TOKENOMY_ADMIN_KEY sets the admin key.
    """
    from tokenomy.config import load_config
    from tokenomy.gateway.server import run
    from tokenomy.metering.paths import default_data_dir

    cfg = load_config(config)
    if redis_fail_mode is not None:
        from tokenomy.errors import ConfigError
        from tokenomy.metering.backends import FAIL_MODES

        if redis_fail_mode not in FAIL_MODES:
            raise ConfigError(f"--redis-fail-mode: must be 'closed' or 'open', not '{redis_fail_mode}'")
        cfg = cfg.model_copy(update={"counters": cfg.counters.model_copy(update={"fail_mode": redis_fail_mode})})
    from tokenomy.gateway.registry import announce

    directory = data_dir or (Path(cfg.ledger.path).expanduser() if cfg.ledger.path else default_data_dir())
    host, port = host or cfg.server.host, cfg.server.port if port is None else port
    announce(directory, host, port)  # so `tokenomy keys create` finds this ledger from any directory
    run(cfg, host=host, port=port, data_dir=directory, config_path=config)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
