import numpy as np
import pytest

from tokenomy.errors import TokenomyError
from tokenomy.fleet.workload import (
    Trace, fit_lengths, head, load_trace, scale_rate, synthetic, window,
)


def test_shipped_traces_load_sorted_with_real_counts(conv):
    assert len(conv) == 19_366
    assert len(load_trace("code")) == 8_819
    assert np.all(np.diff(conv.arrived_at) >= 0)
    assert conv.prompt_tokens[:3].tolist() == [374, 396, 879]
    assert conv.output_tokens[:3].tolist() == [44, 109, 55]
    assert 3400 < conv.duration_seconds < 3600
    assert conv.rate_per_s == pytest.approx(19_365 / conv.duration_seconds)


def test_user_csv_with_extra_columns_and_unsorted_rows(tmp_path):
    f = tmp_path / "mine.csv"
    f.write_text("id,num_decode_tokens,arrived_at,num_prefill_tokens\n"
                 "a,10,2.5,100\nb,0,1.0,50\nc,7,3.0,20\n")
    tr = load_trace(f)
    assert tr.name == "mine"
    assert tr.arrived_at.tolist() == [1.0, 2.5, 3.0]
    assert tr.prompt_tokens.tolist() == [50, 100, 20]
    assert tr.output_tokens.tolist() == [1, 10, 7]  # 0 output tokens raised to 1


@pytest.mark.parametrize("text, needle", [
    ("arrived_at,num_prefill_tokens\n1,2\n", "num_decode_tokens"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n1,x,3\n", "line 2"),
    ("arrived_at,num_prefill_tokens,num_decode_tokens\n", "no requests"),
])
def test_bad_csv_is_a_clear_error(tmp_path, text, needle):
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(TokenomyError, match=needle):
        load_trace(f)


def test_missing_file_names_the_shortcuts():
    with pytest.raises(TokenomyError, match="conv, code"):
        load_trace("/nonexistent/trace.csv")


def test_scale_rate_compresses_time_keeps_requests(conv_head):
    fast = scale_rate(conv_head, 4.0)
    assert len(fast) == len(conv_head)
    assert fast.duration_seconds == pytest.approx(conv_head.duration_seconds / 4)
    assert fast.rate_per_s == pytest.approx(conv_head.rate_per_s * 4)
    assert fast.total_tokens == conv_head.total_tokens
    with pytest.raises(TokenomyError):
        scale_rate(conv_head, 0)


def test_window_selects_and_rebases(conv):
    w = window(conv, 600, 1200)
    rel = conv.arrived_at - conv.arrived_at[0]
    assert len(w) == int(((rel >= 600) & (rel < 1200)).sum())
    assert w.arrived_at.min() >= 0 and w.arrived_at.max() < 600
    with pytest.raises(TokenomyError, match="no requests"):
        window(conv, 10_000, 20_000)


def test_poisson_synthetic_rate_and_fitted_lengths(conv):
    tr = synthetic(rate_per_s=10.0, duration_seconds=1000.0, lengths=conv, seed=1)
    assert abs(len(tr) - 10_000) < 400  # Poisson: 4 sigma
    fit = fit_lengths(conv)
    # Median of a lognormal is exp(mu): synthetic medians match the trace's geometric means.
    assert np.median(tr.prompt_tokens) == pytest.approx(np.exp(fit.prompt_mu), rel=0.08)
    assert np.median(tr.output_tokens) == pytest.approx(np.exp(fit.output_mu), rel=0.08)
    assert tr.prompt_tokens.max() <= conv.prompt_tokens.max()


def test_diurnal_arrivals_peak_and_trough(conv):
    tr = synthetic(rate_per_s=1.0, duration_seconds=86_400.0, lengths=conv, arrivals="diurnal",
                   peak_to_mean=1.8, seed=2)
    hours = np.floor(tr.arrived_at / 3600).astype(int)
    per_hour = np.bincount(hours, minlength=24)
    assert per_hour[14] > 2.5 * per_hour[2]  # peak at 14:00 (1.8x mean) vs trough (0.2x mean)
    assert len(tr) == pytest.approx(86_400, rel=0.05)


def test_synthetic_is_deterministic_per_seed(conv):
    a = synthetic(rate_per_s=2.0, duration_seconds=100.0, lengths=conv, seed=7)
    b = synthetic(rate_per_s=2.0, duration_seconds=100.0, lengths=conv, seed=7)
    c = synthetic(rate_per_s=2.0, duration_seconds=100.0, lengths=conv, seed=8)
    assert np.array_equal(a.arrived_at, b.arrived_at) and np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not (len(a) == len(c) and np.array_equal(a.arrived_at, c.arrived_at))


def test_head_and_trace_validation(conv):
    assert len(head(conv, 10)) == 10
    with pytest.raises(TokenomyError):
        Trace(np.zeros(2), np.zeros(3, dtype=np.int64), np.zeros(2, dtype=np.int64))


def test_load_workload_synthetic_spec(conv):
    from tokenomy.fleet.workload import load_workload

    tr = load_workload("poisson:5:200:code", seed=3)
    assert tr.name == "poisson:5:200:code"
    assert abs(len(tr) - 1000) < 130 and tr.arrived_at.max() < 200
    code = load_trace("code")
    assert np.median(tr.prompt_tokens) == pytest.approx(np.exp(fit_lengths(code).prompt_mu), rel=0.1)
    assert len(load_workload("conv")) == len(conv)
    with pytest.raises(TokenomyError, match="poisson:RATE"):
        load_workload("poisson:fast")
