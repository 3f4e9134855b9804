"""`tokenomy emulate`: serves until interrupted; unknown names exit 2 with close matches."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

TOKENOMY = [str(Path(sys.executable).with_name("tokenomy"))]


def test_emulate_serves_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen([*TOKENOMY, "emulate", "--model", "llama-3-8b", "--accelerator", "h100",
                             "--port", "0", "--time-scale", "0", "--served-model-name", "tiny", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        info = json.loads(line)
        assert info["url"].startswith("http://127.0.0.1:") and info["url"].endswith("/v1")
        models = httpx.get(info["url"] + "/models", timeout=10).json()
        assert models["data"][0]["id"] == "tiny"
        r = httpx.post(info["url"] + "/chat/completions", timeout=10,
                       json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
        assert r.json()["usage"]["completion_tokens"] == 3
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_emulate_unknown_names_exit_2() -> None:
    r = subprocess.run([*TOKENOMY, "emulate", "--model", "lama-3-8b", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("error: unknown model 'lama-3-8b'") and "llama-3-8b" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([*TOKENOMY, "emulate", "--accelerator", "h1000", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "did you mean h100" in r.stderr
