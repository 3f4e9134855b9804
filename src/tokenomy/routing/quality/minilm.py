"""all-MiniLM-L6-v2 sentence embeddings of one prompt, computed directly (no sentence-transformers).

Why (profiled with torch 2.13 CPU, one thread, on the 2-core dev machine at load average 6-9):
- SentenceTransformer.encode on one prompt cost ~14 ms CPU at 3 word pieces and ~34 ms at 64.
  ~88% of BertModel's time is its 37 fp32 Linear layers. At a few tokens they are bound by the
  weights, not the arithmetic: each call streams ~42 MB of fp32 weights and re-lays each one out
  for the GEMM (running one layer's weights 6 times instead of 6 layers' cut a 3-token forward
  from 9.6 to 5.6 ms); at 64 tokens they are compute bound (1.36 GFLOP). The rest is per-call
  overhead in sentence-transformers (device resolution over all parameters, batching, sorting)
  and transformers (mask and output machinery, the unused pooler Linear).
- The Rust tokenizer tokenises the whole text before truncating: ~25 ms CPU for 32k chars.

So this module runs the 6 BERT layers itself: token ids -> embeddings -> (fused QKV projection,
SDPA attention, exact-erf GELU feed-forward, fp32 residuals and LayerNorms) x 6 -> mean pooling ->
L2 normalisation, with no padding and no attention mask (one prompt at a time). Where the CPU has
native bf16 dot products (AVX512-BF16 / AMX), Linear layers run in bfloat16 on weights prepacked
once for oneDNN (half the bytes, no per-call re-layout): ~2.7 ms CPU at 1 word piece and ~11 ms
at 64 on that machine, cosine to the fp32 embedding >= 0.99997 on the 1,015 benchmark prompts.
Elsewhere they stay fp32 (equal to sentence-transformers within 2e-7). Measured and rejected:
int8 dynamic quantisation of the Linear layers (cosine to fp32 down to 0.89: MiniLM's activation
outliers defeat per-tensor activation scales; int8 for only the attention projections kept 0.99
but saved little).

Only a prefix of the text is tokenised: BERT's pre-tokenizer splits words at whitespace and each word
tokenises on its own, so a prefix cut at whitespace tokenises to a prefix of the full text's word
pieces; once that prefix fills the cap it is the answer (identical to tokenising everything).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

HIDDEN = 384
HEADS = 12
LAYERS = 6
EPS = 1e-12
MAX_POSITIONS = 512
_WHITESPACE = (" ", "\n", "\t", "\r")   # whitespace for BERT's normaliser on every reading
_CHARS_PER_TOKEN = 16                    # first prefix tried: 16 chars per word piece (English: ~4)


@lru_cache(maxsize=1)
def bf16_native() -> bool:
    """True when this CPU computes bf16 dot products natively (then bf16 Linear layers are faster)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@lru_cache(maxsize=1)
def _packing_works() -> bool:
    """True when oneDNN's prepacked bf16 Linear (the op torch's own compiler uses; ~2x faster than
    F.linear at a few tokens, ~1.3x at 64, as each call no longer re-lays-out the weight) exists
    here and agrees with F.linear; otherwise bf16 Linear layers run through F.linear."""
    try:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(64, 32, generator=g).to(torch.bfloat16)
        b = torch.randn(64, generator=g).to(torch.bfloat16)
        x = torch.randn(1, 5, 32, generator=g).to(torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)
        y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "gelu", [], "none").float()
    except (AttributeError, RuntimeError):
        return False
    ref = F.gelu(F.linear(x.float(), w.float(), b.float()))
    return y.shape == ref.shape and bool(torch.allclose(y, ref, rtol=2e-2, atol=2e-2))


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv_w: torch.Tensor
    qkv_b: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    up_w: torch.Tensor
    up_b: torch.Tensor
    down_w: torch.Tensor
    down_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor


