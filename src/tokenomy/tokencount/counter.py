"""One token counter: a name (recorded on events), a text counter and the chat framing it applies."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from tokenomy.tokens import ChatFraming, count_chat_with, count_tokens

log = logging.getLogger("tokenomy.tokens")

# OpenAI's chat format (the cookbook's "How to count tokens"): 3 tokens per message, 1 per name,
# 3 priming the reply. Used also for tokenizers whose chat template is unknown.
OPENAI_FRAMING = ChatFraming(per_message=3, per_name=1, reply_priming=3)
# Llama 3 chat template: <|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|> is 4 tokens
# besides the role; the prompt opens with <|begin_of_text|> and primes the reply with the 4-token
# assistant header (1 + 4 = 5).
LLAMA3_FRAMING = ChatFraming(per_message=4, per_name=0, reply_priming=5)


class TokenCounter:
    """Counts with a real tokenizer, loaded on first use (a lock: the first requests may race) and
    cached by the resolver. If the tokenizer cannot be loaded, it logs once and counts with the regex
    fallback from then on; `name` then says "regex", so events record what actually counted."""

    __slots__ = ("_name", "_loader", "_count", "framing", "_lock")

    def __init__(self, name: str, loader: Callable[[], Callable[[str], int]] | None,
                 framing: ChatFraming = OPENAI_FRAMING):
        self._name, self._loader, self.framing = name, loader, framing
        self._count: Callable[[str], int] | None = count_tokens if loader is None else None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def _load(self) -> Callable[[str], int]:
        with self._lock:
            if self._count is None:
                try:
                    self._count = self._loader()  # type: ignore[misc]
                except Exception as exc:  # a broken install must not break billing: count, say so
                    log.error("token counter %s failed to load (%s: %s); counting with the regex fallback",
                              self._name, type(exc).__name__, exc)
                    self._name, self._count, self.framing = "regex", count_tokens, OPENAI_FRAMING
        return self._count

    def count_text(self, text: str) -> int:
        if not text:
            return 0
        return (self._count or self._load())(text)

    def count_chat(self, messages: list[dict]) -> int:
        """Prompt tokens of a chat request's `messages`, chat framing included."""
        return count_chat_with(messages, self.count_text, self.framing)

    def __repr__(self) -> str:
        return f"TokenCounter({self._name!r})"
