"""tokenomy.tokens: approximate cl100k-like counting (reference counts are real cl100k_base)."""

from __future__ import annotations

from tokenomy.tokens import count_chat_tokens, count_tokens

# A paragraph of plain English prose.
PROSE = (
    "The history of computing is a story of abstraction. Early programmers wrote machine code "
    "by hand, flipping switches on a front panel to enter each instruction. Assemblers replaced "
    "the switches with mnemonics, and compilers replaced the mnemonics with languages that "
    "people could read. Each layer hid the details of the one beneath it, and each made it "
    "possible to build larger systems with fewer people. Today a single engineer can deploy a "
    "service that answers millions of requests a day, without ever seeing the hardware it runs on."
)


def test_empty_string_is_zero() -> None:
    assert count_tokens("") == 0


def test_deterministic() -> None:
    assert count_tokens(PROSE) == count_tokens(PROSE) == count_tokens(str(PROSE))


def test_english_prose_words_per_token() -> None:
    words = len(PROSE.split())
    tokens = count_tokens(PROSE)
    # cl100k_base gives ~0.75 words/token on English prose (this paragraph: 88 words, 103 tokens)
    assert 0.65 <= words / tokens <= 0.95, (words, tokens)
    assert 93 <= tokens <= 113  # within 10% of the real count


def test_known_sentence_close_to_cl100k() -> None:
    # cl100k_base encodes this to 20 tokens: The| quick| brown| fox| jumps| over| the| lazy| dog|.|
    # International|ization| is| hard|;| |123|45| tokens|!
    text = "The quick brown fox jumps over the lazy dog. Internationalization is hard; 12345 tokens!"
    assert 18 <= count_tokens(text) <= 22


def test_common_words_are_one_token_each() -> None:
    assert count_tokens("hello") == 1
    assert count_tokens(" hello world") == 2
    assert count_tokens("I'm") == 2  # I + 'm, as cl100k


def test_numbers_grouped_by_three_digits() -> None:
    assert count_tokens("7") == 1
    assert count_tokens("123") == 1
    assert count_tokens("1234567") == 3  # 123|456|7
    assert count_tokens("3.14") == 3  # 3|.|14


def test_punctuation_and_whitespace() -> None:
    assert count_tokens("!") == 1
    assert count_tokens("a, b.") == 4
    assert count_tokens("\n\n") == 1
    # a long punctuation run is more than one token, but far fewer than its characters
    assert 2 <= count_tokens("=" * 24) <= 12


def test_long_words_are_split() -> None:
    assert count_tokens("supercalifragilisticexpialidocious") >= 4
    assert count_tokens("a" * 400) >= 80


def test_cjk_about_one_token_per_character() -> None:
    text = "你好世界这是一个测试"  # 10 characters
    assert 7 <= count_tokens(text) <= 14


def test_count_grows_with_text() -> None:
    assert count_tokens(PROSE * 3) >= 3 * count_tokens(PROSE) - 3


def test_chat_overhead() -> None:
    # OpenAI cookbook framing: 3 per message + role (1) + content, + 3 priming the reply
    messages = [{"role": "user", "content": "hello"}]
    assert count_chat_tokens(messages) == 3 + 1 + 1 + 3
    two = messages + [{"role": "assistant", "content": "hello"}]
    assert count_chat_tokens(two) == count_chat_tokens(messages) + 3 + 1 + 1
    assert count_chat_tokens([]) == 3


def test_chat_name_content_parts_and_tool_calls() -> None:
    base = count_chat_tokens([{"role": "user", "content": "hi there"}])
    named = count_chat_tokens([{"role": "user", "content": "hi there", "name": "bob"}])
    assert named == base + 1 + 1  # the name's token plus the name surcharge
    parts = count_chat_tokens([{"role": "user", "content": [{"type": "text", "text": "hi there"}]}])
    assert parts == base
    image = count_chat_tokens(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    )
    assert image >= 85
    tool = count_chat_tokens([
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    ])
    assert tool > count_chat_tokens([{"role": "assistant", "content": None}])
