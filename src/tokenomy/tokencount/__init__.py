"""Token counting with each model's real tokenizer, the regex counter as the fallback.

    counter_for(deployment_or_model) -> TokenCounter   (.name, .count_text(str), .count_chat(messages))

Resolution, first match wins:
1. a deployment's `tokenizer:` setting: `o200k` / `cl100k` (tiktoken), `llama-3` (HF tokenizers, the
   tokenizer.json an installed package ships), a path to a `tokenizer.json`, or `regex`;
2. an OpenAI model family by the upstream model name (gpt-4o*, gpt-4.1*, gpt-5*, o1/o3/o4* -> o200k;
   gpt-4*, gpt-3.5* -> cl100k);
3. the regex approximation (`tokenomy.tokens`).

Names as recorded on events: "tiktoken:o200k", "tiktoken:cl100k", "hf:llama-3", "hf:<file path>", "regex".
Encoders load on first count and are cached per process; nothing is downloaded.
"""

from tokenomy.tokencount.counter import LLAMA3_FRAMING, OPENAI_FRAMING, TokenCounter
from tokenomy.tokencount.resolve import REGEX, check_tokenizer_spec, counter_for, counter_for_spec

__all__ = ["LLAMA3_FRAMING", "OPENAI_FRAMING", "REGEX", "TokenCounter", "check_tokenizer_spec", "counter_for",
           "counter_for_spec"]
