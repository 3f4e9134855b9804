"""tokenomy.emulator: an OpenAI-compatible digital twin of one deployment.

    from tokenomy.emulator import EmulatorConfig, build_app, serve_emulator
    async with serve_emulator(EmulatorConfig(model="llama-3-8b", accelerator="h100")) as base_url:
        ...  # base_url = "http://127.0.0.1:PORT/v1"

A fleet in one event loop: `async with serve_emulators([cfg_a, cfg_b]) as urls: ...`.

Timing comes from the perf model's step time under the real concurrent load (continuous
batching); text is synthetic and `usage` exact; faults are injected with the
`x-emulator-fault` header (500 | 429 | garbage | broken-stream | hang | slow).
"""

from .app import FAULT_HEADER, FAULTS, build_app
from .config import EmulatorConfig
from .server import serve_emulator, serve_emulators

__all__ = ["EmulatorConfig", "FAULTS", "FAULT_HEADER", "build_app", "serve_emulator", "serve_emulators"]
