import pytest
from aiohttp import web

from tokenomy.routing.cascade import JudgeVerifier, parse_score
from tokenomy.routing.cascade.judge import JudgeError, normalize


@pytest.mark.parametrize("text, expected", [
    ("Score: 8", 8.0), ("score:7", 7.0), ('{"score": 9}', 9.0), ('{"score": "6"}', 6.0),
    ("I would rate this 7/10.", 7.0), ("Rating: 4 out of 10", 4.0), ("**9**", 9.0), ("10", 10.0),
    ("The answer is fine. Score: 3\n", 3.0), ("Score: 0", None), ("Score: 11 out of 10", None),
    ("", None), ("great answer", None), ("3 apples and 4 pears", None), ("  5  ", 5.0),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_normalize_and_rubric_check():
    assert normalize(1) == 0.0 and normalize(10) == 1.0
    with pytest.raises(Exception):
        JudgeVerifier("http://x/v1", None, "m", rubric="no placeholders")
    j = JudgeVerifier("http://x/v1", None, "m")
    msg = j.messages("what is {x}?", "it is {y}")[0]["content"]   # braces survive
    assert "what is {x}?" in msg and "it is {y}" in msg


async def test_judge_against_fake_openai_server(aiohttp_unused_port=None):
    """A real local HTTP server that answers like an OpenAI endpoint with a fixed grade."""
    seen = {}

    async def chat(request):
        body = await request.json()
        seen["body"], seen["auth"] = body, request.headers.get("authorization")
        return web.json_response({"id": "x", "model": body["model"], "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Score: 8"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53}})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        j = JudgeVerifier(f"http://127.0.0.1:{port}/v1", "sk-test", "judge-model")
        res = await j.judge("What is 2+2?", "4")
        assert res.raw_score == 8.0 and res.score == pytest.approx(7 / 9) and res.usage["total_tokens"] == 53
        assert seen["auth"] == "Bearer sk-test" and seen["body"]["model"] == "judge-model"
        assert "What is 2+2?" in seen["body"]["messages"][0]["content"] and seen["body"]["temperature"] == 0
        assert await j.ascore("q", "a") == pytest.approx(7 / 9)
    finally:
        await runner.cleanup()


async def test_judge_call_path_against_emulator():
    """The emulator's text is synthetic (no real grading), so this checks only the HTTP call,
    usage accounting and the unparseable-reply path (score None), plus fault handling."""
    from tokenomy.emulator import EmulatorConfig, serve_emulator

    cfg = EmulatorConfig(model="llama-3-8b", accelerator="h100", time_scale=0.0)
    async with serve_emulator(cfg, host="127.0.0.1", port=0) as base_url:
        j = JudgeVerifier(base_url, "none", "llama-3-8b", max_tokens=8)
        res = await j.judge("Is 7 prime?", "Yes, 7 is prime.")
        assert res.usage["completion_tokens"] >= 1 and res.usage["prompt_tokens"] > 20
        assert res.text and res.score == parse_score(res.text)   # synthetic words: normally None
        bad = JudgeVerifier(base_url, "none", "llama-3-8b", extra_headers={"x-emulator-fault": "500"})
        with pytest.raises(JudgeError, match="HTTP 500"):
            await bad.judge("q", "a")
        garbage = JudgeVerifier(base_url, "none", "llama-3-8b", extra_headers={"x-emulator-fault": "garbage"})
        with pytest.raises(JudgeError):
            await garbage.judge("q", "a")
    unreachable = JudgeVerifier("http://127.0.0.1:9/v1", None, "m", timeout_s=2)
    with pytest.raises(JudgeError):
        await unreachable.judge("q", "a")
