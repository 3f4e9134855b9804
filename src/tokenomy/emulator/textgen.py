"""Deterministic synthetic completions: how many tokens, and which text pieces.

Each emitted token is one text piece chosen so that `tokenomy.tokens.count_tokens` of the
joined text equals the number of pieces (short words with a leading space, and single
punctuation marks never adjacent to each other).
"""

from __future__ import annotations

import hashlib
import random
import re

# Output-length distribution: the 0th, 5th, ..., 100th percentiles of `num_decode_tokens`
# in the Azure LLM inference trace, conversation service (splitwise_conv.csv, 19,366
# requests, 2023, CC-BY-4.0, via microsoft/vidur); computed once with numpy.percentile on
# /work/shared/data/traces/splitwise_conv.csv (2026-11). Bimodal: median 129, p75 395, max 1000.
OUTPUT_TOKENS_PERCENTILES = (
    7, 41, 54, 67, 77, 85, 91, 96, 103, 113, 129, 151, 177, 217, 384, 395, 400, 411, 424, 451, 1000,
)

_WORDS = (
    "the of and to in is that for it as with was on be by this are at from or an have not "
    "which but all can more one will model token cost energy price data time rate query "
    "answer system server batch cache memory power value first also into each other these "
    "about than some when many then used would could there their what only over such most "
    "new may like well very much where just both three under world large small"
).split()
_CYCLE_LEN = 8192


def _build_cycle(seed: int = 12345) -> tuple[str, ...]:
    rng = random.Random(seed)
    pieces: list[str] = []
    capitalize = True
    since_punct = 0
    while len(pieces) < _CYCLE_LEN:
        word = rng.choice(_WORDS)
        pieces.append(" " + (word.capitalize() if capitalize else word))
        capitalize = False
        since_punct += 1
        if since_punct >= 4 and rng.random() < 0.12:
            mark = "." if rng.random() < 0.6 else ","
            pieces.append(mark)
            capitalize = mark == "."
            since_punct = 0
    return tuple(pieces[:_CYCLE_LEN])


_CYCLE = _build_cycle()


