"""Calibration constants fitted from a measured profile directory (perf/profiles/<name>/).

`python -m tokenomy.perf.fit` reads the profile's CSVs and writes `calibration.json` next to
them; at run time we only read that JSON (no numpy/scipy on the hot path or at import).
Rates are absolute for the profiled device; `datasheet_*` are that device's datasheet peaks,
so the same efficiency *shape* can be applied to another accelerator's datasheet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tokenomy.errors import ConfigError

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "h100"


@dataclass(frozen=True, slots=True)
class GemmFit:
    tflops: float  # effective compute ceiling (large GEMMs)
    gbps: float  # effective weight-streaming bandwidth
    p: float  # smooth-roofline exponent
    latency_s: float  # fixed time of one isolated kernel (launch + tail), CUDA-event timed


@dataclass(frozen=True, slots=True)
class Calibration:
    profile: str
    device: str
    datasheet_bf16_tflops: float
    datasheet_fp8_tflops: float | None
    datasheet_tb_per_s: float
    gemm: dict[str, GemmFit]  # by dtype
    attn_decode_gbps: float
    attn_decode_latency_s: float
    attn_prefill_tflops: float
    attn_prefill_half_tokens: float  # efficiency = S / (S + half)
    attn_prefill_latency_s: float
    layer_s: float  # fixed per-layer time inside a step (small kernels, norms, launches)
    elem_passes: float  # activation passes per token per layer over (hidden + mlp width) values
    step_s: float  # fixed per-step time (embedding, sampling, graph launch)
    eager_layer_s: float  # host launch time per layer of an eager (non-graph) prefill step
    idle_watts: float
    tdp_watts: float
    power_mem: float  # power share per unit of memory-bandwidth utilisation
    power_compute: float  # power share per unit of compute utilisation
    # TP all-reduce per degree ("2", "4", "8"): {"latency_s", "bus_gb_per_s"} (collectives.py);
    # empty: the unfitted constants. The one-way interconnect of the profiled node, for transfer.
    allreduce: dict = field(default_factory=dict)
    datasheet_interconnect_gb_per_s: float | None = None
    fit: dict = field(default_factory=dict)  # fit errors, for the record

    @staticmethod
    def from_json(data: dict) -> "Calibration":
        d = dict(data)
        d["gemm"] = {k: GemmFit(**v) for k, v in d["gemm"].items()}
        return Calibration(**d)

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def profile_dir(name: str) -> Path:
    return PROFILES_DIR / name


@lru_cache(maxsize=None)
def load_calibration(name: str = DEFAULT_PROFILE) -> Calibration:
    path = profile_dir(name) / "calibration.json"
    if not path.is_file():
        known = sorted(p.name for p in PROFILES_DIR.iterdir() if (p / "calibration.json").is_file())
        raise ConfigError(f"no calibrated perf profile '{name}' (known: {', '.join(known)})")
    return Calibration.from_json(json.loads(path.read_text()))
