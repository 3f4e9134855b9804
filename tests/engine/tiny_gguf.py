"""Write a tiny random-weight llama GGUF that llama.cpp loads and serves.

2 blocks, 64 wide, 4 heads (2 KV heads), FFN 128, context 512, f32 weights; a real
"llama" (SentencePiece-style) tokenizer section with a 259-token byte vocabulary:
`<unk>`, `<s>`, `</s>`, then `<0x00>`..`<0xFF>`. Any UTF-8 text tokenizes (byte
fallback), so chat completions work; the generated text is random bytes.

Usable as a script: `python tests/engine/tiny_gguf.py out.gguf`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

N_LAYERS = 2
N_EMBD = 64
N_HEADS = 4
N_KV_HEADS = 2
N_FF = 128
N_CTX = 512
HEAD_DIM = N_EMBD // N_HEADS  # 16 = rope dimension
VOCAB = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
# 2 = unknown, 3 = control, 6 = byte (gguf.TokenType values)
TOKEN_TYPES = [2, 3, 3] + [6] * 256
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def write_tiny_llama(path: Path, *, seed: int = 0) -> Path:
    """Write the model to `path` (deterministic for a given seed) and return the path."""
    import gguf  # imported here: only the engine tests need it

    rng = np.random.default_rng(seed)

    def weight(out_dim: int, in_dim: int) -> np.ndarray:
        # numpy shape (out, in); small scale keeps logits finite through 2 blocks
        return (rng.standard_normal((out_dim, in_dim)) * 0.02).astype(np.float32)

    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tokenomy-tiny-llama")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEADS)
    writer.add_head_count_kv(N_KV_HEADS)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(0)  # all f32

    writer.add_tokenizer_model("llama")
    writer.add_token_list(VOCAB)
    writer.add_token_scores([0.0] * len(VOCAB))
    writer.add_token_types(TOKEN_TYPES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(CHAT_TEMPLATE)

    n_vocab = len(VOCAB)
    kv_dim = HEAD_DIM * N_KV_HEADS
    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, N_EMBD))
    for i in range(N_LAYERS):
        b = f"blk.{i}"
        writer.add_tensor(f"{b}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{b}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"{b}.attn_q.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"{b}.attn_k.weight", weight(kv_dim, N_EMBD))
        writer.add_tensor(f"{b}.attn_v.weight", weight(kv_dim, N_EMBD))
        writer.add_tensor(f"{b}.attn_output.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"{b}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{b}.ffn_up.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"{b}.ffn_down.weight", weight(N_EMBD, N_FF))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


if __name__ == "__main__":
    out = write_tiny_llama(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"))
    print(out, out.stat().st_size, "bytes")
