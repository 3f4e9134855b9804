"""What an OpenAI-compatible upstream receives for a /v1/messages request (a recording stub
behind the real gateway), a stream that breaks mid-way, and the request mapping's rejections."""

from __future__ import annotations

import base64

import anthropic
import pytest
from anthropic import AsyncAnthropic

from tests.gateway.conftest import Stub, gateway, list_dep, stubs
from tokenomy.gateway.errors import ApiError
from tokenomy.gateway.messages.request import to_chat
from tokenomy.gateway.messages.response import to_error, to_message

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


@pytest.fixture
async def stubbed(tmp_path):
    async with stubs(Stub(out_tokens=4), Stub(mode="broken-stream", out_tokens=6)) as (up, broken):
        cfg = {"deployments": [list_dep("m@stub", up.base_url, 1.0, 2.0, model="up-model"),
                               list_dep("b@stub", broken.base_url, 1.0, 2.0, model="b")],
               "model_groups": {"m": {"deployments": ["m@stub"]}, "b": {"deployments": ["b@stub"]}}}
        async with gateway(cfg, tmp_path / "ledger") as g:
            c = AsyncAnthropic(base_url=g.url, api_key=g.key("t"), max_retries=0)
            yield g, c, up
            await c.close()


async def test_upstream_sees_the_chat_request(stubbed):
    g, c, up = stubbed
    raw = await c.messages.with_raw_response.create(
        model="m", max_tokens=40, system="sys", stop_sequences=["END"],
        metadata={"user_id": "u-1"}, tools=[{"name": "f", "input_schema": {"type": "object"}}],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True}, extra_body={"top_k": 5, "temperature": 0.3, "top_p": 0.9},  # 2023-06-01 fields
        messages=[{"role": "user", "content": [
                      {"type": "text", "text": "look"},
                      {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                      {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "calling"},
                                                    {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}]},
                  {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
                                                "content": [{"type": "text", "text": "boom"}]}]}])
    m = await raw.parse()
    (body,) = up.bodies
    assert body["model"] == "up-model" and body["max_tokens"] == 40 and body["stop"] == ["END"]
    assert (body["temperature"], body["top_p"], body["user"]) == (0.3, 0.9, "u-1")
    assert body["tools"] == [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is False and "top_k" not in body
    sys_m, user, asst, tool = body["messages"]
    assert sys_m == {"role": "system", "content": "sys"}
    assert user["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert user["content"][2]["image_url"]["url"] == "https://example.com/a.jpg"
    assert asst == {"role": "assistant", "content": "calling", "tool_calls": [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]}
    assert tool == {"role": "tool", "tool_call_id": "toolu_1", "content": "Error: boom"}
    assert "top_k" in raw.headers["x-tokenomy-warning"]
    (ev,) = g.metering.events("t")
    assert m.usage.output_tokens == ev.output_tokens == 4 and m.usage.input_tokens == ev.input_tokens
    assert m.content[0].text == " hello" * 4 and m.stop_reason == "end_turn"


async def test_stream_broken_mid_way_ends_with_an_error_event(stubbed):
    g, c, _ = stubbed
    got = []
    with pytest.raises(anthropic.APIStatusError) as ei:
        async with c.messages.stream(model="b", max_tokens=20, messages=[{"role": "user", "content": "x"}]) as s:
            async for ev in s:
                got.append(ev.type)
    assert got[0] == "message_start" and "message_stop" not in got
    assert "upstream stream broken" in str(ei.value)
    (ev,) = g.metering.events("t")
    assert ev.status == "upstream_error" and ev.http_status == 502


@pytest.mark.parametrize(("body", "param"), [
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": True, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]}, "messages.0.content.0.type"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA=="}}]}]},
     "messages.0.content.0.source.media_type"),
    ({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]}, "temperature"),
    ({"model": "m", "max_tokens": 5, "tools": [{"type": "web_search_20250305", "name": "w"}],
      "messages": [{"role": "user", "content": "x"}]}, "tools.0"),
    ({"model": "m", "max_tokens": 5, "tool_choice": {"type": "required"}, "messages": [{"role": "user", "content": "x"}]},
     "tool_choice"),
    ({"model": "m", "max_tokens": 5, "frequency_penalty": 1, "messages": [{"role": "user", "content": "x"}]},
     "frequency_penalty"),
])
def test_rejections_name_the_field(body, param):
    with pytest.raises(ApiError) as ei:
        to_chat(body)
    assert ei.value.status == 400 and ei.value.param == param


def test_response_mapping():
    usage = {"prompt_tokens": 100, "completion_tokens": 7,
             "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30}}
    obj = {"choices": [{"message": {"content": "hi", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 2}'}}]},
        "finish_reason": "tool_calls"}], "usage": usage}
    m = to_message(obj, "alias", [], "req_abc")
    assert m["id"] == "msg_abc" and m["model"] == "alias" and m["stop_reason"] == "tool_use"
    assert m["content"] == [{"type": "text", "text": "hi"}, {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 2}}]
    assert m["usage"] == {"input_tokens": 10, "output_tokens": 7, "cache_read_input_tokens": 60,
                          "cache_creation_input_tokens": 30}
    hit = to_message({"choices": [{"message": {"content": "a"}, "finish_reason": "stop", "stop_reason": "END"}]},
                     "m", ["END"], "req_1")
    assert (hit["stop_reason"], hit["stop_sequence"]) == ("stop_sequence", "END")
    st, body, final = to_error(429, b'{"error": {"message": "spent", "code": "budget_exhausted"}}')
    assert (st, body["error"]["type"], final) == (402, "billing_error", True)
    st, body, final = to_error(429, b'{"error": {"message": "slow down", "code": "rate_limit_exceeded"}}')
    assert (st, body["error"]["type"], final) == (429, "rate_limit_error", False)
    assert to_error(502, b"garbage")[1]["error"] == {"type": "api_error", "message": "HTTP 502"}


def test_encoder_frames_a_buffered_answer_in_one_write():
    """A cascade's answer is written as one buffered SSE body (settle.sse_from_unary): role and
    text in one chunk, the finish chunk, the usage chunk, the cost comment, [DONE]."""
    import json

    from tokenomy.gateway.messages.sse import MessagesEncoder

    head = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    chunks = [{**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi all"}, "finish_reason": None}]},
              {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
              {**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2,
                                               "prompt_tokens_details": {"cached_tokens": 4}}}]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    body += b': x-tokenomy {"cost_usd": "1"}\n\ndata: [DONE]\n\n'
    enc = MessagesEncoder("msg_1", "alias", 9, [])
    out = enc.feed(body[:37]) + enc.feed(body[37:])  # split anywhere
    events = [b for b in out.decode().split("\n\n") if b]
    names = [b.split("\n")[0] for b in events]
    assert names == ["event: message_start", "event: ping", "event: content_block_start", "event: content_block_delta",
                     ": x-tokenomy {\"cost_usd\": \"1\"}", "event: content_block_stop", "event: message_delta",
                     "event: message_stop"]
    delta = json.loads(events[6].split("\n")[1].removeprefix("data: "))
    assert delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 4,
                              "cache_creation_input_tokens": 0}
    assert enc.feed(b"data: [DONE]\n\n") == b""  # nothing after message_stop
