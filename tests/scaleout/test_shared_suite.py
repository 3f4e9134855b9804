"""The metering behaviour suite, run again on both backend pairs (sqlite+memory and
postgres+redis) through this directory's `meter` fixture: idempotency, exact money, usage
sums and windows, auth and revocation, validation, budgets under 200 concurrent
reservations, soft limits, rate limits."""

from metering.test_budgets import (  # noqa: F401
    test_200_concurrent_requests_never_overspend,
    test_admin_and_unbudgeted_keys_are_not_limited,
    test_settles_to_the_actual_price_and_release_frees,
    test_soft_budget_warns_and_is_audited_once_per_period,
)
from metering.test_ledger import (  # noqa: F401
    test_authentication,
    test_decimal_sums_are_exact,
    test_duplicates_inside_one_batch_are_recorded_once,
    test_errors_carry_http_status_and_code,
    test_money_sum_does_not_overflow_int64,
    test_same_event_id_twice_is_recorded_once,
    test_tenant_and_key_validation,
    test_usage_is_per_tenant_with_breakdowns,
    test_usage_time_window_and_event_listing,
)
from metering.test_rate_limits import (  # noqa: F401
    test_keys_have_independent_buckets,
    test_requests_per_minute,
    test_tokens_per_minute_and_atomicity,
    test_unlimited_keys_and_admin_pass,
)
