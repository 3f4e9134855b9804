"""Bench fixtures: in-process emulators (real aiohttp servers on 127.0.0.1) and the real
llama-cpp-python server fixture of tests/engine (loaded from its conftest, not copied)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_ENGINE_DIR = Path(__file__).resolve().parents[1] / "engine"


def _engine_fixtures():  # type: ignore[no-untyped-def]
    """The engine engineer's `tiny_gguf` and `llama_server` fixtures (skip locally / fail in CI
    when llama_cpp is missing, as that conftest decides)."""
    sys.path.insert(0, str(_ENGINE_DIR))
    spec = importlib.util.spec_from_file_location("tokenomy_engine_fixtures", _ENGINE_DIR / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_engine = _engine_fixtures()
tiny_gguf = _engine.tiny_gguf
llama_server = _engine.llama_server
