"""Usage export: the ledger's priced events, exactly once, to the billing systems people use
(OpenMeter, Stripe billing meters, Lago). See export/run.py for the delivery guarantees."""
