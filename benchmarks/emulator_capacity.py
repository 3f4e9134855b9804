"""How many requests/s one emulator sustains at time_scale=0 (its own overhead, no sleeping).

    .venv/bin/python benchmarks/emulator_capacity.py [--seconds 5] [--concurrency 32] [--max-tokens 16]

Runs `tokenomy emulate --time-scale 0` in a subprocess (its own core) and a closed-loop
aiohttp load generator here, for non-streaming and streaming chat requests; prints
requests/s and output tokens/s for each, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


async def load(url: str, *, stream: bool, seconds: float, concurrency: int, max_tokens: int) -> tuple[int, int, int]:
    done = tokens = errors = 0
    deadline = time.perf_counter() + seconds
    body = {"model": "llama-3-8b", "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": "Explain the unit economics of inference."}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def worker(i: int) -> None:
            nonlocal done, tokens, errors
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                body["messages"][0]["content"] = f"question {i}-{n}"
                async with http.post(url + "/chat/completions", json=body) as r:
                    if r.status != 200:
                        errors += 1
                        await r.read()
                        continue
                    if stream:
                        async for line in r.content:
                            if line.startswith(b'data: {"id"') and b'"usage":{' in line:
                                tokens += json.loads(line[6:])["usage"]["completion_tokens"]
                    else:
                        tokens += (await r.json())["usage"]["completion_tokens"]
                done += 1
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done, tokens, errors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("tokenomy")
    proc = subprocess.Popen([str(exe), "emulate", "--port", "0", "--time-scale", "0", "--json"],
                            stdout=subprocess.PIPE, text=True)
    try:
        url = json.loads(proc.stdout.readline())["url"]
        print(f"emulator at {url}; closed loop, concurrency {args.concurrency}, max_tokens {args.max_tokens}, "
              f"{args.seconds:.0f} s each")
        for stream in (False, True):
            done, tokens, errors = asyncio.run(load(url, stream=stream, seconds=args.seconds,
                                                    concurrency=args.concurrency, max_tokens=args.max_tokens))
            print(f"{'stream    ' if stream else 'non-stream'}: {done / args.seconds:8.0f} req/s "
                  f"{tokens / args.seconds:9.0f} output tok/s  errors={errors}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
