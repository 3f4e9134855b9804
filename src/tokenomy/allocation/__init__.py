"""What a self-hosted fleet really costs, allocated to the requests it served.

- spec.py: a deployment's hourly cost, power curve and capacity, from the config (pure).
- store.py: the `capacity_intervals` ledger table: which deployment was provisioned when.
- allocate.py: bill = rental + energy per interval, split over the requests in flight, the rest idle (pure).
- recorder.py: the gateway writes one row per self-hosted deployment per interval.
- report.py: the `tokenomy costs` / dashboard figures.
"""
