"""Workloads: request traces (arrival time, prompt tokens, output tokens).

A `Trace` is three aligned numpy arrays sorted by arrival. Real traces load from CSV
(`arrived_at,num_prefill_tokens,num_decode_tokens`); `conv` and `code` name the shipped
Splitwise traces. Transformations (rate scaling, windows) and synthetic generators
(Poisson or diurnal arrivals, lognormal lengths fitted to a trace) return new traces.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenomy.errors import TokenomyError

TRACES_DIR = Path(__file__).parent / "traces"
SHIPPED_TRACES = {"conv": "splitwise_conv.csv", "code": "splitwise_code.csv",
                  "mooncake": "mooncake_conversation.jsonl"}
MOONCAKE_BLOCK_TOKENS = 512  # Mooncake's hash_ids cover 512-token prompt blocks (FAST'25 release README)
_COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival. Times in seconds, lengths in tokens."""

    arrived_at: np.ndarray  # float64 seconds
    prompt_tokens: np.ndarray  # int64
    output_tokens: np.ndarray  # int64
    name: str = "trace"
    # Optional prefix-sharing information (Mooncake `hash_ids`): per request, the chained hashes
    # of its prompt's `hash_block_tokens`-token KV blocks (equal leading hashes = shared prefix).
    hashes: tuple[tuple[int, ...], ...] | None = None
    hash_block_tokens: int = 0

    def __post_init__(self) -> None:
        n = len(self.arrived_at)
        if len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise TokenomyError("trace columns have different lengths")
        if self.hashes is not None and len(self.hashes) != n:
            raise TokenomyError("trace hashes and requests have different lengths")

    def select(self, index: np.ndarray | slice, arrived_at: np.ndarray | None = None) -> "Trace":
        """The requests at `index` (a mask, indices or slice), hashes included."""
        hashes = None
        if self.hashes is not None:
            idx = np.arange(len(self))[index]
            hashes = tuple(self.hashes[i] for i in idx.tolist())
        arr = self.arrived_at[index] if arrived_at is None else arrived_at
        return Trace(arr, self.prompt_tokens[index], self.output_tokens[index], self.name, hashes,
                     self.hash_block_tokens)

    def __len__(self) -> int:
        return len(self.arrived_at)

    @property
    def duration_seconds(self) -> float:
        if len(self) < 2:
            return 0.0
        return float(self.arrived_at[-1] - self.arrived_at[0])

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate (requests per second) over the trace span."""
        d = self.duration_seconds
        return (len(self) - 1) / d if d > 0 else 0.0

    @property
    def total_tokens(self) -> int:
        return int(self.prompt_tokens.sum() + self.output_tokens.sum())

    def summary(self) -> dict:
        return {
            "name": self.name,
            "requests": len(self),
            "duration_seconds": round(self.duration_seconds, 3),
            "rate_per_s": round(self.rate_per_s, 4),
            "mean_prompt_tokens": round(float(self.prompt_tokens.mean()), 1) if len(self) else 0.0,
            "mean_output_tokens": round(float(self.output_tokens.mean()), 1) if len(self) else 0.0,
        }


def _sorted(arrived: np.ndarray, prompt: np.ndarray, output: np.ndarray, name: str) -> Trace:
    order = np.argsort(arrived, kind="stable")
    return Trace(
        np.asarray(arrived, dtype=np.float64)[order],
        np.asarray(prompt, dtype=np.int64)[order],
        np.asarray(output, dtype=np.int64)[order],
        name,
    )


def load_trace(source: str | Path) -> Trace:
    """Load `conv` / `code` (shipped Splitwise traces) or a user CSV file.

    The CSV needs the columns arrived_at, num_prefill_tokens, num_decode_tokens (extra
    columns are ignored). Output lengths below 1 are raised to 1 (every request yields a token).
    """
    key = str(source)
    if key in SHIPPED_TRACES:
        path = TRACES_DIR / SHIPPED_TRACES[key]
        name = key
    else:
        path = Path(source)
        name = path.stem
        if not path.is_file():
            raise TokenomyError(
                f"trace file '{source}' not found (use a CSV path, or one of: {', '.join(SHIPPED_TRACES)})"
            )
    if path.suffix == ".jsonl":
        return load_mooncake(path, name)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise TokenomyError(f"trace file '{path}' is empty") from None
        missing = [c for c in _COLUMNS if c not in header]
        if missing:
            raise TokenomyError(
                f"trace file '{path}' lacks column(s) {', '.join(missing)}; need {','.join(_COLUMNS)}"
            )
        idx = [header.index(c) for c in _COLUMNS]
        rows = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                rows.append((float(row[idx[0]]), int(float(row[idx[1]])), int(float(row[idx[2]]))))
            except (ValueError, IndexError):
                raise TokenomyError(f"trace file '{path}' line {lineno}: bad row {row!r}") from None
    if not rows:
        raise TokenomyError(f"trace file '{path}' has no requests")
    arr = np.array(rows, dtype=np.float64)
    if (arr[:, 1] < 0).any() or (arr[:, 2] < 0).any():
        raise TokenomyError(f"trace file '{path}' has negative token counts")
    return _sorted(arr[:, 0], np.maximum(arr[:, 1], 1), np.maximum(arr[:, 2], 1), name)


def load_mooncake(path: Path, name: str | None = None, *, block_tokens: int = MOONCAKE_BLOCK_TOKENS) -> Trace:
    """A Mooncake-format JSONL trace: `timestamp` (ms), `input_length`, `output_length`, `hash_ids`."""
    import json

    arrived, prompt, output, hashes = [], [], [], []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                t = float(row["timestamp"]) / 1000.0
                p, o = int(row["input_length"]), int(row["output_length"])
                h = tuple(int(x) for x in row.get("hash_ids") or ())
            except (ValueError, KeyError, TypeError, AttributeError):
                raise TokenomyError(f"trace file '{path}' line {lineno}: not a Mooncake record "
                                    "(need timestamp, input_length, output_length[, hash_ids])") from None
            if p < 0 or o < 0 or not math.isfinite(t):
                raise TokenomyError(f"trace file '{path}' line {lineno}: negative token count or bad timestamp")
            arrived.append(t)
            prompt.append(max(p, 1))
            output.append(max(o, 1))
            hashes.append(h)
    if not arrived:
        raise TokenomyError(f"trace file '{path}' has no requests")
    order = np.argsort(np.array(arrived), kind="stable")
    return Trace(np.array(arrived, dtype=np.float64)[order], np.array(prompt, dtype=np.int64)[order],
                 np.array(output, dtype=np.int64)[order], name or path.stem,
                 tuple(hashes[i] for i in order.tolist()), block_tokens)


def scale_rate(trace: Trace, factor: float) -> Trace:
    """Compress time by `factor` (x2 = twice the request rate, same requests)."""
    if not factor > 0:
        raise TokenomyError(f"rate scale must be > 0, got {factor}")
    t0 = trace.arrived_at[0] if len(trace) else 0.0
    return Trace(t0 + (trace.arrived_at - t0) / factor, trace.prompt_tokens, trace.output_tokens, trace.name,
                 trace.hashes, trace.hash_block_tokens)


def window(trace: Trace, start_seconds: float = 0.0, end_seconds: float | None = None) -> Trace:
    """Requests arriving in [start, end) seconds after the trace start, re-based to start at 0."""
    t0 = trace.arrived_at[0] if len(trace) else 0.0
    rel = trace.arrived_at - t0
    mask = rel >= start_seconds
    if end_seconds is not None:
        mask &= rel < end_seconds
    if not mask.any():
        raise TokenomyError(f"window [{start_seconds}, {end_seconds}) s holds no requests")
    return trace.select(mask, rel[mask] - start_seconds)


def head(trace: Trace, n: int) -> Trace:
    """The first n requests."""
    return trace.select(slice(0, n))


@dataclass(frozen=True)
class LengthFit:
    """Lognormal fits (of log tokens) for prompt and output lengths, with their correlation."""

    prompt_mu: float
    prompt_sigma: float
    output_mu: float
    output_sigma: float
    correlation: float
    prompt_max: int
    output_max: int


def fit_lengths(trace: Trace) -> LengthFit:
    """Fit lognormal prompt/output lengths (a bivariate normal in log space) to a trace."""
    lp = np.log(trace.prompt_tokens.astype(np.float64))
    lo = np.log(trace.output_tokens.astype(np.float64))
    corr = float(np.corrcoef(lp, lo)[0, 1]) if len(trace) > 2 and lp.std() > 0 and lo.std() > 0 else 0.0
    return LengthFit(
        float(lp.mean()), float(lp.std()), float(lo.mean()), float(lo.std()),
        0.0 if math.isnan(corr) else corr,
        int(trace.prompt_tokens.max()), int(trace.output_tokens.max()),
    )


def sample_lengths(fit: LengthFit, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z1 = rng.standard_normal(n)
    z2 = fit.correlation * z1 + math.sqrt(max(0.0, 1 - fit.correlation**2)) * rng.standard_normal(n)
    prompt = np.exp(fit.prompt_mu + fit.prompt_sigma * z1)
    output = np.exp(fit.output_mu + fit.output_sigma * z2)
    prompt = np.clip(np.rint(prompt), 1, fit.prompt_max).astype(np.int64)
    output = np.clip(np.rint(output), 1, fit.output_max).astype(np.int64)
    return prompt, output


def poisson_arrivals(rate_per_s: float, duration_seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Arrival times of a homogeneous Poisson process on [0, duration)."""
    if not rate_per_s > 0 or not duration_seconds > 0:
        raise TokenomyError("rate and duration must be > 0")
    n = rng.poisson(rate_per_s * duration_seconds)
    return np.sort(rng.uniform(0.0, duration_seconds, n))


