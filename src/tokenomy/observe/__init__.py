"""Observability: the request log (requestlog.py, redact.py) and OpenTelemetry traces (tracing.py)."""

from __future__ import annotations

OTEL_MISSING = ("invalid config: tracing: needs the otel extra (pip install 'tokenomy[otel]': opentelemetry-sdk "
                "and opentelemetry-exporter-otlp-proto-http); remove `tracing.endpoint` to run without traces")


def _module():
    from tokenomy.errors import ConfigError

    try:
        from tokenomy.observe import tracing
    except ImportError:
        raise ConfigError(OTEL_MISSING) from None
    return tracing


def check_tracing(cfg) -> None:
    """ConfigError when `tracing:` cannot work here (the otel extra, or the grpc exporter, missing)."""
    _module().exporter_class(cfg)


def open_tracing(cfg):
    """The gateway's Tracing for `tracing:` (tokenomy.observe.tracing); ConfigError when the otel
    extra is not installed. Only called when tracing is configured: the gateway runs without it."""
    return _module().Tracing(cfg)
