"""OpenTelemetry traces through a real gateway, exported over OTLP/HTTP to a real receiver on
127.0.0.1 (protobuf decoded with opentelemetry-proto): span names, parent/child structure,
GenAI and tokenomy attributes, the traceparent each upstream attempt received, sampling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gw_helpers import Stub, gateway, list_dep, stubs  # noqa: E402
from otlp_receiver import receiver  # noqa: E402

from tokenomy.config import parse_config  # noqa: E402
from tokenomy.errors import ConfigError  # noqa: E402

MSGS = [{"role": "user", "content": "what is a span?"}]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


def _cfg(deps: list[dict], url: str, **tracing) -> dict:
    return {"deployments": deps,
            "model_groups": {"m": {"deployments": [d["name"] for d in deps], "policy": "cost"}},
            "retry": {"max_attempts": 3, "backoff_base_s": 0},
            "tracing": {"endpoint": url, "service_name": "gw-test", "headers": {"x-collector-token": "env:OTLP_TOKEN"},
                        **tracing}}


def _traceparent(h: dict) -> tuple[str, str, str]:
    version, trace_id, parent, flags = h["traceparent"].split("-")
    assert version == "00"
    return trace_id, parent, flags


@pytest.mark.parametrize("fastpath", ["1", "0"])
async def test_fallback_request_spans_attributes_and_upstream_traceparent(tmp_path, monkeypatch, fastpath):
    """A client-traced unary request whose cheap deployment fails (5xx) and falls back: the
    server span continues the client's trace (sample_ratio 0: kept by the parent's sampled
    flag), with route, two attempt and one ledger-commit children; each upstream saw its own
    attempt's span as parent. The lean front (fastpath 1) and aiohttp (0) trace alike."""
    monkeypatch.setenv("TOKENOMY_GATEWAY_FASTPATH", fastpath)
    monkeypatch.setenv("OTLP_TOKEN", "s3cret")
    with receiver() as rec:
        async with stubs(Stub(mode="500"), Stub(out_tokens=4)) as (bad, good):
            deps = [list_dep("cheap", bad.base_url, 0.1, 0.1, model="cheap-model"),
                    list_dep("dear", good.base_url, 1.0, 2.0, model="dear-model")]
            async with gateway(_cfg(deps, rec.url, sample_ratio=0.0), tmp_path / "data") as g:
                key = g.key("acme")
                st, h, body = await g.post("/v1/chat/completions", {
                    "model": "m", "messages": MSGS, "max_tokens": 5, "temperature": 0.5, "user": "alice"}, key,
                    headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "tracestate": "vendor=x"})
                assert st == 200 and h["x-tokenomy-deployment"] == "dear"
        # the gateway stopped: its spans are flushed
    assert rec.requests and all(r["x-collector-token"] == "s3cret" for r in rec.requests)
    assert {s.service for s in rec.spans} == {"gw-test"}
    assert sorted(s.name for s in rec.spans) == ["POST /v1/chat/completions", "chat cheap-model", "chat dear-model",
                                                 "tokenomy.ledger.commit", "tokenomy.route"]
    server, = rec.by_name("POST /v1/chat/completions")
    assert server.kind == "SERVER" and server.trace_id == CLIENT_TRACE and server.parent_span_id == CLIENT_SPAN
    assert all(s.trace_id == CLIENT_TRACE for s in rec.spans)
    children = [s for s in rec.spans if s is not server]
    assert all(s.parent_span_id == server.span_id for s in children)

    u = body["usage"]
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.request.model"] == "m"
    assert a["gen_ai.request.max_tokens"] == 5 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.usage.input_tokens"] == u["prompt_tokens"] and a["gen_ai.usage.output_tokens"] == 4
    assert a["tokenomy.tenant"] == "acme" and a["tokenomy.user"] == "alice" and a["tokenomy.deployment"] == "dear"
    assert a["tokenomy.cost_usd"] == pytest.approx(float(h["x-tokenomy-cost-usd"]), rel=1e-12)
    assert a["tokenomy.cost_usd"] == pytest.approx((u["prompt_tokens"] * 1.0 + 4 * 2.0) / 1e6, rel=1e-12)
    assert a["tokenomy.energy_j"] == float(h["x-tokenomy-energy-j"])
    assert a["http.response.status_code"] == 200 and a["tokenomy.request_id"] == h["x-tokenomy-request-id"]
    assert a["tokenomy.routing.deployment"] == "cheap" and a["tokenomy.routing.candidates"] == ["cheap", "dear"]

    route, = rec.by_name("tokenomy.route")
    assert route.kind == "INTERNAL" and route.attributes["tokenomy.routing.policy"] == "cost"
    assert route.attributes["tokenomy.model_group"] == "m" and route.attributes["tokenomy.reserved_usd"] > 0

    first, = rec.by_name("chat cheap-model")
    second, = rec.by_name("chat dear-model")
    assert first.kind == second.kind == "CLIENT"
    assert first.attributes["tokenomy.attempt"] == 1 and second.attributes["tokenomy.attempt"] == 2
    assert first.attributes["error.type"] == "http_5xx" and first.status_code == 2
    assert first.attributes["http.response.status_code"] == 500
    assert first.start_ns <= first.end_ns <= second.start_ns  # retries/fallbacks are visible in order
    b = second.attributes
    assert b["gen_ai.provider.name"] == "openai" and b["gen_ai.system"] == "openai"
    assert b["gen_ai.request.model"] == "dear-model" and b["gen_ai.response.model"] == "dear-model"
    assert b["gen_ai.response.finish_reasons"] == ["stop"] and b["gen_ai.response.id"] == "x"
    assert b["gen_ai.usage.input_tokens"] == u["prompt_tokens"] and b["gen_ai.usage.output_tokens"] == 4
    assert b["server.address"] == "127.0.0.1" and b["tokenomy.deployment"] == "dear" and second.status_code == 0

    commit, = rec.by_name("tokenomy.ledger.commit")
    assert commit.attributes["tokenomy.event_id"] == h["x-tokenomy-request-id"]

    # every attempt sent its own span as the parent upstream, in the client's trace
    assert _traceparent(bad.headers[0]) == (CLIENT_TRACE, first.span_id, "01")
    assert _traceparent(good.headers[0]) == (CLIENT_TRACE, second.span_id, "01")
    assert bad.headers[0]["tracestate"] == "vendor=x"


