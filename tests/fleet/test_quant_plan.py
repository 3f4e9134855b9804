"""The planner chooses weight / KV formats as it chooses TP degrees: more options never dearer,
fp8 where the chip has it, each plan judged by the simulator."""

import json
import subprocess
import sys

import pytest

from tokenomy.fleet.planner import PlanRequest, plan_fleet
from tokenomy.fleet.workload import scale_rate, window


@pytest.fixture(scope="module")
def conv_x4(conv):
    return scale_rate(window(conv, 0, 120), 4.0)  # 456 requests in 30 s, ~15 req/s


def _req(catalog, accs, **kw):
    base = dict(model=catalog.model("llama-3-8b"), accelerators=tuple(catalog.accelerator(a) for a in accs),
                slo_tpot_ms=120.0, slo_ttft_ms=2000.0, counts=(1,))
    base.update(kw)
    return PlanRequest(**base)


def _cards(plan):
    return sum(a["devices"] for a in plan["assignments"])


def test_l4_fp8_and_int4_options_cut_the_fleet_and_never_cost_more(catalog, conv_x4):
    bf16 = plan_fleet(conv_x4, _req(catalog, ("l4",)))
    fp8 = plan_fleet(conv_x4, _req(catalog, ("l4",), dtypes=("bf16", "fp8")))
    every = plan_fleet(conv_x4, _req(catalog, ("l4",), dtypes=("bf16", "fp8", "int4-awq"), kv_dtypes=("bf16", "fp8")))
    for p in (bf16, fp8, every):
        assert p["meets_target"] and p["slo_attainment"] >= 0.99
    assert {a["dtype"] for a in fp8["assignments"]} == {"fp8"}
    # L4 bf16 holds 16 GB of Llama-3-8B weights in 21.6 usable GB; fp8 frees 8 GB for KV and halves the
    # bytes per decode step: well under two thirds of the cards
    assert _cards(fp8) <= 0.67 * _cards(bf16)
    assert every["usd_per_hour"] <= fp8["usd_per_hour"] + 1e-9 <= bf16["usd_per_hour"] + 1e-9
    assert "not modelled" in every["quantization_quality"] and "quantization_quality" not in bf16
    keys = {c["key"] for c in every["candidates"]}
    assert {"l4x1/bf16", "l4x1/fp8/kv-fp8", "l4x1/int4-awq/kv-fp8"} <= keys


def test_fp8_weights_are_skipped_on_chips_without_fp8(catalog, conv_x4):
    small = window(conv_x4, 0, 5)
    out = plan_fleet(small, _req(catalog, ("a10g",), dtypes=("bf16", "fp8", "int4-awq")), verify=False)
    keys = {c["key"] for c in out["candidates"]}
    assert "a10gx1/fp8" not in keys and {"a10gx1/bf16", "a10gx1/int4-awq"} <= keys


def test_cli_rejects_unknown_formats_in_one_line(tmp_path):
    for flag, value, msg in (("--quant", "bf16,int3", "unknown dtype 'int3'"),
                             ("--kv-dtype", "fp4", "unknown KV-cache dtype 'fp4'")):
        r = subprocess.run([sys.executable, "-m", "tokenomy", "plan", "--trace", "poisson:2:30",
                            "--slo-tpot-ms", "100", "--accelerators", "l4", flag, value, "--no-verify"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_simulate_reports_the_formats(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tokenomy", "simulate", "--trace", "poisson:2:20", "--model",
                        "llama-3-8b", "--accelerator", "l4", "--quant", "int4-awq", "--kv-dtype", "fp8", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)["deployment"]
    assert (d["dtype"], d["kv_dtype"]) == ("int4-awq", "fp8")
    bf = subprocess.run([sys.executable, "-m", "tokenomy", "simulate", "--trace", "poisson:2:20", "--model",
                         "llama-3-8b", "--accelerator", "l4", "--json"], capture_output=True, text=True, timeout=120)
    assert d["max_kv_tokens"] > 3 * json.loads(bf.stdout)["deployment"]["max_kv_tokens"]
