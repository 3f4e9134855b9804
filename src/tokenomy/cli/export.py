"""CLI: `tokenomy export --to openmeter|stripe|lago --url URL` — priced events, exactly once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

DEFAULT_KEY_ENV = {"openmeter": "OPENMETER_API_KEY", "stripe": "STRIPE_API_KEY", "lago": "LAGO_API_KEY"}


def _pairs(items: list[str], what: str) -> dict[str, str]:
    from tokenomy.errors import TokenomyError

    out = {}
    for item in items:
        for part in (p.strip() for p in item.split(",") if p.strip()):
            k, sep, v = part.partition("=")
            if not sep or not k or not v:
                raise TokenomyError(f"{what} '{part}' must look like NAME=VALUE")
            out[k] = v
    return out


def _customers(spec: Optional[str]) -> dict[str, str]:
    """--customer-map FILE.yaml|FILE.json ({tenant: id}) or tenant=id,tenant=id."""
    from tokenomy.errors import TokenomyError

    if not spec:
        return {}
    path = Path(spec).expanduser()
    if path.exists():
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise TokenomyError(f"--customer-map {path}: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(v, (str, int)) for v in data.values()):
            raise TokenomyError(f"--customer-map {path}: expected a mapping tenant -> customer id")
        return {str(k): str(v) for k, v in data.items()}
    return _pairs([spec], "--customer-map entry")


def export(
    to: str = typer.Option(..., "--to", help="openmeter | stripe | lago"),
    url: str = typer.Option(..., "--url", help="The target's base URL, e.g. https://openmeter.cloud, "
                            "https://api.stripe.com, https://api.getlago.com"),
    since: Optional[str] = typer.Option(None, "--since", help="Only events at or after this time (ISO or age: 7d)."),
    follow: bool = typer.Option(False, "--follow", help="Keep exporting new events until interrupted."),
    interval_s: float = typer.Option(5.0, "--interval-s", min=0.1, help="With --follow: seconds between polls."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Events per batch (capped by the target)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Environment variable with the target's "
                                              "API key (default OPENMETER_API_KEY / STRIPE_API_KEY / LAGO_API_KEY)."),
    customer_map: Optional[str] = typer.Option(None, "--customer-map", help="tenant -> customer (Stripe) / "
                                               "subscription (Lago) / subject (OpenMeter): FILE.yaml or t=id,..."),
    meter: list[str] = typer.Option([], "--meter", help="Stripe: EVENT_NAME=FIELD, FIELD one of input_tokens, "
                                    "cached_input_tokens, output_tokens, reasoning_tokens, tokens, price_microusd, "
                                    "cost_microusd (default tokenomy_input_tokens=input_tokens,"
                                    "tokenomy_output_tokens=output_tokens)."),
    source: str = typer.Option("tokenomy", "--source", help="OpenMeter CloudEvents source (dedup is on source + id)."),
    lago_code: str = typer.Option("tokenomy_usage", "--lago-code", help="Lago billable metric code."),
    state_file: Optional[Path] = typer.Option(None, "--state", help="Cursor file (default <data-dir>/exports/...)."),
    lookback_s: float = typer.Option(300.0, "--lookback-s", min=0, help="Re-read this far behind the cursor for "
                                     "late commits (ids already sent are skipped)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Ledger directory (default $TOKENOMY_DATA_DIR "
                                            "or ./.tokenomy; TOKENOMY_LEDGER_URL selects PostgreSQL)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per run."),
) -> None:
    """Send the ledger's priced events to OpenMeter, Stripe or Lago, each exactly once.

    A cursor file remembers what was acknowledged; every event carries its id as the receiver's
    idempotency key, so re-running (or a retry after a lost reply) sends nothing twice."""
    import asyncio
    import os
    import time

    import aiohttp

    from tokenomy.billing.ledger_source import open_ledger_source
    from tokenomy.errors import TokenomyError
    from tokenomy.export.run import Sender, export_once
    from tokenomy.export.state import default_state_path, load_state
    from tokenomy.export.targets import TARGETS, USAGE_FIELDS, TargetConfig
    from tokenomy.metering import default_data_dir
    from tokenomy.metering.timeparse import parse_time

    if to not in TARGETS:
        raise TokenomyError(f"--to must be one of {', '.join(TARGETS)}, not '{to}'")
    if not url.startswith(("http://", "https://")):
        raise TokenomyError(f"--url must be an http(s) URL, not '{url}'")
    meters = _pairs(meter, "--meter") if meter else None
    if meters is not None and to != "stripe":
        raise TokenomyError("--meter applies to --to stripe only")
    for name, field_name in (meters or {}).items():
        if field_name not in USAGE_FIELDS:
            raise TokenomyError(f"--meter {name}={field_name}: the field must be one of {', '.join(USAGE_FIELDS)}")
    cfg = TargetConfig(to, source=source, customers=_customers(customer_map), lago_code=lago_code,
                       **({"meters": meters} if meters else {}))
    key_env = api_key_env or DEFAULT_KEY_ENV[to]
    key = os.environ.get(key_env)
    if not key:
        typer.echo(f"warning: ${key_env} is not set: sending without an Authorization header", err=True)
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    since_ts = parse_time(since, now=time.time(), option="--since") if since else None
    directory = data_dir or default_data_dir()
    path = state_file or default_state_path(directory, to, url)
    state = load_state(path, to, url)
    src = open_ledger_source(directory)

    async def run() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            sender = Sender(url, auth, session)
            while True:
                report = await export_once(src, cfg, sender, state, path, batch=batch, since_ts=since_ts,
                                           lookback_s=lookback_s)
                if as_json:
                    typer.echo(json.dumps({**report.to_dict(), "state": str(path),
                                           "exported_total": state.exported_total}))
                elif report.sent_events or not follow:
                    typer.echo(f"{to}: sent {report.sent_events} events in {report.requests} requests "
                               f"({report.skipped_already_sent} already sent, {report.retries} retries); "
                               f"cursor in {path}", err=True)
                if not follow:
                    return
                await asyncio.sleep(interval_s)

    from tokenomy.export.run import ExportError

    try:
        asyncio.run(run())
    except ExportError as exc:  # the receiver's fault, not the command line's: exit 1
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: the cursor holds everything acknowledged so far", err=True)
    finally:
        src.close()


def register(app: typer.Typer) -> None:
    app.command("export")(export)