async def test_stream_attempt_span_lasts_the_stream_and_carries_usage(tmp_path):
    with receiver() as rec:
        async with stubs(Stub(out_tokens=6)) as (s,):
            async with gateway(_cfg([list_dep("d", s.base_url, 1.0, 1.0, model="up-model")], rec.url),
                               tmp_path / "data") as g:
                st, h, raw = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS, "stream": True}, g.key())
                assert st == 200 and raw.endswith(b"data: [DONE]\n\n")
    server, = rec.by_name("POST /v1/chat/completions")
    attempt, = rec.by_name("chat up-model")
    commit, = rec.by_name("tokenomy.ledger.commit")
    assert server.parent_span_id == "" and attempt.parent_span_id == server.span_id  # a new trace
    assert attempt.attributes["gen_ai.request.stream"] is True
    assert attempt.attributes["gen_ai.usage.output_tokens"] == 6 and attempt.attributes["gen_ai.response.model"] == "up-model"
    assert attempt.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert attempt.end_ns >= commit.end_ns  # the client span covers the whole stream, up to its commit
    assert server.attributes["gen_ai.usage.output_tokens"] == 6 and server.attributes["tokenomy.status"] == "ok"
    trace_id, parent, flags = _traceparent(s.headers[0])
    assert (trace_id, parent) == (server.trace_id, attempt.span_id)
    assert int(flags, 16) & 1 == 1  # sampled (0x02: the W3C level-2 random trace-id flag of a new trace)


