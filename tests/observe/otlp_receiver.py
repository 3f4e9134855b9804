"""A real OTLP/HTTP trace receiver on 127.0.0.1: POST /v1/traces with a protobuf
ExportTraceServiceRequest (opentelemetry-proto), decoded into plain span records."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def _value(v):
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass
class SpanRecord:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict
    status_code: int  # 0 unset, 1 ok, 2 error
    service: str
    start_ns: int
    end_ns: int


@dataclass
class Receiver:
    spans: list[SpanRecord] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)  # headers of each export request
    url: str = ""

    def by_name(self, name: str) -> list[SpanRecord]:
        return [s for s in self.spans if s.name == name]


def _decode(raw: bytes) -> list[SpanRecord]:
    req = ExportTraceServiceRequest()
    req.ParseFromString(raw)
    out = []
    for rs in req.resource_spans:
        res = {a.key: _value(a.value) for a in rs.resource.attributes}
        for ss in rs.scope_spans:
            for sp in ss.spans:
                out.append(SpanRecord(sp.name, KINDS.get(sp.kind, str(sp.kind)), sp.trace_id.hex(), sp.span_id.hex(),
                                      sp.parent_span_id.hex(), {a.key: _value(a.value) for a in sp.attributes},
                                      sp.status.code, res.get("service.name", ""), sp.start_time_unix_nano,
                                      sp.end_time_unix_nano))
    return out


class receiver:
    """Context manager: `with receiver() as r: ... r.url, r.spans`."""

    def __enter__(self) -> Receiver:
        rec = self.rec = Receiver()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_response(404)
                    self.end_headers()
                    return
                rec.requests.append({k.lower(): v for k, v in self.headers.items()})
                rec.spans.extend(_decode(raw))
                body = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        rec.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        return rec

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
