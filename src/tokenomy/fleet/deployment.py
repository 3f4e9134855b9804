"""A deployment: model x accelerator x count (tensor parallel) x dtype, resolved via the catalog
and the perf model into a step model plus its hourly rental price."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenomy.catalog.types import Accelerator, ModelArch
from tokenomy.errors import TokenomyError
from tokenomy.fleet.costing import rental_usd_per_hour


@dataclass(frozen=True)
class Deployment:
    model: ModelArch
    accelerator: Accelerator
    count: int = 1
    dtype: str = "bf16"
    engine_efficiency: float = 1.0
    provider: str | None = None
    price_class: str | None = None  # default hyperscaler on-demand (tokenomy.catalog.price_classes)
    step_model: Any = field(default=None, compare=False, repr=False)
    kv_dtype: str = "bf16"

    @property
    def label(self) -> str:
        kv = f"/kv-{self.kv_dtype}" if self.kv_dtype != "bf16" else ""
        return f"{self.model.id}@{self.accelerator.id}x{self.count}/{self.dtype}{kv}"

    @property
    def usd_per_hour(self) -> float:
        """Rental of the replica's `count` devices."""
        return rental_usd_per_hour(self.accelerator, self.provider, self.price_class) * self.count


def make_deployment(
    model: str | ModelArch,
    accelerator: str | Accelerator,
    *,
    count: int = 1,
    dtype: str = "bf16",
    engine_efficiency: float = 1.0,
    provider: str | None = None,
    catalog=None,
    price_class: str | None = None,
    kv_dtype: str = "bf16",
) -> Deployment:
    """Resolve names and build the perf step model (raises TokenomyError on a bad combination)."""
    from tokenomy.perf import make_step_model

    if catalog is None and (isinstance(model, str) or isinstance(accelerator, str)):
        from tokenomy.catalog import load_catalog

        catalog = load_catalog()
    m = catalog.model(model) if isinstance(model, str) else model
    a = catalog.accelerator(accelerator) if isinstance(accelerator, str) else accelerator
    if count < 1:
        raise TokenomyError(f"count must be >= 1, got {count}")
    sm = make_step_model(m, a, count=count, dtype=dtype, engine_efficiency=engine_efficiency, kv_dtype=kv_dtype)
    if int(sm.max_kv_tokens) < 1:
        raise TokenomyError(
            f"{m.id} does not fit on {count} x {a.id} in {dtype}: no memory left for the KV cache"
        )
    dep = Deployment(m, a, count, dtype, engine_efficiency, provider, price_class, sm, kv_dtype)
    dep.usd_per_hour  # noqa: B018 - fail now, naming the missing price, not after a long simulation
    return dep


@dataclass(frozen=True)
class KVCapped:
    """A step model with a smaller KV capacity (what-if runs and tests)."""

    inner: Any
    max_kv_tokens: int

    @property
    def idle_watts(self) -> float:
        return self.inner.idle_watts

    def step_seconds(self, **kw) -> float:
        return self.inner.step_seconds(**kw)

    def step_watts(self, **kw) -> float:
        return self.inner.step_watts(**kw)