async def test_sampling_ratio_and_parent_flag(tmp_path):
    """sample_ratio 0: no spans, nothing propagated; a client's unsampled trace context is passed
    on as it came (its sampled one is kept: the first test). parent_based false + ratio 0.5: exactly the trace ids below
    the ratio's bound are kept (TraceIdRatioBased compares the low 64 bits)."""
    with receiver() as rec:
        async with stubs(Stub(out_tokens=2)) as (s,):
            async with gateway(_cfg([list_dep("d", s.base_url, 1.0, 1.0)], rec.url, sample_ratio=0.0),
                               tmp_path / "a") as g:
                key = g.key()
                for _ in range(5):
                    assert (await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key))[0] == 200
                st, *_ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key,
                                      headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"})
                assert st == 200
        assert rec.spans == []
        assert all("traceparent" not in x for x in s.headers[:5])
        # not recorded here: the client's context goes upstream as it came
        assert _traceparent(s.headers[5]) == (CLIENT_TRACE, CLIENT_SPAN, "00")

    low, high = "0" * 16 + "0000000000000001", "0" * 16 + "ffffffffffffff00"
    with receiver() as rec:
        async with stubs(Stub(out_tokens=2)) as (s,):
            async with gateway(_cfg([list_dep("d", s.base_url, 1.0, 1.0)], rec.url, sample_ratio=0.5,
                                    parent_based=False), tmp_path / "b") as g:
                key = g.key()
                for tid in [low, high, low.replace("1", "2"), high.replace("f", "e")]:
                    st, *_ = await g.post("/v1/chat/completions", {"model": "m", "messages": MSGS}, key,
                                          headers={"traceparent": f"00-{tid}-{CLIENT_SPAN}-01"})
                    assert st == 200
    servers = rec.by_name("POST /v1/chat/completions")
    assert sorted(x.trace_id for x in servers) == sorted([low, low.replace("1", "2")])
    assert len(rec.spans) == 2 * 4  # server, route, attempt, commit of each kept request


async def test_refused_request_is_one_server_span_with_its_error(tmp_path):
    with receiver() as rec:
        async with stubs(Stub()) as (s,):
            async with gateway(_cfg([list_dep("d", s.base_url, 1.0, 1.0)], rec.url), tmp_path / "data") as g:
                st, _, body = await g.post("/v1/chat/completions", {"model": "nope", "messages": MSGS}, g.key())
                assert st == 404
    assert sorted(x.name for x in rec.spans) == ["POST /v1/chat/completions", "tokenomy.route"]
    server, = rec.by_name("POST /v1/chat/completions")
    route, = rec.by_name("tokenomy.route")
    assert server.attributes["http.response.status_code"] == 404 and server.attributes["error.type"] == "404"
    assert route.attributes["error.type"] == "model_not_found" and route.status_code == 2 and s.calls == 0


def test_tracing_config_errors_are_clear():
    base = {"deployments": [{"name": "a", "base_url": "http://x", "pricing": {"list": {"input": 1, "output": 1}}}]}
    for tracing, msg in [({"endpoint": "ftp://collector"}, "tracing.endpoint: must be the http:// or https:// URL"),
                         ({"endpoint": "http://c", "sample_ratio": 1.5}, "tracing.sample_ratio"),
                         ({"endpoint": "http://c", "protocol": "thrift"}, "tracing.protocol"),
                         ({"endpoint": "http://c", "exporter": "x"}, "tracing.exporter: Extra inputs are not permitted")]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
            parse_config({**base, "tracing": tracing})
    assert not parse_config(base).tracing.enabled


