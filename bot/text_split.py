"""Split long answers into platform-sized messages at paragraph boundaries, never breaking a code fence.

A fence that is itself longer than the limit is cut between lines, and each piece is closed and reopened with
the same fence line, so every message renders as valid Markdown. An unclosed fence (mid-stream) is closed.
The split is prefix-stable: appending text never changes any chunk but the last two.
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")


def _blocks(text: str) -> list[tuple[str, str | None]]:
    """Paragraphs and fenced code blocks, as (text, fence opener or None)."""
    blocks: list[tuple[str, str | None]] = []
    lines = text.split("\n")
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            joined = "\n".join(para).strip("\n")
            if joined.strip():
                blocks.append((joined, None))
            para.clear()

    while i < len(lines):
        line = lines[i]
        m = _FENCE.match(line)
        if m:
            flush()
            marker = m.group(2)
            body = [line]
            i += 1
            while i < len(lines):
                body.append(lines[i])
                closing = _FENCE.match(lines[i])
                i += 1
                if closing and closing.group(2).startswith(marker[0] * len(marker)) and not closing.group(3).strip():
                    break
            else:
                body.append(marker)  # close a fence still open at the end of the text
            blocks.append(("\n".join(body), line.strip()))
            continue
        if not line.strip():
            flush()
        else:
            para.append(line)
        i += 1
    flush()
    return blocks


def _hard_split(text: str, limit: int) -> list[str]:
    """Split a paragraph at line breaks, then spaces, then anywhere."""
    out: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = rest.rfind("\n", 0, limit + 1)
        if cut <= 0:
            cut = rest.rfind(" ", 0, limit + 1)
        if cut <= 0:
            cut = limit
        out.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        out.append(rest)
    return out


def _split_fence(block: str, opener: str, limit: int) -> list[str]:
    lines = block.split("\n")
    inner, closer = lines[1:-1], lines[-1].strip()
    budget = limit - len(opener) - len(closer) - 2
    if budget < 1:
        return _hard_split(block, limit)
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in inner:
        for part in [line[i : i + budget] for i in range(0, len(line), budget)] or [""]:
            if current and size + len(part) + 1 > budget:
                pieces.append("\n".join([opener, *current, closer]))
                current, size = [], 0
            current.append(part)
            size += len(part) + 1
    pieces.append("\n".join([opener, *current, closer]))
    return pieces


def split_message(text: str, limit: int) -> list[str]:
    """Return chunks, each at most ``limit`` characters, that together hold all of ``text``."""
    if limit < 20:
        raise ValueError("limit too small")
    pieces: list[str] = []
    for block, opener in _blocks(text):
        if len(block) <= limit:
            pieces.append(block)
        elif opener is not None:
            pieces.extend(_split_fence(block, opener, limit))
        else:
            pieces.extend(_hard_split(block, limit))
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + 2 + len(piece) <= limit:
            chunks[-1] = f"{chunks[-1]}\n\n{piece}"
        else:
            chunks.append(piece)
    return chunks
