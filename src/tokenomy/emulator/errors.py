"""OpenAI-style error bodies: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import orjson
from aiohttp import web


class ApiError(Exception):
    """A request the emulator refuses, rendered as an OpenAI-style JSON error."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type_: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type_ or _default_type(status)
        self.headers = headers or {}

    def response(self) -> web.Response:
        return error_response(self.status, self.message, param=self.param, code=self.code,
                              type_=self.type, headers=self.headers)


def _default_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status == 404:
        return "invalid_request_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type_: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_ or _default_type(status),
                      "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json",
                        headers=headers)