def diurnal_arrivals(
    mean_rate_per_s: float,
    duration_seconds: float,
    rng: np.random.Generator,
    *,
    peak_to_mean: float = 1.5,
    period_seconds: float = 86_400.0,
    peak_at_seconds: float = 14 * 3600.0,
) -> np.ndarray:
    """Non-homogeneous Poisson arrivals with a sinusoidal daily rate (thinning).

    rate(t) = mean * (1 + a cos(2 pi (t - peak) / period)), a = peak_to_mean - 1 (clipped to [0, 1]).
    """
    amp = min(max(peak_to_mean - 1.0, 0.0), 1.0)
    peak_rate = mean_rate_per_s * (1.0 + amp)
    candidates = poisson_arrivals(peak_rate, duration_seconds, rng)
    rate = mean_rate_per_s * (1.0 + amp * np.cos(2 * np.pi * (candidates - peak_at_seconds) / period_seconds))
    keep = rng.uniform(0.0, peak_rate, len(candidates)) < rate
    return candidates[keep]


def synthetic(
    *,
    rate_per_s: float,
    duration_seconds: float,
    lengths: LengthFit | Trace,
    arrivals: str = "poisson",
    seed: int = 0,
    peak_to_mean: float = 1.5,
    name: str | None = None,
) -> Trace:
    """A synthetic trace: Poisson or diurnal arrivals, lognormal lengths fitted to a trace."""
    rng = np.random.default_rng(seed)
    fit = fit_lengths(lengths) if isinstance(lengths, Trace) else lengths
    if arrivals == "poisson":
        times = poisson_arrivals(rate_per_s, duration_seconds, rng)
    elif arrivals == "diurnal":
        times = diurnal_arrivals(rate_per_s, duration_seconds, rng, peak_to_mean=peak_to_mean)
    else:
        raise TokenomyError(f"unknown arrival process '{arrivals}' (poisson or diurnal)")
    prompt, output = sample_lengths(fit, len(times), rng)
    return Trace(times, prompt, output, name or f"synthetic-{arrivals}")


