"""Budget, cap and spend-anomaly alerts delivered to webhooks, exactly once per crossing.

- rules.py: which thresholds are crossed now (pure).
- store.py: the `alerts` table on the ledger's database: a crossing is claimed by its id (the
  first replica to insert it owns it), and the row is the durable outbox until delivered.
- webhook.py: Slack-compatible, HMAC-signed POSTs with retries and backoff.
- service.py: the gateway's loop (evaluate, claim, deliver) and what it reads.
"""
