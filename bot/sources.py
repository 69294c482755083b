"""Citations of searched documents in an answer: numbered markers in the text and a "Sources" block at its end.

Backend- and platform-neutral: the markers (``[1]``) and the block are Markdown text every platform shows (Slack
and Discord render the bold heading; the console prints it as it is).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.stream_events import Citation, SearchResult

QUOTE_CHARS = 120


def short_quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """A passage on one line, cut at a word boundary to about ``limit`` characters."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0] or flat[:limit]
    return cut.rstrip(" ,;:.") + "…"


@dataclass(slots=True)
class Sources:
    """The documents an answer cites, numbered in the order they are first cited, each with a quote from what the
    file search found in it."""

    cited: list[Citation] = field(default_factory=list)
    _found: dict[str, str] = field(default_factory=dict)  # file id → the first passage found in it

    def found(self, result: SearchResult) -> None:
        self._found.setdefault(result.file_id, result.text)

    def number(self, citation: Citation) -> int:
        """The citation's number (1-based), adding its document on first citation."""
        for number, known in enumerate(self.cited, start=1):
            if known.file_id == citation.file_id:
                return number
        quote = citation.quote or self._found.get(citation.file_id, "")
        self.cited.append(Citation(citation.kind, file_id=citation.file_id, filename=citation.filename, quote=quote))
        return len(self.cited)

    def block(self) -> str:
        """The "Sources" block that ends the answer ("" when nothing was cited)."""
        if not self.cited:
            return ""
        lines = ["**Sources**"]
        for number, source in enumerate(self.cited, start=1):
            quote = short_quote(source.quote)
            name = source.filename or source.file_id
            lines.append(f"[{number}] {name} — “{quote}”" if quote else f"[{number}] {name}")
        return "\n\n" + "\n".join(lines)
