"""OpenAI-style error responses: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import orjson
from aiohttp import web

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 413: "invalid_request_error", 429: "rate_limit_error",
          502: "upstream_error", 503: "service_unavailable", 504: "upstream_timeout"}


class ApiError(Exception):
    """Raised anywhere in a handler; rendered by `error_response`."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}
        self.type = type  # None: by status (a budget that is spent is "insufficient_quota", as OpenAI's)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None,
               type: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type or _TYPES.get(status, "api_error"),
                                   "param": param, "code": code}})


def error_response(err: ApiError, extra_headers: dict[str, str] | None = None) -> web.Response:
    headers = {**err.headers, **(extra_headers or {})}
    resp = web.Response(status=err.status, body=error_body(err.status, err.message, err.param, err.code, err.type),
                        content_type="application/json", headers=headers)
    if headers.get("Connection", "").lower() == "close":
        resp.force_close()  # aiohttp would otherwise keep reading (lingering on) an unfinished body
    return resp
