"""Long answers split at paragraph boundaries, within the limit, without breaking a code fence."""

from __future__ import annotations

import re

import pytest

from bot.text_split import split_message


def _fences_balanced(chunk: str) -> bool:
    return len(re.findall(r"^\s*```", chunk, flags=re.MULTILINE)) % 2 == 0


def _words(text: str) -> list[str]:
    return [w for w in text.split() if not w.startswith("```")]


def test_short_text_is_one_chunk() -> None:
    assert split_message("hello world", 100) == ["hello world"]


def test_splits_at_paragraphs_and_keeps_every_word() -> None:
    paragraphs = [f"Paragraph {i}: " + "word " * 40 for i in range(30)]
    text = "\n\n".join(p.strip() for p in paragraphs)
    chunks = split_message(text, 1000)
    assert len(chunks) > 1
    assert all(len(c) <= 1000 for c in chunks)
    assert all(c.startswith("Paragraph") for c in chunks), "each chunk must start at a paragraph boundary"
    assert _words("\n\n".join(chunks)) == _words(text)


@pytest.mark.parametrize("limit", [200, 2000, 3900])
def test_code_fence_is_never_broken(limit: int) -> None:
    code = "\n".join(f"    value_{i} = compute({i})" for i in range(400))
    text = f"Here is the code:\n\n```python\n{code}\n```\n\nAnd that is all."
    chunks = split_message(text, limit)
    assert all(len(c) <= limit for c in chunks)
    assert all(_fences_balanced(c) for c in chunks), "every chunk must open and close its fences"
    assert all(c.count("```python") == c.count("```") // 2 for c in chunks if "value_" in c)
    joined = "\n".join(chunks)
    assert all(f"value_{i} = compute({i})" in joined for i in range(400))


def test_unclosed_fence_mid_stream_is_closed() -> None:
    chunks = split_message("Look:\n\n```js\nconsole.log(1)", 500)
    assert chunks[-1].endswith("```") and _fences_balanced(chunks[-1])


def test_prefix_stable_as_text_grows() -> None:
    text = "\n\n".join(f"para {i} " + "x" * (i * 37 % 300) for i in range(60))
    final = split_message(text, 800)
    for cut in range(100, len(text), 97):
        partial = split_message(text[:cut], 800)
        assert partial[:-2] == final[: max(0, len(partial) - 2)]


def test_a_single_huge_word_is_hard_split() -> None:
    chunks = split_message("a" * 5000, 2000)
    assert [len(c) for c in chunks] == [2000, 2000, 1000]
