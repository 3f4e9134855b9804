"""POST /v1/embeddings: the request fields the gateway reads, validated OpenAI's way (pure functions).

    inputs = embedding_inputs(body)            # [str | list[int]] (400 on empty / wrong types / too many)
    n = input_tokens(inputs, counter)          # what is reserved and rate limited (output: 0 tokens)
    check_options(body, native_dimensions)     # dimensions, encoding_format (400 when out of range)

The request then runs the chat lifecycle (admit -> dispatch -> settle) with kind "embeddings":
priced on input tokens only, one metered event. OpenAI's limits, from its API reference
(platform.openai.com/docs/api-reference/embeddings/create, checked 2026-12): at most 2,048 inputs
per request, no empty string, `encoding_format` float | base64, `dimensions` >= 1 (text-embedding-3
models only, up to the model's size).
"""

from __future__ import annotations

import base64
from array import array

from tokenomy.gateway.errors import ApiError

MAX_INPUTS = 2048
ENCODING_FORMATS = ("float", "base64")
# A token id is a non-negative integer below any tokenizer's vocabulary (o200k: 200,019 ids).
MAX_TOKEN_ID = 2**31 - 1


def _bad(message: str, param: str = "input", code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _is_int(x: object) -> bool:
    return type(x) is int and 0 <= x <= MAX_TOKEN_ID  # type(): a bool is not a token


def embedding_inputs(body: dict) -> list[str | list[int]]:
    """The inputs to embed: a string, an array of strings, an array of token ids, or an array of
    token-id arrays (OpenAI's four shapes), as a list of strings and token-id lists."""
    x = body.get("input")
    if x is None:
        raise _bad("missing required field 'input'", code="missing_required_parameter")
    if isinstance(x, str):
        if not x:
            raise _bad("'input' must not be an empty string")
        return [x]
    if not isinstance(x, list):
        raise _bad(f"'input' must be a string, an array of strings or an array of token ids, "
                   f"got {type(x).__name__}", code="invalid_type")
    if not x:
        raise _bad("'input' must not be an empty array")
    if len(x) > MAX_INPUTS:
        raise _bad(f"'input' has {len(x)} items; at most {MAX_INPUTS} per request")
    if all(_is_int(t) for t in x):
        return [x]  # one input given as token ids
    out: list[str | list[int]] = []
    for i, item in enumerate(x):
        if isinstance(item, str):
            if not item:
                raise _bad(f"'input[{i}]' must not be an empty string", param=f"input[{i}]")
            out.append(item)
        elif isinstance(item, list):
            if not item:
                raise _bad(f"'input[{i}]' must not be an empty array of token ids", param=f"input[{i}]")
            if not all(_is_int(t) for t in item):
                raise _bad(f"'input[{i}]' must be an array of token ids (integers 0 .. {MAX_TOKEN_ID})",
                           param=f"input[{i}]", code="invalid_type")
            out.append(item)
        else:
            raise _bad(f"'input[{i}]' must be a string or an array of token ids, got {type(item).__name__}",
                       param=f"input[{i}]", code="invalid_type")
    return out


def input_tokens(inputs: list[str | list[int]], counter) -> int:
    """Prompt tokens of the inputs: token ids count as given, text with the model's tokenizer."""
    return sum(len(x) if isinstance(x, list) else counter.count_text(x) for x in inputs)


def check_options(body: dict, native_dimensions: int | None) -> None:
    """`dimensions` (1 .. the model's size when known) and `encoding_format`."""
    dims = body.get("dimensions")
    if dims is not None:
        if type(dims) is not int:
            raise _bad(f"'dimensions' must be an integer, got {type(dims).__name__}", "dimensions", "invalid_type")
        top = native_dimensions if native_dimensions is not None else MAX_TOKEN_ID
        if not 1 <= dims <= top:
            raise _bad(f"'dimensions' must be between 1 and {top}, got {dims}", "dimensions")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ENCODING_FORMATS:
        raise _bad(f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}, got {str(fmt)[:40]!r}",
                   "encoding_format", "invalid_type" if not isinstance(fmt, str) else "invalid_value")


def native_dimensions(group) -> int | None:
    """The smallest configured vector size of a group's deployments (None: none configured)."""
    dims = [d.cfg.embedding_dimensions for d in group.deployments if d.cfg.embedding_dimensions]
    return min(dims) if dims else None


def encode_vector(values, encoding_format: str) -> list[float] | str:
    """OpenAI's wire forms of one vector: a JSON array of floats, or base64 of little-endian float32
    bytes (what the openai SDK asks for by default and decodes)."""
    floats = [float(x) for x in values]
    if encoding_format == "base64":
        a = array("f", floats)
        if a.itemsize != 4 or __import__("sys").byteorder != "little":
            import numpy as np

            return base64.b64encode(np.asarray(floats, dtype="<f4").tobytes()).decode("ascii")
        return base64.b64encode(a.tobytes()).decode("ascii")
    return floats
