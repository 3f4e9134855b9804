"""Per-key token buckets: requests/min and tokens/min, continuous refill, exact retry_after."""

from __future__ import annotations

import pytest

from tokenomy.metering import RateLimited


def test_requests_per_minute(meter, mono):
    _, key = meter.create_key("acme", rpm=6)  # 6 burst, refills 0.1 request/s
    p = meter.authenticate(key)
    for _ in range(6):
        meter.check_rate(p, 0)
    with pytest.raises(RateLimited) as info:
        meter.check_rate(p, 0)
    assert info.value.retry_after_s == pytest.approx(10.0)
    assert info.value.status == 429 and info.value.code == "rate_limit_exceeded" and "6 requests/min" in str(info.value)
    mono.advance(4.0)
    with pytest.raises(RateLimited) as info:
        meter.check_rate(p, 0)
    assert info.value.retry_after_s == pytest.approx(6.0)
    mono.advance(6.0)
    meter.check_rate(p, 0)


def test_tokens_per_minute_and_atomicity(meter, mono):
    _, key = meter.create_key("acme", rpm=100, tpm=600)  # 10 tokens/s
    p = meter.authenticate(key)
    meter.check_rate(p, 500)
    with pytest.raises(RateLimited) as info:
        meter.check_rate(p, 200)  # 100 left: 100 short at 10/s
    assert info.value.retry_after_s == pytest.approx(10.0)
    with pytest.raises(RateLimited) as info:
        meter.check_rate(p, 700)  # larger than the whole bucket: waiting never helps
    assert info.value.retry_after_s is None and "exceeds" in str(info.value)
    # refused checks took nothing from the request bucket: 100 - 1 granted = 99 left
    for _ in range(99):
        meter.check_rate(p, 0)
    with pytest.raises(RateLimited):
        meter.check_rate(p, 0)
    mono.advance(60.0)
    meter.check_rate(p, 600)  # both buckets full again after a minute


def test_keys_have_independent_buckets(meter):
    _, k1 = meter.create_key("acme", rpm=1)
    _, k2 = meter.create_key("acme", rpm=1)
    p1, p2 = meter.authenticate(k1), meter.authenticate(k2)
    meter.check_rate(p1, 0)
    meter.check_rate(p2, 0)
    with pytest.raises(RateLimited):
        meter.check_rate(p1, 0)


def test_unlimited_keys_and_admin_pass(meter):
    _, key = meter.create_key("acme")
    for p in (meter.authenticate(key), meter.authenticate("test-admin-key")):
        for _ in range(1000):
            meter.check_rate(p, 10_000)
