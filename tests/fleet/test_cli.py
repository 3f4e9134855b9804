import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "tokenomy", *args], capture_output=True, text=True, timeout=120)


def test_simulate_json_report(tmp_path):
    png = tmp_path / "cdf.png"
    p = _run("simulate", "--trace", "conv", "--limit", "400", "--model", "llama-3-8b", "--accelerator", "h100",
             "--replicas", "2", "--site", "us-va", "--slo-ttft-ms", "2000", "--slo-tpot-ms", "40",
             "--plot", str(png), "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(r[key]) == {"p50", "p90", "p99"} and r[key]["p50"] <= r[key]["p90"] <= r[key]["p99"]
    assert r["requests_completed"] == 400
    assert 0 <= r["slo_attainment"] <= 1 and 0 < r["busy_share"] <= 1
    assert 0 < r["batch_slot_utilization"] < r["busy_share"] and 0 < r["token_budget_utilization"] < r["busy_share"]
    assert r["energy_kwh"] > 0 and r["cost_usd"] > r["cost_breakdown"]["energy_usd"] > 0
    assert r["usd_per_mtok"] > 0
    assert png.stat().st_size > 10_000


def test_simulate_user_trace_file_and_rate_scale(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0,100,10\n1,200,20\n2,300,30\n")
    p = _run("simulate", "--trace", str(f), "--rate-scale", "2", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["requests_completed"] == 3 and r["trace"]["duration_seconds"] == 1.0


def test_errors_are_one_line_exit_2():
    p = _run("simulate", "--trace", "conv", "--model", "llama-9", "--json")
    assert p.returncode == 2 and p.stderr.startswith("error: unknown model") and "Traceback" not in p.stderr
    p = _run("plan", "--trace", "conv", "--model", "llama-2-7b", "--slo-tpot-ms", "1", "--json")
    assert p.returncode == 2 and "TPOT SLO 1 ms is below the batch-1 step time" in p.stderr
    p = _run("plan", "--trace", "conv", "--model", "llama-2-7b", "--slo-tpot-ms", "40", "--sites", "us-va",
             "--power-cap", "us-va=0.0001", "--json")
    assert p.returncode == 2 and "power cap too low" in p.stderr
    p = _run("plan", "--trace", "conv", "--slo-tpot-ms", "40", "--power-cap", "us-va", "--json")
    assert p.returncode == 2 and "SITE=MW" in p.stderr


def test_plan_json_is_clean_single_object():
    p = _run("plan", "--trace", "code", "--model", "llama-3-8b", "--slo-tpot-ms", "60", "--accelerators", "l4,h100",
             "--counts", "1", "--no-verify", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)  # no solver chatter on stdout
    assert r["best_single"]["accelerator"] in ("l4", "h100") and r["usd_per_hour"] > 0
    assert r["slo_attainment"] is None