def request_digest(seed: int, canonical_prompt: bytes) -> int:
    """A 64-bit deterministic digest of the prompt (and the emulator's seed)."""
    h = hashlib.blake2b(canonical_prompt, digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(h.digest(), "little")


def choice_digest(digest: int, index: int) -> int:
    """The digest that seeds choice `index` of a request (OpenAI's `n`): choice 0 is the request's
    own (an n=1 answer is unchanged), later choices differ from it and from each other, and are
    reproducible. It seeds the length, the text, the logprobs and a tool call's id."""
    if index == 0:
        return digest
    h = hashlib.blake2b(digest.to_bytes(8, "little"), digest_size=8, key=index.to_bytes(4, "little"),
                        person=b"emu-choice")
    return int.from_bytes(h.digest(), "little")


def natural_output_tokens(digest: int) -> int:
    """Output length the 'model' wants for this prompt, from the trace's distribution."""
    u = (digest & 0xFFFFFFFF) / 2**32 * 100.0  # percentile in [0, 100)
    i = min(int(u // 5), len(OUTPUT_TOKENS_PERCENTILES) - 2)
    lo, hi = OUTPUT_TOKENS_PERCENTILES[i], OUTPUT_TOKENS_PERCENTILES[i + 1]
    return max(1, round(lo + (hi - lo) * (u - 5 * i) / 5.0))


def pieces_for(digest: int, n: int) -> list[str]:
    """The `n` text pieces of the completion (first piece without its leading space)."""
    if n <= 0:
        return []
    start = (digest >> 32) % _CYCLE_LEN
    out: list[str] = []
    while len(out) < n:
        take = min(n - len(out), _CYCLE_LEN - start)
        out.extend(_CYCLE[start:start + take])
        start = 0
    first = out[0].lstrip()
    out[0] = first
    return out


# ------------------------------------------------------------------ shaped output
# Structured answers (tool-call arguments, JSON mode) are real JSON text, split into token-like
# pieces (a word with its leading space, or one punctuation mark): usage counts those pieces.
_PIECE = re.compile(r"\s*[A-Za-z0-9_]+|\s*[^\sA-Za-z0-9_]|\s+")


def split_pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


def synth_json(schema: object, rng: random.Random, depth: int = 0) -> object:
    """A deterministic value valid for a (common subset of) JSON Schema: type, properties,
    required, items, minItems/maxItems, enum, const, anyOf/oneOf/allOf, minimum/maximum,
    minLength/maxLength. Unknown constructs get an empty object."""
    if not isinstance(schema, dict) or depth > 8:
        return {}
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][rng.randrange(len(schema["enum"]))]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return synth_json(schema[key][0], rng, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        merged: dict = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged = {**merged, **part, "properties": {**merged.get("properties", {}), **part.get("properties", {})}}
        return synth_json(merged, rng, depth + 1)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t is None:
        t = "object" if "properties" in schema else "string"
    if t == "object":
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {k: synth_json(v, rng, depth + 1) for k, v in props.items()}
    if t == "array":
        lo = schema.get("minItems", 1) if isinstance(schema.get("minItems"), int) else 1
        hi = schema.get("maxItems", max(lo, 2)) if isinstance(schema.get("maxItems"), int) else max(lo, 2)
        return [synth_json(schema.get("items", {"type": "string"}), rng, depth + 1) for _ in range(max(lo, min(hi, 2)))]
    if t == "integer":
        lo = schema.get("minimum", 0)
        hi = schema.get("maximum", lo + 100)
        return rng.randint(int(-(-lo // 1)), max(int(-(-lo // 1)), int(hi // 1)))
    if t == "number":
        lo = schema.get("minimum", 0.0)
        hi = schema.get("maximum", lo + 100.0)
        return round(lo + (hi - lo) * rng.random(), 2)
    if t == "boolean":
        return rng.random() < 0.5
    if t == "null":
        return None
    lo = schema.get("minLength", 1) if isinstance(schema.get("minLength"), int) else 1
    hi = schema.get("maxLength") if isinstance(schema.get("maxLength"), int) else None
    text = " ".join(rng.choice(_WORDS) for _ in range(3))
    while len(text) < lo:
        text += " " + rng.choice(_WORDS)
    return text[:hi] if hi is not None else text


def json_pieces(schema: object, digest: int) -> list[str]:
    """The pieces of a JSON answer (JSON mode: `{}` schema -> an object with an `answer`)."""
    import orjson

    rng = random.Random(digest)
    if schema == {}:
        value: object = {"answer": "".join(pieces_for(digest, 8)).strip()}
    else:
        value = synth_json(schema, rng)
    return split_pieces(orjson.dumps(value).decode())


def cut_at_stop(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], bool]:
    """The pieces before the first occurrence of any stop sequence (the stop itself excluded,
    like OpenAI), and whether one was found."""
    if not stops or not pieces:
        return pieces, False
    text = "".join(pieces)
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not hits:
        return pieces, False
    cut = min(hits)
    out, pos = [], 0
    for p in pieces:
        if pos + len(p) <= cut:
            out.append(p)
            pos += len(p)
        else:
            if cut > pos:
                out.append(p[:cut - pos])
            break
    return out, True


def logprob_of(piece: str, digest: int, i: int) -> float:
    """A deterministic log-probability in (-4, 0) for the i-th piece."""
    h = hashlib.blake2b(f"{i}:{piece}".encode(), digest_size=4, key=digest.to_bytes(8, "little")).digest()
    return -round(int.from_bytes(h, "little") / 2**32 * 4.0, 4)


def chat_logprobs(pieces: list[str], digest: int, top: int, start: int = 0) -> dict:
    """OpenAI chat `logprobs`: {"content": [{token, logprob, bytes, top_logprobs: [...]}], "refusal": None}.
    The chosen token is always the most likely of its top_logprobs."""
    content = []
    for k, p in enumerate(pieces):
        lp = logprob_of(p, digest, start + k)
        alts = [{"token": p, "logprob": lp, "bytes": list(p.encode())}]
        j = 0
        while len(alts) < top:
            w = " " + _WORDS[(digest + start + k + j) % len(_WORDS)]
            j += 1
            if any(a["token"] == w for a in alts):
                continue
            alts.append({"token": w, "logprob": round(lp - 0.5 * len(alts) - 0.25, 4), "bytes": list(w.encode())})
        content.append({"token": p, "logprob": lp, "bytes": list(p.encode()), "top_logprobs": alts[:top]})
    return {"content": content, "refusal": None}


def completion_logprobs(pieces: list[str], digest: int, top: int, start: int = 0, offset: int = 0) -> dict:
    """Legacy completions `logprobs`: {tokens, token_logprobs, top_logprobs, text_offset}."""
    c = chat_logprobs(pieces, digest, top, start)["content"]
    offsets, pos = [], offset
    for p in pieces:
        offsets.append(pos)
        pos += len(p)
    return {"tokens": [e["token"] for e in c], "token_logprobs": [e["logprob"] for e in c],
            "top_logprobs": [{a["token"]: a["logprob"] for a in e["top_logprobs"]} for e in c] if top else None,
            "text_offset": offsets}


__all__ = ["OUTPUT_TOKENS_PERCENTILES", "chat_logprobs", "choice_digest", "completion_logprobs", "cut_at_stop", "json_pieces",
           "natural_output_tokens", "pieces_for", "request_digest", "split_pieces", "synth_json"]
