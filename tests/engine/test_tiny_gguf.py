"""The generated model file itself (needs only the gguf package, not the engine)."""

from __future__ import annotations

import hashlib

import pytest

from engine_procs import require_engine
from tiny_gguf import N_EMBD, N_FF, N_LAYERS, VOCAB, write_tiny_llama


@pytest.fixture(autouse=True)
def _needs_gguf() -> None:
    require_engine(("gguf",))  # skip locally / fail in CI when missing


def test_tiny_llama_file_has_the_known_to_load_shape(tmp_path) -> None:
    import gguf

    path = write_tiny_llama(tmp_path / "tiny.gguf", seed=0)
    reader = gguf.GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 3 + 9 * N_LAYERS
    assert list(tensors["token_embd.weight"].shape) == [N_EMBD, len(VOCAB)]  # gguf lists (in, out)
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [N_FF, N_EMBD]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [N_EMBD, 32]  # 2 KV heads x 16
    tokens = reader.fields["tokenizer.ggml.tokens"]
    assert len(tokens.data) == 259
    assert bytes(tokens.parts[tokens.data[3]]).decode() == "<0x00>"
    assert bytes(tokens.parts[tokens.data[-1]]).decode() == "<0xFF>"
    model = reader.fields["tokenizer.ggml.model"]
    assert bytes(model.parts[model.data[0]]).decode() == "llama"


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path) -> None:
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    a = digest(write_tiny_llama(tmp_path / "a.gguf", seed=0))
    b = digest(write_tiny_llama(tmp_path / "b.gguf", seed=0))
    c = digest(write_tiny_llama(tmp_path / "c.gguf", seed=1))
    assert a == b != c
