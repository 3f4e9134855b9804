"""Fit calibration constants from a measured profile directory; write calibration.json.

    python -m tokenomy.perf.fit [profile]        # default: h100

Fits, each by least squares on log(predicted / measured):
  gemm.csv  -> per dtype: compute ceiling, streaming bandwidth, roofline exponent, kernel latency
  attn.csv  -> decode: bandwidth + latency (bandwidth efficiency vs batch x context follows);
               prefill: compute ceiling, efficiency half-point S/(S+half), latency
  allreduce.csv (optional) -> per TP degree: all-reduce latency + ring bus bandwidth
  step.csv  -> step-level constants (fixed per-layer time, elementwise activation passes,
               eager host-launch floor; the per-step fixed time is set, see STEP_FIXED_S) with the operator fits above held fixed;
               then the power model: P = idle + (TDP - idle) * min(1, a*u_mem + b*u_compute).
Needs numpy/scipy (imported here only; the runtime reads the JSON).
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from tokenomy.catalog.types import Accelerator, ModelArch

from .calibration import Calibration, GemmFit, profile_dir
from .collectives import UNFITTED_LATENCY_S, allreduce_seconds
from .step import StepModel

PROFILE_MODEL = ModelArch(  # the step.csv model: Llama-3-8B shape
    id="llama3-8b-shape", name="Llama-3-8B shape (profile)", family="llama",
    n_layers=32, hidden_size=4096, n_heads=32, n_kv_heads=8, head_dim=128,
    intermediate_size=14336, vocab_size=128256, total_params_b=7.50, active_params_b=7.50,
    context_length=8192, source="profile step.csv", date="2026-11",
)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_kv(path: Path, key: str = "what", value: str = "value") -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for r in read_csv(path):
        try:
            out[r[key]] = float(r[value])
        except ValueError:
            out[r[key]] = r[value]
    return out


def profile_accelerator(name: str) -> Accelerator:
    d = profile_dir(name)
    ds = read_kv(d / "datasheet.csv")
    env = read_kv(d / "env.csv", key="key")
    return Accelerator(
        id=name, name=str(env.get("device", name)), vendor="profile",
        bf16_tflops=float(ds["bf16_tflops"]), fp8_tflops=float(ds["fp8_tflops"]) if "fp8_tflops" in ds else None,
        memory_gb=float(ds["memory_gb"]), memory_tb_per_s=float(ds["memory_tb_per_s"]),
        tdp_watts=float(ds["tdp_watts"]), idle_watts=float(env["idle_power_w"]),
        interconnect_gb_per_s=float(ds.get("interconnect_gb_per_s", 450)), profile=name, source="profile datasheet.csv", date="2026-11",
    )


# ---------------- operator fits ----------------

def gemm_arrays(rows, dtype):
    R = [r for r in rows if r["dtype"] == dtype]
    T = np.array([float(r["tokens"]) for r in R])
    K = np.array([float(r["K"]) for r in R])
    N = np.array([float(r["N"]) for r in R])
    y = np.array([float(r["seconds"]) for r in R])
    wb = 2.0 if dtype == "bf16" else 1.0
    return T, 2 * T * K * N, K * N * wb + T * K * wb + T * N * 2.0, y


def gemm_predict(fit: GemmFit, flops, nbytes):
    tc = flops / (fit.tflops * 1e12)
    tm = nbytes / (fit.gbps * 1e9)
    return (tc**fit.p + tm**fit.p) ** (1 / fit.p) + fit.latency_s


def fit_gemm(rows, dtype) -> GemmFit:
    _, fl, by, y = gemm_arrays(rows, dtype)

    def mk(x):
        return GemmFit(tflops=float(np.exp(x[0])), gbps=float(np.exp(x[1])), p=float(x[2]), latency_s=float(x[3]) * 1e-6)

    res = least_squares(lambda x: np.log(gemm_predict(mk(x), fl, by) / y),
                        [np.log(700), np.log(2700), 3.0, 10.0], bounds=([0, 0, 1, 0], [10, 10, 20, 100]))
    return mk(res.x)


def attn_arrays(rows, phase):
    R = [r for r in rows if r["phase"] == phase]
    B = np.array([float(r["batch"]) for r in R])
    L = np.array([float(r["context"]) for r in R])
    hq = np.array([float(r["heads_q"]) for r in R])
    hkv = np.array([float(r["heads_kv"]) for r in R])
    d = np.array([float(r["head_dim"]) for r in R])
    y = np.array([float(r["seconds"]) for r in R])
    return B, L, hq, hkv, d, y


def attn_decode_predict(gbps, latency_s, B, L, hkv, d):
    return 2 * B * L * hkv * d * 2.0 / (gbps * 1e9) + latency_s


def attn_prefill_predict(tflops, half, latency_s, L, hq, d):
    flops = 2 * L * L * hq * d  # causal: 4*S*(S/2)*heads*head_dim
    return flops / (tflops * 1e12 * L / (L + half)) + latency_s


def fit_attention(rows):
    B, L, hq, hkv, d, y = attn_arrays(rows, "decode")
    r = least_squares(lambda x: np.log(attn_decode_predict(np.exp(x[0]), x[1] * 1e-6, B, L, hkv, d) / y),
                      [np.log(3000), 20.0], bounds=([0, 0], [10, 200]))
    dec = (float(np.exp(r.x[0])), float(r.x[1]) * 1e-6)
    _, L, hq, _, d, y = attn_arrays(rows, "prefill")
    r = least_squares(lambda x: np.log(attn_prefill_predict(np.exp(x[0]), np.exp(x[1]), x[2] * 1e-6, L, hq, d) / y),
                      [np.log(700), np.log(1000), 20.0], bounds=([0, 0, 0], [10, 15, 500]))
    pre = (float(np.exp(r.x[0])), float(np.exp(r.x[1])), float(r.x[2]) * 1e-6)
    return dec, pre


def allreduce_arrays(rows, n: int):
    R = [r for r in rows if int(r["num_workers"]) == n]
    return (np.array([float(r["size_bytes"]) for r in R]), np.array([float(r["median_ms"]) for r in R]) / 1e3)


def fit_allreduce(rows) -> dict[str, dict]:
    """Per measured TP degree: latency and bus bandwidth of `collectives.allreduce_seconds`,
    least squares on log(predicted / measured median)."""
    out: dict[str, dict] = {}
    for n in sorted({int(r["num_workers"]) for r in rows}):
        S, y = allreduce_arrays(rows, n)
        r = least_squares(lambda x, n=n: np.log(allreduce_seconds(S, n, x[0] * 1e-6, x[1]) / y),
                          [10.0, 300.0], bounds=([0.1, 1.0], [1000.0, 10000.0]))
        out[str(n)] = {"latency_s": float(r.x[0]) * 1e-6, "bus_gb_per_s": float(r.x[1])}
    return out


# ---------------- step-level fit ----------------

def step_rows(rows):
    return [dict(phase=r["phase"], batch=int(r["batch"]), context=int(r["context"]),
                 tokens=int(r["tokens_per_step"]), seconds=float(r["seconds"]),
                 watts=float(r["avg_power_w"]) if r.get("avg_power_w") else None) for r in rows]


def step_args(r) -> dict:
    if r["phase"] == "decode":
        return dict(decode_seqs=r["batch"], kv_tokens=r["batch"] * r["context"])
    return dict(prefill_tokens=r["tokens"])


def predict_steps(cal: Calibration, acc: Accelerator, rows) -> np.ndarray:
    sm = StepModel(PROFILE_MODEL, acc, count=1, dtype="bf16", engine_efficiency=1.0, cal=cal, source="profile")
    return np.array([sm.step_seconds(**step_args(r)) for r in rows])


# One profiled model (32 layers) cannot separate per-layer from per-step fixed time (only
# 32*layer_s + step_s is identifiable), so the per-step part is set from what it contains --
# embedding gather, final norm, graph launch -- and the rest is fitted as per-layer time.
STEP_FIXED_S = 100e-6


def fit_steps(cal: Calibration, acc: Accelerator, rows) -> Calibration:
    y = np.array([r["seconds"] for r in rows])

    def mk(x):
        return replace(cal, layer_s=x[0] * 1e-6, elem_passes=x[1], step_s=STEP_FIXED_S, eager_layer_s=x[2] * 1e-6)

    res = least_squares(lambda x: np.log(predict_steps(mk(x), acc, rows) / y), [10.0, 10.0, 300.0],
                        bounds=([0, 0, 0], [500, 100, 5000]))
    return mk(res.x)


def fit_power(cal: Calibration, acc: Accelerator, rows) -> Calibration:
    rows = [r for r in rows if r["watts"]]
    sm = StepModel(PROFILE_MODEL, acc, count=1, dtype="bf16", engine_efficiency=1.0, cal=cal, source="profile")
    # use measured step times so the power fit does not inherit timing error
    u = []
    for r in rows:
        _, f, b = sm._evaluate(r.get("tokens", 0) if r["phase"] == "prefill" else 0,
                               r["batch"] if r["phase"] == "decode" else 0,
                               r["batch"] * r["context"] if r["phase"] == "decode" else 0, 0, 1)
        u.append((b / (r["seconds"] * acc.memory_tb_per_s * 1e12), f / (r["seconds"] * acc.bf16_tflops * 1e12)))
    U = np.array(u)
    w = np.array([r["watts"] for r in rows])
    idle, tdp = cal.idle_watts, cal.tdp_watts

    def pred(x):
        return idle + (tdp - idle) * np.minimum(1.0, x[0] * U[:, 0] + x[1] * U[:, 1])

    res = least_squares(lambda x: np.log(pred(x) / w), [0.8, 1.5], bounds=([0, 0], [10, 10]))
    return replace(cal, power_mem=float(res.x[0]), power_compute=float(res.x[1]))


def errors(pred, meas) -> dict:
    e = np.abs(np.asarray(pred) / np.asarray(meas) - 1.0)
    return {"median": round(float(np.median(e)), 4), "worst": round(float(e.max()), 4), "n": int(e.size)}


def fit_profile(name: str = "h100") -> Calibration:
    d = profile_dir(name)
    acc = profile_accelerator(name)
    gemm_rows = read_csv(d / "gemm.csv")
    dtypes = sorted({r["dtype"] for r in gemm_rows})
    gemm = {dt: fit_gemm(gemm_rows, dt) for dt in dtypes}
    (dec_gbps, dec_lat), (pf_tflops, pf_half, pf_lat) = fit_attention(read_csv(d / "attn.csv"))
    cal = Calibration(
        profile=name, device=acc.name, datasheet_bf16_tflops=acc.bf16_tflops, datasheet_fp8_tflops=acc.fp8_tflops,
        datasheet_tb_per_s=acc.memory_tb_per_s, gemm=gemm, attn_decode_gbps=dec_gbps, attn_decode_latency_s=dec_lat,
        attn_prefill_tflops=pf_tflops, attn_prefill_half_tokens=pf_half, attn_prefill_latency_s=pf_lat,
        layer_s=10e-6, elem_passes=10.0, step_s=50e-6, eager_layer_s=300e-6,
        idle_watts=float(acc.idle_watts or 0.0), tdp_watts=float(acc.tdp_watts or 0.0), power_mem=0.8, power_compute=1.5,
    )
    srows = step_rows(read_csv(d / "step.csv"))
    cal = fit_steps(cal, acc, srows)
    cal = fit_power(cal, acc, srows)
    if (d / "allreduce.csv").is_file():
        cal = replace(cal, allreduce=fit_allreduce(read_csv(d / "allreduce.csv")),
                      datasheet_interconnect_gb_per_s=acc.interconnect_gb_per_s)
    return replace(cal, fit=validation_errors(cal, name))


def validation_errors(cal: Calibration, name: str) -> dict:
    """Median and worst absolute relative error against each CSV of the profile."""
    d = profile_dir(name)
    acc = profile_accelerator(name)
    out: dict = {}
    gemm_rows = read_csv(d / "gemm.csv")
    for dt, g in cal.gemm.items():
        _, fl, by, y = gemm_arrays(gemm_rows, dt)
        out[f"gemm_{dt}"] = errors(gemm_predict(g, fl, by), y)
    arows = read_csv(d / "attn.csv")
    B, L, hq, hkv, dd, y = attn_arrays(arows, "decode")
    out["attn_decode"] = errors(attn_decode_predict(cal.attn_decode_gbps, cal.attn_decode_latency_s, B, L, hkv, dd), y)
    _, L, hq, _, dd, y = attn_arrays(arows, "prefill")
    out["attn_prefill"] = errors(attn_prefill_predict(cal.attn_prefill_tflops, cal.attn_prefill_half_tokens,
                                                      cal.attn_prefill_latency_s, L, hq, dd), y)
    srows = step_rows(read_csv(d / "step.csv"))
    pred = predict_steps(cal, acc, srows)
    y = np.array([r["seconds"] for r in srows])
    out["step"] = errors(pred, y)
    for ph in ("decode", "prefill"):
        m = np.array([r["phase"] == ph for r in srows])
        out[f"step_{ph}"] = errors(pred[m], y[m])
    sm = StepModel(PROFILE_MODEL, acc, count=1, dtype="bf16", engine_efficiency=1.0, cal=cal, source="profile")
    pw = [sm.step_watts(**step_args(r)) for r in srows]
    out["step_power"] = errors(pw, [r["watts"] for r in srows])
    if cal.allreduce and (d / "allreduce.csv").is_file():
        ar_rows = read_csv(d / "allreduce.csv")
        for key, f in cal.allreduce.items():
            n = int(key)
            S, y = allreduce_arrays(ar_rows, n)
            out[f"allreduce_tp{n}"] = errors(allreduce_seconds(S, n, f["latency_s"], f["bus_gb_per_s"]), y)
            # the unfitted model (8 us + ring bytes at the one-way datasheet bandwidth), for the record
            out[f"allreduce_tp{n}_unfitted"] = errors(
                allreduce_seconds(S, n, UNFITTED_LATENCY_S, acc.interconnect_gb_per_s), y)
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    name = argv[0] if argv else "h100"
    cal = fit_profile(name)
    path = profile_dir(name) / "calibration.json"
    path.write_text(json.dumps(cal.to_json(), indent=2) + "\n")
    print(f"wrote {path}")
    print(json.dumps(cal.fit, indent=2))


if __name__ == "__main__":
    main()
