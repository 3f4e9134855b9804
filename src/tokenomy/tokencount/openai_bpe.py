"""OpenAI's BPE encodings (cl100k_base, o200k_base) for tiktoken, from files shipped in this package.

tiktoken's registry downloads the rank files on first use; here the same files (same hashes) are read
from `data/` and handed to `tiktoken.Encoding` directly, so counting never touches the network.
The regexes and special tokens are tiktoken 0.14.0's (`tiktoken_ext/openai_public.py`); a test checks
that they still match the installed tiktoken.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
from importlib import resources

import tiktoken

_CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
               r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
_O200K_PAT = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])

# name -> (pattern, special tokens, sha256 of the decompressed rank file)
SPECS: dict[str, tuple[str, dict[str, int], str]] = {
    "cl100k_base": (_CL100K_PAT, {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259,
                                  "<|fim_suffix|>": 100260, "<|endofprompt|>": 100276},
                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "o200k_base": (_O200K_PAT, {"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
}

# Model families (OpenAI's model pages / tiktoken's MODEL_PREFIX_TO_ENCODING, 2026-12): the o200k
# families first, since "gpt-4o" also starts with "gpt-4".
_O200K_MODEL = re.compile(r"^(?:chatgpt-4o|gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o[1-9](?:$|-)|codex-)")
_CL100K_MODEL = re.compile(r"^(?:gpt-4|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002)")


def encoding_for_model(model: str) -> str | None:
    """tiktoken encoding name for an OpenAI model name (provider prefixes like `openai/` or
    `azure/` ignored), or None when the model is not an OpenAI one."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    if _O200K_MODEL.match(name):
        return "o200k_base"
    if _CL100K_MODEL.match(name):
        return "cl100k_base"
    return None


def load_ranks(name: str) -> dict[bytes, int]:
    """The shipped rank file of encoding `name`, verified against tiktoken's expected hash."""
    raw = gzip.decompress(resources.files(__package__).joinpath("data", f"{name}.tiktoken.gz").read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SPECS[name][2]:
        raise ValueError(f"shipped {name}.tiktoken has sha256 {digest}, expected {SPECS[name][2]} (broken install?)")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def load_encoding(name: str) -> tiktoken.Encoding:
    pattern, special, _ = SPECS[name]
    return tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=load_ranks(name), special_tokens=special)