def load_workload(spec: str | Path, *, seed: int = 0, peak_to_mean: float = 1.5) -> Trace:
    """A trace file / shortcut, or a synthetic spec `poisson:RATE[:SECONDS[:LENGTHS]]` or
    `diurnal:RATE[:SECONDS[:LENGTHS]]` (RATE requests/s, SECONDS default 3600, lengths fitted
    to trace LENGTHS, default conv; diurnal: a daily sinusoid of `peak_to_mean`, peak at 14:00),
    or `session:RATE[:SECONDS]` (multi-turn sessions with block hashes, the Mooncake-fitted
    session model of fleet/sessions.py)."""
    if not 1.0 <= peak_to_mean <= 2.0:
        raise TokenomyError(f"peak-to-mean must be in [1, 2] (a sinusoid that stays >= 0), got {peak_to_mean:g}")
    text = str(spec)
    kind, _, rest = text.partition(":")
    if kind == "session" and rest:
        from tokenomy.fleet.sessions import session_workload

        parts = rest.split(":")
        try:
            rate = float(parts[0])
            seconds = float(parts[1]) if len(parts) > 1 and parts[1] else 3600.0
        except ValueError:
            raise TokenomyError(f"bad session workload '{text}': expected session:RATE[:SECONDS]") from None
        return session_workload(rate, seconds, seed=seed, name=text)
    if kind in ("poisson", "diurnal") and rest:
        parts = rest.split(":")
        try:
            rate = float(parts[0])
            seconds = float(parts[1]) if len(parts) > 1 and parts[1] else 3600.0
        except ValueError:
            raise TokenomyError(f"bad synthetic workload '{text}': expected {kind}:RATE[:SECONDS[:LENGTHS]]") from None
        lengths = load_trace(parts[2] if len(parts) > 2 and parts[2] else "conv")
        return synthetic(rate_per_s=rate, duration_seconds=seconds, lengths=lengths, arrivals=kind, seed=seed,
                         name=text, peak_to_mean=peak_to_mean)
    return load_trace(spec)
