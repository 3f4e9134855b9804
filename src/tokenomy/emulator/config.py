"""Configuration of one emulated deployment (a digital twin of model x accelerator x count)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EmulatorConfig(BaseModel):
    """One emulated OpenAI-compatible deployment.

    Timing comes from the perf model's step time under the real concurrent load;
    `time_scale` multiplies every sleep (0.01 = 100x faster than the hardware, 0 = as fast
    as possible) without changing the reported model-time figures.
    """

    model_config = ConfigDict(extra="forbid")

    model: str = "llama-3-8b"  # catalog model id
    accelerator: str = "h100"  # catalog accelerator id
    count: int = Field(1, ge=1)  # tensor-parallel degree (devices per replica)
    dtype: str = "bf16"  # weight format: bf16 | fp8 | int4-awq (tokenomy.perf.quant)
    kv_dtype: str = "bf16"  # KV-cache format: bf16 | fp8
    served_model_name: str | None = None  # name in /v1/models and responses; default: model
    time_scale: float = Field(1.0, ge=0.0)
    max_batch: int | None = Field(None, ge=1)  # max running sequences; default 256 (vLLM's)
    engine_efficiency: float = Field(1.0, gt=0.0)
    seed: int = 0
    prefill_chunk_tokens: int = Field(2048, ge=16)  # chunked-prefill token budget per step
    kv_cache_tokens: int | None = Field(None, ge=16)  # cap on KV capacity (default: the step model's)
    max_model_len: int | None = Field(None, ge=16)  # default: model context, capped by KV capacity
    fault_rate_500: float = Field(0.0, ge=0.0, le=1.0)  # random faults (seeded by `seed`)
    fault_rate_429: float = Field(0.0, ge=0.0, le=1.0)
    retry_after_seconds: int = Field(1, ge=0)  # Retry-After sent with 429s
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    prefix_caching: bool = True  # keep prompt KV blocks for reuse (vLLM's automatic prefix caching)
    kv_block_tokens: int = Field(16, ge=1, le=4096)  # KV block size; prefix hits come in whole blocks
    # POST /v1/embeddings: the native vector size and the per-input token limit (text-embedding-3-small:
    # 1,536 dimensions, 8,191 input tokens; platform.openai.com/docs/guides/embeddings, checked 2026-12).
    embedding_dimensions: int = Field(1536, ge=1, le=65536)
    embedding_max_input_tokens: int = Field(8191, ge=1)

    @property
    def name(self) -> str:
        return self.served_model_name or self.model


DEFAULT_MAX_BATCH = 256
