#!/usr/bin/env bash
# Build (once, cached) and install the real inference engine used by tests/engine:
# llama-cpp-python's OpenAI-compatible server + the gguf writer for the tiny test model.
#
# Compiling llama.cpp takes ~9 min on 2 cores, so the wheel is built once with `pip wheel`
# into a cache directory (TOKENOMY_WHEEL_CACHE, default ~/.cache/tokenomy/wheels) keyed by
# version + CMake flags, and reused on every later run. Idempotent: a no-op when the pinned
# versions are already installed in .venv.
#
# Env: TOKENOMY_WHEEL_CACHE (cache dir), TOKENOMY_SKIP_ENGINE=1 (do nothing),
#      PYTHON (venv python, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION="0.3.36"
# Exact pins for the [server] extra and the core deps of llama-cpp-python (the wheel is
# installed with --no-deps so nothing else in the venv moves).
ENGINE_DEPS=(
  "gguf==0.19.0"
  "diskcache==5.6.3"
  "jinja2==3.1.6"
  "MarkupSafe==3.0.4"
  "typing-extensions==4.16.0"
  "uvicorn==0.54.0"
  "click==8.5.1"
  "fastapi==0.165.0"
  "starlette==1.10.0"
  "pydantic-settings==2.16.3"
  "python-dotenv==1.2.4"
  "sse-starlette==3.7.0"
  "starlette-context==0.3.6"
  "tqdm==4.70.1"
  "requests==2.34.2"
  "charset-normalizer==3.5.3"
  "urllib3==2.8.0"
  "opentelemetry-api==1.45.2"
)
# Small, portable CPU build: no -march=native (the cached wheel must run on any x86-64 CI
# machine), no multimodal (mtmd) library, no curl, no OpenMP runtime dependency.
ENGINE_CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"

PY="${PYTHON:-.venv/bin/python}"
log() { echo "[engine] $*" >&2; }

if [ "${TOKENOMY_SKIP_ENGINE:-0}" = "1" ]; then log "TOKENOMY_SKIP_ENGINE=1: skipping"; exit 0; fi
if [ ! -x "$PY" ]; then log "no venv python at $PY (run make venv first)"; exit 1; fi

installed() {  # "ok" when llama-cpp-python and gguf are at their pins and every dep is present
  "$PY" - "$LLAMA_VERSION" "${ENGINE_DEPS[@]}" <<'PYEOF'
import sys
from importlib.metadata import version, PackageNotFoundError
exact = {"llama-cpp-python": sys.argv[1]}
present = []
for spec in sys.argv[2:]:
    name, ver = spec.split("==")
    if name == "gguf":
        exact[name] = ver
    else:
        present.append(name)  # a project lock may pin another version of it
try:
    ok = all(version(n) == v for n, v in exact.items()) and all(version(n) for n in present)
except PackageNotFoundError:
    ok = False
print("ok" if ok else "missing")
PYEOF
}

if [ "$(installed)" = "ok" ]; then
  log "llama-cpp-python==$LLAMA_VERSION (+server deps, gguf) already installed"
  exit 0
fi

CACHE_ROOT="${TOKENOMY_WHEEL_CACHE:-$HOME/.cache/tokenomy/wheels}"
FLAGS_HASH="$(printf '%s' "$ENGINE_CMAKE_ARGS" | sha1sum | cut -c1-10)"
CACHE_DIR="$CACHE_ROOT/llama-cpp-python-$LLAMA_VERSION-$FLAGS_HASH"
mkdir -p "$CACHE_DIR"

wheel="$(ls "$CACHE_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -n1 || true)"
if [ -n "$wheel" ]; then
  log "reusing cached wheel $wheel"
else
  log "building llama-cpp-python==$LLAMA_VERSION wheel (compiles llama.cpp, ~9 min on 2 cores) -> $CACHE_DIR"
  tmp="$(mktemp -d)"
  start=$(date +%s)
  # Build into a temp dir, then move: a killed build never leaves a half-written cached wheel.
  if ! CMAKE_ARGS="$ENGINE_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
       "$PY" -m pip wheel --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_VERSION" -w "$tmp" \
       >"$CACHE_DIR/build.log" 2>&1; then
    log "wheel build FAILED; last lines of $CACHE_DIR/build.log:"
    tail -n 40 "$CACHE_DIR/build.log" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mv "$tmp"/llama_cpp_python-*.whl "$CACHE_DIR"/
  rm -rf "$tmp"
  wheel="$(ls "$CACHE_DIR"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -n1)"
  log "built $wheel in $(( $(date +%s) - start )) s"
fi

log "installing $(basename "$wheel") + pinned server deps into $(dirname "$(dirname "$PY")")"
"$PY" -m pip install --quiet --no-deps "$wheel"
# The project's lock files win: an engine pin of a package they already pin is dropped, and
# they are passed as constraints, so installing the engine never moves a project pin.
mapfile -t deps < <("$PY" - "${ENGINE_DEPS[@]}" <<'PYEOF'
import re, sys
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
locked = set()
for lock in ("requirements.lock", "requirements-dev.lock"):
    try:
        for line in open(lock):
            if "==" in line and not line.lstrip().startswith("#"):
                locked.add(norm(line.split("==")[0].strip()))
    except OSError:
        pass
for spec in sys.argv[1:]:
    if norm(spec.split("==")[0]) not in locked:
        print(spec)
PYEOF
)
constraints=()
for lock in requirements.lock requirements-dev.lock; do [ -f "$lock" ] && constraints+=(-c "$lock"); done
"$PY" -m pip install --quiet "${constraints[@]}" "${deps[@]}"
"$PY" -c "import llama_cpp, llama_cpp.server, gguf; print('[engine] ok: llama_cpp', llama_cpp.__version__)" >&2
