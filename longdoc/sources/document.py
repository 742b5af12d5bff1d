"""The Document: a source's text plus the map from character offset to page and line."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Document:
    """Text of one source and where each character came from.

    ``text`` is exactly what the user would read: for a text file, Python's
    ``open(path, encoding=...).read()`` (universal newlines), so ``char_start``/``char_end`` in
    results index into it. ``page_starts[p]`` is the offset where page ``p + 1`` begins (PDFs only).
    """

    path: str  # as the user named it; "-" for stdin
    text: str
    kind: str  # "pdf" | "text" | "markdown" | "code"
    page_starts: tuple[int, ...] | None = None
    language: str | None = None  # for code: a tree-sitter language name when known
    encoding: str | None = None  # the text encoding the bytes were decoded with (None for PDFs)
    warnings: tuple[str, ...] = ()  # non-fatal problems worth telling the user (e.g. pages with no text)
    line_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        starts = [0]
        find = self.text.find
        i = find("\n")
        while i != -1:
            starts.append(i + 1)
            i = find("\n", i + 1)
        object.__setattr__(self, "line_starts", tuple(starts))

    @property
    def n_pages(self) -> int | None:
        return len(self.page_starts) if self.page_starts is not None else None

    def line_of(self, offset: int) -> int:
        """1-based line number holding character ``offset``."""
        return bisect.bisect_right(self.line_starts, offset)

    def page_of(self, offset: int) -> int | None:
        """1-based page number holding character ``offset`` (None when the source has no pages)."""
        if self.page_starts is None:
            return None
        return max(1, bisect.bisect_right(self.page_starts, offset))


@dataclass(frozen=True)
class Segment:
    """A passage a reviewer would cite: ``text[start:end]`` of its Document."""

    start: int
    end: int
    kind: str  # "clause" | "heading" | "paragraph" | "function" | "class" | "lines" | ...
    label: str | None = None  # clause number ("12.3"), heading, or qualified function name
