"""The step-time model behind the emulator: tokenomy.perf's StepModel for model x accelerator."""

from __future__ import annotations

from typing import Protocol

from tokenomy.catalog import Accelerator, ModelArch

from .config import EmulatorConfig


class StepModelLike(Protocol):
    """What the engine uses of tokenomy.perf.StepModel (see the perf contract)."""

    idle_watts: float
    max_kv_tokens: int
    source: str

    def step_seconds(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0) -> float: ...

    def step_watts(self, *, prefill_tokens: int = 0, decode_seqs: int = 0, kv_tokens: int = 0) -> float: ...


def resolve_step_model(cfg: EmulatorConfig) -> tuple[StepModelLike, ModelArch, Accelerator]:
    """Catalog lookup (UnknownNameError for unknown ids) and the step model for `cfg`.

    Raises TokenomyError when the model does not fit on `count` devices.
    """
    from tokenomy.catalog import load_catalog
    from tokenomy.perf import make_step_model

    catalog = load_catalog()
    model = catalog.model(cfg.model)
    acc = catalog.accelerator(cfg.accelerator)
    sm = make_step_model(model, acc, count=cfg.count, dtype=cfg.dtype, kv_dtype=cfg.kv_dtype,
                         engine_efficiency=cfg.engine_efficiency)
    return sm, model, acc
