"""Web dashboard served by the gateway at /dashboard (pages) and /dashboard/api/ (JSON/CSV).

    from tokenomy.dashboard import mount
    mount(app, metering)            # one line in the gateway's app factory

Pages read pre-aggregated rollups (tables `rollup_*`) kept next to the events — in the SQLite
ledger file, or in the PostgreSQL ledger when TOKENOMY_LEDGER_URL is set — folded
incrementally from the events on read; no raw-event scans on the page path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tokenomy.dashboard.api import DashboardConfig


def mount(app, metering: Any, *, config: DashboardConfig | dict | None = None,
          clock: Callable[[], float] | None = None) -> None:
    """Add the dashboard routes to an aiohttp app (before it starts).

    `metering`: the tokenomy.metering.Metering the app uses (Metering.open(data_dir), or
    metering.backends.open_metering for the PostgreSQL ledger);
    `config`: a DashboardConfig or a dict of its fields (strong_model, single_deployment, ...);
    `clock`: the dashboard's "now" (default time.time; tests pin it to their seeded ledger's)."""
    from tokenomy.dashboard.api import Dashboard
    from tokenomy.dashboard.routes import add_routes

    if isinstance(config, dict):
        config = DashboardConfig(**config)
    add_routes(app, Dashboard(metering, config or DashboardConfig(), clock or time.time))


__all__ = ["DashboardConfig", "mount"]
