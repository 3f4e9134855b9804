"""Config reload against a real `tokenomy up` process: POST /admin/reload and SIGHUP swap in
deployments, groups and prices; a stream in flight across the reload completes on its old
deployment; an invalid file is refused with the reason and the old config keeps serving."""

from __future__ import annotations

import asyncio
import signal
from decimal import Decimal

import aiohttp
import orjson
import yaml
from aiohttp import web

from gw_helpers import ADMIN_KEY, Stub, gateway, gateway_process, list_dep, serve, stubs

TENANT_KEY = "tk-reloadtest1-0123456789abcdefghijklmnopqrstuv"
MSGS = [{"role": "user", "content": "hello there"}]


def _config(deps: list[dict], groups: dict) -> dict:
    return {"deployments": deps, "model_groups": groups,
            "tenants": [{"name": "t"}], "keys": [{"tenant": "t", "secret": TENANT_KEY}]}


class Gated:
    """An upstream whose streams send one chunk, then wait for `release` before the rest."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.StreamResponse:
            self.calls += 1
            body = orjson.loads(await request.read())
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)

            def chunk(obj: dict) -> bytes:
                return b"data: " + orjson.dumps({"id": "g", "object": "chunk", "created": 1, "model": body["model"],
                                                 **obj}) + b"\n\n"

            await resp.write(chunk({"choices": [{"index": 0, "delta": {"content": " one"}}]}))
            await self.release.wait()
            await resp.write(chunk({"choices": [{"index": 0, "delta": {"content": " two"}, "finish_reason": "stop"}]}))
            await resp.write(chunk({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                                             "total_tokens": 11}}))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return app


async def _chat(s: aiohttp.ClientSession, url: str, model: str = "m") -> tuple[int, dict, dict]:
    async with s.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {TENANT_KEY}"},
                      json={"model": model, "messages": MSGS, "max_tokens": 5}) as r:
        return r.status, dict(r.headers), orjson.loads(await r.read())


async def _reload(s: aiohttp.ClientSession, url: str, key: str = ADMIN_KEY) -> tuple[int, dict]:
    async with s.post(url + "/admin/reload", headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, orjson.loads(await r.read())


async def test_admin_reload_in_flight_stream_completes_and_new_deployment_serves(tmp_path):
    gated = Gated()
    async with serve(gated.app()) as gated_url, stubs(Stub(out_tokens=3)) as (b,):
        old = _config([list_dep("a", gated_url + "/v1", 1.0, 2.0)], {"m": {"deployments": ["a"]}})
        async with gateway_process(old, tmp_path) as (url, cfg, _proc, _log):
            async with aiohttp.ClientSession() as s:
                # a stream admitted on the old config, held open upstream across the reload
                stream = await s.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {TENANT_KEY}"},
                                      json={"model": "m", "messages": MSGS, "stream": True, "max_tokens": 5})
                assert stream.status == 200 and stream.headers["x-tokenomy-deployment"] == "a"
                first = await stream.content.readuntil(b"\n\n")
                assert b" one" in first

                cfg.write_text(yaml.safe_dump(_config(
                    [list_dep("b", b.base_url, 3.0, 4.0)],
                    {"m": {"deployments": ["b"]}, "n": {"deployments": ["b"]}})))
                st, report = await _reload(s, url)
                assert st == 200, report
                assert report["deployments"] == {"added": ["b"], "changed": [], "removed": ["a"], "kept": []}
                assert report["model_groups"]["added"] == ["b", "n"] and report["model_groups"]["changed"] == ["m"]
                assert report["not_reloaded"] == []

                # new requests see the new config at once: group m is b now, new group n exists
                st, h, body = await _chat(s, url)
                assert st == 200 and h["x-tokenomy-deployment"] == "b" and b.calls == 1
                # the new price applies: 3 $/Mtok input, 4 $/Mtok output on the billed counts
                u = body["usage"]
                assert Decimal(h["x-tokenomy-cost-usd"]) == Decimal(u["prompt_tokens"] * 3 + u["completion_tokens"] * 4) / 10**6
                st, h, _ = await _chat(s, url, "n")
                assert st == 200 and h["x-tokenomy-deployment"] == "b" and b.calls == 2
                st, _, body = await _chat(s, url, "a")  # the removed deployment is not addressable any more
                assert st == 404 and body["error"]["code"] == "model_not_found"

                # the old stream finishes on its old deployment and is metered once
                gated.release.set()
                rest = await stream.read()
                stream.release()
                assert rest.endswith(b"data: [DONE]\n\n") and b" two" in rest
                tail = orjson.loads(rest.split(b": x-tokenomy ")[1].split(b"\n")[0])
                assert tail["deployment"] == "a" and tail["output_tokens"] == 2 and tail["cost_usd"] == "0.000013"
                async with s.get(url + "/admin/usage?tenant=t", headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as r:
                    usage = orjson.loads(await r.read())
                assert usage["requests"] == 3 and gated.calls == 1
                by = usage["by_deployment"]
                assert by["a"]["requests"] == 1 and by["b"]["requests"] == 2


async def test_invalid_config_refused_with_reason_old_config_kept(tmp_path):
    async with stubs(Stub(out_tokens=3)) as (a,):
        good = _config([list_dep("a", a.base_url, 1.0, 2.0)], {"m": {"deployments": ["a"]}})
        async with gateway_process(good, tmp_path) as (url, cfg, _proc, _log):
            async with aiohttp.ClientSession() as s:
                bad_files = {
                    "model_groups.m.deployments: unknown deployment 'zz'":
                        yaml.safe_dump(_config([list_dep("a", a.base_url, 1.0, 2.0)], {"m": {"deployments": ["zz"]}})),
                    "deployments[0].pricing (a)":
                        yaml.safe_dump(_config([{"name": "a", "base_url": a.base_url,
                                                 "pricing": {"price_map": "no-such-model"}}], {})),
                    "invalid YAML": "deployments: [unclosed\n",
                    "deployments[0]: base_url must start with http": yaml.safe_dump(_config([list_dep("a", "ftp://x", 1.0, 2.0)], {})),
                }
                for reason, text in bad_files.items():
                    cfg.write_text(text)
                    st, body = await _reload(s, url)
                    assert st == 400, (reason, body)
                    assert body["error"]["code"] == "invalid_config" and reason in body["error"]["message"], body
                    st, h, _ = await _chat(s, url)  # still served by the old config
                    assert st == 200 and h["x-tokenomy-deployment"] == "a"
                # only the admin may reload
                st, body = await _reload(s, url, TENANT_KEY)
                assert st == 403 and body["error"]["code"] == "permission_denied"
                st, body = await _reload(s, url, "tk-nobody-0000")
                assert st == 401
                assert a.calls == 4


async def test_sighup_reloads_and_refuses_an_invalid_file(tmp_path):
    async with stubs(Stub(out_tokens=3), Stub(out_tokens=3)) as (a, b):
        async with gateway_process(_config([list_dep("a", a.base_url, 1.0, 2.0)], {"m": {"deployments": ["a"]}}),
                                   tmp_path) as (url, cfg, proc, log):
            async with aiohttp.ClientSession() as s:
                cfg.write_text(yaml.safe_dump({**_config([list_dep("a", a.base_url, 1.0, 2.0),
                                                          list_dep("b", b.base_url, 0.5, 0.5)],
                                                         {"m": {"deployments": ["b", "a"]}}),
                                               "server": {"idle_timeout_s": 30}}))
                proc.send_signal(signal.SIGHUP)
                line = await _log_line(log, "config reloaded")
                assert line == ("config reloaded: deployments added b (not reloaded, restart needed: server) "
                                "(SIGHUP)")
                st, h, _ = await _chat(s, url)  # policy cost: the cheaper new deployment
                assert st == 200 and h["x-tokenomy-deployment"] == "b" and (a.calls, b.calls) == (0, 1)

                cfg.write_text(yaml.safe_dump(_config([list_dep("a", a.base_url, 1.0, 2.0)],
                                                      {"m": {"deployments": ["a"], "policy": "nope"}})))
                proc.send_signal(signal.SIGHUP)
                line = await _log_line(log, "config reload refused")
                assert "the running config is kept" in line and "model_groups.m.policy" in line
                st, h, _ = await _chat(s, url)
                assert st == 200 and h["x-tokenomy-deployment"] == "b" and b.calls == 2
                assert proc.poll() is None


async def _log_line(log, needle: str) -> str:
    for _ in range(400):
        for line in log.read_text().splitlines():
            if needle in line:
                return line
        await asyncio.sleep(0.025)
    raise AssertionError(f"no {needle!r} in the log:\n{log.read_text()}")


async def test_unchanged_deployment_keeps_its_breaker_and_ledger_keeps_counting(tmp_path):
    """In-process (the runtime objects are inspected): the kept deployment is the same object, its
    open breaker and EWMAs survive; a changed price is a fresh runtime; the ledger counts on."""
    async with stubs(Stub(mode="500"), Stub(out_tokens=3)) as (bad, good):
        conf = {"deployments": [list_dep("bad", bad.base_url, 1.0, 1.0), list_dep("good", good.base_url, 1.0, 1.0)],
                "model_groups": {"m": {"deployments": ["bad", "good"], "policy": "cost"}},
                "breaker": {"failure_threshold": 2, "cooldown_s": 3600}, "retry": {"max_attempts": 2}}
        async with gateway(conf, tmp_path / "ledger") as g:
            key = g.key("t")
            for _ in range(2):
                st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS, "max_tokens": 5}, key)
                assert st == 200 and h["x-tokenomy-deployment"] == "good"
            gw = g.gw
            bad_rt, good_rt = gw.deployments["bad"], gw.deployments["good"]
            assert not bad_rt.breaker.available() and bad.calls == 2
            cfg = tmp_path / "new.yaml"
            cfg.write_text(yaml.safe_dump({**conf, "deployments": [
                list_dep("bad", bad.base_url, 1.0, 1.0), list_dep("good", good.base_url, 2.0, 2.0)]}))
            gw.config_path = str(cfg)
            st, _, report = await g.post("/admin/reload", b"", ADMIN_KEY)
            assert st == 200 and report["deployments"]["kept"] == ["bad"] and report["deployments"]["changed"] == ["good"]
            assert gw.deployments["bad"] is bad_rt and not bad_rt.breaker.available()  # still open: not tried
            assert gw.deployments["good"] is not good_rt
            st, h, _ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS, "max_tokens": 5}, key)
            assert st == 200 and h["x-tokenomy-deployment"] == "good" and bad.calls == 2
            assert g.metering.usage("t")["requests"] == 3


async def test_reload_without_a_config_file_is_a_clear_400(tmp_path):
    async with stubs(Stub()) as (a,):
        async with gateway({"deployments": [list_dep("a", a.base_url, 1.0, 1.0)]}, tmp_path / "ledger") as g:
            st, _, body = await g.post("/admin/reload", b"", ADMIN_KEY)
            assert st == 400 and body["error"]["code"] == "invalid_config"
            assert "started without --config" in body["error"]["message"]



async def test_reload_starts_the_emulator_of_a_new_emulated_deployment(tmp_path):
    async with stubs(Stub(out_tokens=3)) as (a,):
        conf = {"deployments": [list_dep("a", a.base_url, 1.0, 1.0)]}
        async with gateway(conf, tmp_path / "ledger") as g:
            cfg = tmp_path / "new.yaml"
            cfg.write_text(yaml.safe_dump({"deployments": [
                list_dep("a", a.base_url, 1.0, 1.0),
                {"name": "e", "model": "llama-3-8b", "pricing": {"list": {"input": 1.0, "output": 1.0}},
                 "emulate": {"model": "llama-3-8b", "accelerator": "h100", "time_scale": 0.001}}]}))
            g.gw.config_path = str(cfg)
            st, _, report = await g.post("/admin/reload", b"", ADMIN_KEY)
            assert st == 200 and report["deployments"]["added"] == ["e"] and report["deployments"]["kept"] == ["a"]
            assert g.gw.deployments["e"].base_url.startswith("http://127.0.0.1:")
            st, h, body = await g.post("/v1/chat/completions", {"model": "e", "messages": MSGS, "max_tokens": 4}, g.key())
            assert st == 200 and h["x-tokenomy-deployment"] == "e" and body["usage"]["completion_tokens"] == 4
            assert a.calls == 0