def test_gateway_runs_without_the_otel_extra(tmp_path):
    """opentelemetry made unimportable: the gateway builds and never imports it without tracing;
    with `tracing:` configured, one clear ConfigError names the extra to install."""
    script = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from tokenomy.config import parse_config
        from tokenomy.errors import ConfigError
        from tokenomy.gateway.app import build_app
        from tokenomy.metering import Metering
        base = {{"deployments": [{{"name": "a", "base_url": "http://x", "pricing": {{"list": {{"input": 1, "output": 1}}}}}}]}}
        build_app(parse_config(base), Metering.open({str(tmp_path / 'a')!r}))
        assert not any(m.startswith("opentelemetry") for m in sys.modules), "imported"
        try:
            build_app(parse_config({{**base, "tracing": {{"endpoint": "http://127.0.0.1:4318"}}}}),
                      Metering.open({str(tmp_path / 'b')!r}))
        except ConfigError as exc:
            print("ERR", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("ERR invalid config: tracing: needs the otel extra (pip install 'tokenomy[otel]': "
                                  "opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http); remove "
                                  "`tracing.endpoint` to run without traces")


def test_sampling_decision_rules():
    """The per-request decision (pure): parent's flag when parent-based, else TraceIdRatioBased on
    the parent's trace id; no or an invalid parent: the ratio on the random draw."""
    from tokenomy.observe.tracing import sampled

    half = 1 << 63
    tp = "00-{}-00f067aa0ba902b7-{}"
    low, high = "0" * 31 + "1", "f" * 32
    assert sampled(None, half - 1, half, True) and not sampled(None, half, half, True)
    assert sampled(tp.format(high, "01"), half, half, True)  # the parent's flag wins over the ratio
    assert not sampled(tp.format(low, "00"), 0, half, True)
    assert sampled(tp.format(low, "00"), half, half, False)  # not parent-based: the trace id's low 64 bits
    assert not sampled(tp.format(high, "01"), 0, half, False)
    for bad in ("junk", tp.format("0" * 32, "01"), tp.format(low, "01") + "-x", "ff" + tp.format(low, "01")[2:]):
        assert sampled(bad, 0, half, True) and not sampled(bad, half, half, True)  # as if absent
    assert not sampled(None, 0, 0, True) and sampled(None, (1 << 64) - 1, 1 << 64, True)  # ratio 0 and 1


async def test_anthropic_messages_endpoint_is_traced_too(tmp_path):
    """/v1/messages (Anthropic's API, served as chat through the same Gateway.handle)."""
    with receiver() as rec:
        async with stubs(Stub(out_tokens=3)) as (s,):
            async with gateway(_cfg([list_dep("d", s.base_url, 1.0, 1.0, model="up-model")], rec.url),
                               tmp_path / "data") as g:
                st, h, body = await g.post("/v1/messages", {"model": "m", "max_tokens": 8, "messages": MSGS}, g.key(),
                                           headers={"anthropic-version": "2023-06-01"})
                assert st == 200, body
    assert sorted(x.name for x in rec.spans) == ["POST /v1/messages", "chat up-model", "tokenomy.ledger.commit",
                                                 "tokenomy.route"]
    server, = rec.by_name("POST /v1/messages")
    assert server.attributes["gen_ai.usage.output_tokens"] == body["usage"]["output_tokens"] == 3
    assert server.attributes["gen_ai.request.max_tokens"] == 8


async def test_embeddings_are_traced_as_the_embeddings_operation(tmp_path):
    from tokenomy.config import default_config

    cfg = default_config(time_scale=0.01).model_dump(by_alias=True, exclude_none=True)
    with receiver() as rec:
        async with gateway({**cfg, "tracing": {"endpoint": rec.url}}, tmp_path / "data") as g:
            st, h, body = await g.post("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a b c", "d"]},
                                       g.key())
            assert st == 200, body
    server, = rec.by_name("POST /v1/embeddings")
    attempt, = [x for x in rec.spans if x.kind == "CLIENT"]
    assert attempt.name.startswith("embeddings ") and attempt.attributes["gen_ai.operation.name"] == "embeddings"
    assert server.attributes["gen_ai.operation.name"] == "embeddings"
    assert server.attributes["gen_ai.usage.input_tokens"] == body["usage"]["prompt_tokens"] > 0
    assert server.attributes["gen_ai.usage.output_tokens"] == 0 and attempt.parent_span_id == server.span_id
