"""tokenomy.billing: plans, rating, invoices, margins, pricing simulation."""
