"""Hypothesis on the gateway's request parsing (gateway/validate.py), called directly: any bytes
or JSON value gives either a parsed request or the typed 400 ApiError naming the field, never
another exception."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tokenomy.gateway import validate as v
from tokenomy.gateway.errors import ApiError, error_body
from tokenomy.tokens import count_chat_tokens, count_tokens

SETTINGS = settings(max_examples=500, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# JSON values as orjson yields them (orjson rejects ints beyond 64 bits, so do we).
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)
# Near-valid requests: the real field names with random values, so parsing gets deep.
FIELDS = ["model", "messages", "prompt", "stream", "max_tokens", "max_completion_tokens", "n", "stream_options",
          "role", "content", "tool_calls", "name"]
messages = st.lists(st.one_of(json_values, st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "system", "assistant"]), json_values)},
    optional={"content": st.one_of(st.text(max_size=40), st.lists(json_values, max_size=3), json_values),
              "tool_calls": json_values, "name": json_values})), max_size=4)
bodies = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6),
    st.fixed_dictionaries({"model": st.one_of(st.text(max_size=10), json_values), "messages": messages},
                          optional={"stream": json_values, "max_tokens": json_values, "n": json_values,
                                    "max_completion_tokens": json_values}),
    st.fixed_dictionaries({"model": st.text(max_size=10),
                           "prompt": st.one_of(st.text(), st.lists(st.text(max_size=10), max_size=4),
                                               st.lists(st.integers(0, 2**64 - 1), max_size=4), json_values)}),
)


def _check_error(err: ApiError) -> None:
    assert err.status == 400
    assert err.message and "Traceback" not in err.message
    assert err.code in {"invalid_json", "invalid_type", "invalid_value", "missing_required_parameter"}
    body = orjson.loads(error_body(err.status, err.message, err.param, err.code))
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"


@SETTINGS
@given(raw=st.one_of(st.binary(max_size=200), json_values.map(orjson.dumps),
                     bodies.map(orjson.dumps)))
@example(raw=b"")
@example(raw=b"\xff\xfe")
@example(raw=b'"\\ud800"')
@example(raw=b"[1]")
@example(raw=b"99999999999999999999999")
def test_parse_body_gives_a_dict_or_a_400(raw: bytes):
    try:
        body = v.parse_body(raw)
    except ApiError as err:
        _check_error(err)
        assert err.code == "invalid_json"
        return
    assert isinstance(body, dict)
    assert body == orjson.loads(raw)


def _parse_chat(body: dict) -> tuple:
    """What proxy.Gateway._handle parses for /v1/chat/completions, in its order."""
    model = v.require_str(body, "model")
    stream = v.opt_bool(body, "stream")
    mt = v.max_tokens(body)
    msgs = v.chat_messages(body)
    n = v.opt_pos_int(body, "n")
    return model, stream, mt, count_chat_tokens(msgs), n


def _parse_completion(body: dict) -> tuple:
    model = v.require_str(body, "model")
    stream = v.opt_bool(body, "stream")
    mt = v.max_tokens(body)
    prompt = v.completion_prompt(body)
    return model, stream, mt, prompt if isinstance(prompt, int) else count_tokens(prompt)


@SETTINGS
@given(body=bodies)
@example(body={"model": "m", "messages": [{"role": "user", "content": [1, None, {"type": []}, {"text": 5}]}]})
@example(body={"model": "m", "messages": [{"role": "u", "tool_calls": [{"function": {"name": 1, "arguments": {}}}]}]})
@example(body={"model": "m", "messages": [], "max_tokens": 0})
@example(body={"model": "m", "prompt": [True, 1]})
def test_chat_and_completion_parsing_give_a_request_or_a_typed_400(body: dict):
    for parse in (_parse_chat, _parse_completion):
        try:
            model, stream, mt, tokens, *rest = parse(body)
        except ApiError as err:
            _check_error(err)
            assert err.param is not None  # names the field
            continue
        assert isinstance(model, str) and isinstance(stream, bool)
        assert mt is None or (isinstance(mt, int) and 1 <= mt <= getattr(v, "MAX_OUTPUT_TOKENS", 2**64))
        assert isinstance(tokens, int) and tokens >= 0
        for n in rest:
            assert n is None or (isinstance(n, int) and n >= 1)


@pytest.mark.parametrize(("body", "param", "code"), [
    ({}, "model", "missing_required_parameter"),
    ({"model": 1}, "model", "invalid_type"),
    ({"model": "m"}, "messages", "missing_required_parameter"),
    ({"model": "m", "messages": []}, "messages", "invalid_value"),
    ({"model": "m", "messages": [1]}, "messages[0]", "invalid_type"),
    ({"model": "m", "messages": [{}]}, "messages[0].role", "invalid_type"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"model": "m", "messages": [{"role": "user"}], "max_tokens": True}, "max_tokens", "invalid_type"),
    ({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}, "stream", "invalid_type"),
])
def test_chat_errors_name_the_field(body, param, code):
    with pytest.raises(ApiError) as info:
        _parse_chat(body)
    assert (info.value.status, info.value.param, info.value.code) == (400, param, code)