class MiniLM:
    """The bundled all-MiniLM-L6-v2 (BERT, 6 x 384, mean pooling, unit norm) for one prompt at a time."""

    def __init__(self, path: Path, *, precision: str = "fp32"):
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
        self.precision = precision
        self._dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        sd = load_file(str(Path(path) / "model.safetensors"))
        self.word = sd["embeddings.word_embeddings.weight"]
        self.pos = sd["embeddings.position_embeddings.weight"]
        self.type0 = sd["embeddings.token_type_embeddings.weight"][0]   # single segment: type 0
        self.ln_w, self.ln_b = sd["embeddings.LayerNorm.weight"], sd["embeddings.LayerNorm.bias"]
        lin = self._dtype

        def get(p: str, names: tuple[str, ...], kind: str) -> torch.Tensor:
            return torch.cat([sd[f"{p}{n}.{kind}"] for n in names]).to(lin).contiguous()

        self.layers = []
        for i in range(LAYERS):
            p = f"encoder.layer.{i}."
            qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
            self.layers.append(_Layer(
                get(p, qkv, "weight"), get(p, qkv, "bias"),
                get(p, ("attention.output.dense",), "weight"), get(p, ("attention.output.dense",), "bias"),
                sd[p + "attention.output.LayerNorm.weight"], sd[p + "attention.output.LayerNorm.bias"],
                get(p, ("intermediate.dense",), "weight"), get(p, ("intermediate.dense",), "bias"),
                get(p, ("output.dense",), "weight"), get(p, ("output.dense",), "bias"),
                sd[p + "output.LayerNorm.weight"], sd[p + "output.LayerNorm.bias"]))
        self._packed = self._dtype is torch.bfloat16 and _packing_works()
        if self._packed:   # weights reordered once into oneDNN's blocked layout
            pack = torch.ops.mkldnn._reorder_linear_weight
            self.layers = [_Layer(pack(ly.qkv_w, None), ly.qkv_b, pack(ly.out_w, None), ly.out_b, ly.ln1_w, ly.ln1_b,
                                  pack(ly.up_w, None), ly.up_b, pack(ly.down_w, None), ly.down_b, ly.ln2_w, ly.ln2_b)
                           for ly in self.layers]
        tok = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        tok.no_padding()          # tokenizer.json pads and truncates to 128: we do neither
        tok.no_truncation()
        self.tokenizer = tok
        self.sep_id = tok.token_to_id("[SEP]")

    def token_ids(self, text: str, max_tokens: int) -> list[int]:
        """[CLS] + the first max_tokens - 2 word pieces + [SEP] (exactly what truncating the full
        tokenisation gives), tokenising only as much of the text as needed."""
        limit = _CHARS_PER_TOKEN * max_tokens
        while True:
            whole = len(text) <= limit
            if whole:
                piece = text
            else:
                cut = max(text.rfind(c, 0, limit) for c in _WHITESPACE)
                if cut <= 0:              # no word boundary in the prefix yet
                    limit *= 2
                    continue
                piece = text[:cut]
            ids = self.tokenizer.encode(piece).ids
            if len(ids) > max_tokens:
                return ids[:max_tokens - 1] + [self.sep_id]
            if whole or len(ids) == max_tokens:
                return ids
            limit *= 2

    def _linear(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, gelu: bool = False) -> torch.Tensor:
        """x @ w.T + b (then GELU); fp32 in and out, except that with bf16 weights a GELU output
        stays bf16 (its only use is the next Linear's input)."""
        if self._dtype is torch.float32:
            y = F.linear(x, w, b)
            return F.gelu(y) if gelu else y
        x = x.to(torch.bfloat16)
        if self._packed:
            y = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu" if gelu else "none", [], "none" if gelu else "")
        else:
            y = F.linear(x, w, b)
            if gelu:
                return F.gelu(y.float()).to(torch.bfloat16)
        return y if gelu else y.float()

    @torch.inference_mode()
    def embed_ids(self, ids: list[int]) -> torch.Tensor:
        """Unit-norm float32 embedding (384,) of one tokenised prompt."""
        n = len(ids)
        if not 1 <= n <= MAX_POSITIONS:
            raise ValueError(f"need 1..{MAX_POSITIONS} token ids, got {n}")
        t = torch.tensor(ids, dtype=torch.long)
        x = F.layer_norm(F.embedding(t, self.word) + self.pos[:n] + self.type0, (HIDDEN,),
                         self.ln_w, self.ln_b, EPS).unsqueeze(0)
        for ly in self.layers:
            q, k, v = self._linear(x, ly.qkv_w, ly.qkv_b).view(1, n, 3, HEADS, HIDDEN // HEADS).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(1, n, HIDDEN)
            x = F.layer_norm(x + self._linear(a, ly.out_w, ly.out_b), (HIDDEN,), ly.ln1_w, ly.ln1_b, EPS)
            h = self._linear(x, ly.up_w, ly.up_b, gelu=True)
            x = F.layer_norm(x + self._linear(h, ly.down_w, ly.down_b), (HIDDEN,), ly.ln2_w, ly.ln2_b, EPS)
        return F.normalize(x[0].mean(0), dim=0)

    def embed(self, text: str, max_tokens: int) -> torch.Tensor:
        return self.embed_ids(self.token_ids(text, max_tokens))
