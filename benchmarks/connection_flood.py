"""A connection flood against `tokenomy up` (issue 14 §5): N connections that send part of a
request head and then nothing (slowloris), opened from separate client processes, while a
legitimate client sends requests one after another. Before issue 14 such connections never timed
out and 20,000 of them made every new request fail.

Side by side in one run, against the same gateway process (its upstream a local fake, the
gateway's own `tokenomy up` with the connection guard's defaults: head_timeout_s 10,
max_connections = min(10000, half the open-file limit)):
  baseline: R legitimate requests with no flood;
  flood:    the same R requests while N flood connections are open (each client process opens
            up to --per-proc of them; the rest are refused or closed by the gateway, which the
            script counts);
and prints the legitimate requests' success share and p50/p99 latency under flood / baseline,
and how many flood connections the gateway had open at most (from /proc/PID/fd).

    .venv/bin/python benchmarks/connection_flood.py                   # N = 20000
    .venv/bin/python benchmarks/connection_flood.py --flood 4000 --requests 100 --json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from multiprocessing import Process, Queue
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("gateway_overhead", HERE / "gateway_overhead.py")
go = importlib.util.module_from_spec(_spec)
sys.modules["gateway_overhead"] = go
_spec.loader.exec_module(go)

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"  # never finished


def _flood_part(port: int, n: int, hold_s: float, out: Queue) -> None:
    """One client process: open n connections, send part of a head on each, hold them."""
    async def main() -> tuple[int, int]:
        opened, failed, writers = 0, 0, []
        sem = asyncio.Semaphore(500)

        async def one():
            nonlocal opened, failed
            async with sem:
                try:
                    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                    w.write(HEAD)
                    await w.drain()
                    writers.append(w)
                    opened += 1
                except (OSError, asyncio.TimeoutError):
                    failed += 1

        await asyncio.gather(*(one() for _ in range(n)))
        out.put(("opened", opened, failed))
        await asyncio.sleep(hold_s)
        for w in writers:
            w.close()
        return opened, failed

    asyncio.run(main())


def _legit(url: str, key: str, n: int) -> dict:
    import urllib.error
    import urllib.request

    body = json.dumps({"model": go.MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}).encode()
    lat, ok, codes = [], 0, {}
    for _ in range(n):
        req = urllib.request.Request(url, data=body, headers={"Authorization": f"Bearer {key}",
                                                              "Content-Type": "application/json"})
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=15) as r:
                r.read()
                ok += r.status == 200
                codes[str(r.status)] = codes.get(str(r.status), 0) + 1
        except urllib.error.HTTPError as e:
            codes[str(e.code)] = codes.get(str(e.code), 0) + 1
        except OSError as e:
            codes[type(e).__name__] = codes.get(type(e).__name__, 0) + 1
        lat.append((time.perf_counter() - t) * 1000.0)
    lat.sort()
    return {"ok_share": ok / n, "codes": codes, "p50_ms": go.quantile(lat, 0.5), "p99_ms": go.quantile(lat, 0.99)}


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood", type=int, default=20_000, help="flood connections (default 20000)")
    ap.add_argument("--per-proc", type=int, default=9_000, help="flood connections per client process")
    ap.add_argument("--requests", type=int, default=200, help="legitimate requests per phase")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    work = Path(tempfile.mkdtemp(prefix="tokenomy-flood-"))
    procs = go.Procs()
    parts: list[Process] = []
    try:
        up_port = go.free_port()
        up = procs.start([sys.executable, str(HERE / "gateway_overhead.py"), "--role", "upstream", "--port",
                          str(up_port)], work / "upstream.log")
        go.wait_ready(f"http://127.0.0.1:{up_port}/v1/models", up, work / "upstream.log", 30)
        url, key = go.start_gateway(procs, work, f"http://127.0.0.1:{up_port}/v1")
        gw_pid = procs.procs[-1].pid
        port = int(url.split(":")[2].split("/")[0])
        _legit(url, key, 20)  # warm-up
        say(f"# baseline: {args.requests} requests, no flood")
        base = _legit(url, key, args.requests)
        say(f"# flood: {args.flood} half-sent heads from {-(-args.flood // args.per_proc)} processes")
        q: Queue = Queue()
        left = args.flood
        while left > 0:
            n = min(left, args.per_proc)
            p = Process(target=_flood_part, args=(port, n, 120.0, q), daemon=True)
            p.start()
            parts.append(p)
            left -= n
        opened = failed = 0
        for _ in parts:
            _, o, f = q.get(timeout=300)
            opened, failed = opened + o, failed + f
        fds_open = _fds(gw_pid)
        flood = _legit(url, key, args.requests)
        fds_after = _fds(gw_pid)
        out = {"flood_connections": args.flood, "client_opened": opened, "client_failed_to_open": failed,
               "gateway_fds_during_flood": fds_open, "gateway_fds_after_legit": fds_after,
               "baseline": base, "flood": flood,
               "ok_share_ratio": flood["ok_share"] / base["ok_share"] if base["ok_share"] else None,
               "p50_ratio": flood["p50_ms"] / base["p50_ms"], "p99_ratio": flood["p99_ms"] / base["p99_ms"]}
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"{'phase':<10} {'ok':>7} {'p50 ms':>8} {'p99 ms':>8}  codes")
            for name in ("baseline", "flood"):
                r = out[name]
                print(f"{name:<10} {r['ok_share'] * 100:>6.1f}% {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}  {r['codes']}")
            print(f"flood / baseline: ok {out['ok_share_ratio']:.3f}, p50 {out['p50_ratio']:.2f}x, "
                  f"p99 {out['p99_ratio']:.2f}x; clients opened {opened} (failed {failed}); gateway fds "
                  f"{fds_open} during the flood")
    finally:
        for p in parts:
            p.kill()
        procs.stop_all()


if __name__ == "__main__":
    main()
