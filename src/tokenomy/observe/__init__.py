"""Observability of the request path: the structured request log (requestlog.py) and redaction."""
