"""`tokenomy route data` without the shared reference data (a fresh clone): one line, exit 2,
naming the missing file, how to give it, and the converted sample that ships with the project."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1] / "routing" / "data" / "routing_sample.jsonl"


def _route_data(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENOMY_ROUTING_DATA": str(tmp_path / "nowhere")}
    return subprocess.run([sys.executable, "-m", "tokenomy", "route", "data", *args, "--out", str(tmp_path / "o.jsonl")],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("source", ["routellm", "alpacaeval", "cascade-gsm8k"])
def test_missing_source_points_to_the_shipped_sample(tmp_path, source):
    r = _route_data(tmp_path, "--source", source)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    msg = lines[0]
    assert str(tmp_path / "nowhere") in msg and "--input" in msg
    assert f"tokenomy route eval --data {SAMPLE}" in msg
    assert not (tmp_path / "o.jsonl").exists()


def test_the_pointed_sample_works(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tokenomy", "route", "eval", "--data", str(SAMPLE), "--router", "length",
                        "--bootstrap", "0", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 1000


def test_missing_input_file(tmp_path):
    r = _route_data(tmp_path, "--source", "routellm", "--input", str(tmp_path / "rl.jsonl"))
    assert r.returncode == 2 and str(tmp_path / "rl.jsonl") in r.stderr and "Traceback" not in r.stderr
