"""Whether a PDF page's right-to-left text (Hebrew, Arabic, ...) came out in visual order.

pypdf assumes a content stream draws glyphs left to right and reverses each run of right-to-left
characters it meets, which gives reading (logical) order when a whole line is one run. When a line
is broken into several runs (a font change for the spaces, a number between two words) or is drawn
right to left, each piece is reversed on its own and the pieces keep their drawing order: every word
is right, their order is left to right (``ArabicCIDTrueType.pdf`` reads ``العربية الخطوط انواع`` for
``انواع الخطوط العربية``). Nothing in the text says so, and no bidi library can repair it: the
Unicode bidi algorithm (python-bidi) turns logical order into visual, and applied to pypdf's output
it reverses the letters of every word. The order has to come from the page, so it is not reordered
here: ``visually_ordered`` says when the words look reversed, and the loader warns.

The reference is pypdf's layout mode (``extract_text(extraction_mode="layout")``), which places the
page's text groups on each line by their x position, each group's glyphs in drawing order: left to
right on the page, so a line's right-to-left words read in it from the right (``ةيبرعلا`` is
``العربية`` reversed). Of two different words of two letters or more next to each other on a line
(no left-to-right word between them; a number, punctuation or a one-letter piece between them does
not change their order), the one on the right is read first. The page's plain text, kept to
right-to-left letters and marks, holds the pair as read (a vote for reading order), as it stands
left to right (a vote for visual order), both (the phrase also occurs the other way round: no vote)
or neither (the layout did not match the text: no vote). A page is visually ordered when at least
one pair votes so and no more vote for reading order.
"""
from __future__ import annotations

import re
import unicodedata

# Hebrew, Arabic, Syriac, Thaana, NKo, Samaritan, Mandaic, their presentation forms, and the
# right-to-left blocks of the supplementary planes: where any character of bidi class R or AL lies.
_RTL_BLOCKS = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc\U00010800-\U00010fff\U0001e800-\U0001efff]")
# Layout mode marks a gap of 5 space widths or more as a new group (pypdf's
# LAYOUT_NEW_BT_GROUP_SPACE_WIDTHS): a column gap, across which words are not one phrase.
_COLUMN_GAP = re.compile(r" {5,}")


def _rtl(c: str) -> bool:
    return unicodedata.bidirectional(c) in ("R", "AL")


def _kept(c: str) -> bool:
    """A right-to-left letter, or a mark (an Arabic vowel sign, a Hebrew point) that goes with one."""
    return unicodedata.bidirectional(c) in ("R", "AL", "NSM")


def has_rtl(text: str) -> bool:
    """Whether ``text`` holds a right-to-left letter (bidi class R or AL)."""
    return any(_rtl(m.group()) for m in _RTL_BLOCKS.finditer(text))


def _pairs(layout: str):
    """``(left, right)``: the right-to-left words that stand next to each other on a line of the
    layout text, each with its letters as drawn (left to right)."""
    for line in layout.splitlines():
        for part in _COLUMN_GAP.split(line):
            left = None
            for token in part.split():
                if any(unicodedata.bidirectional(c) == "L" for c in token):
                    left = None  # a left-to-right word: the words on either side are not one phrase
                    continue
                kept = "".join(c for c in token if _kept(c))
                if sum(map(_rtl, kept)) < 2:
                    continue  # a number, punctuation or a one-letter piece ("ב" of "ב-12") keeps the order
                if left is not None and kept != left:
                    yield left, kept
                left = kept


def order_votes(text: str, layout: str) -> tuple[int, int]:
    """``(visual, logical)``: how many pairs of neighbouring right-to-left words of the layout text
    ``text`` holds in visual order only, and how many in reading order only."""
    plain = "".join(c for c in text if _kept(c))
    visual = logical = 0
    for left, right in _pairs(layout):
        a, b = left[::-1], right[::-1]  # each word's letters in reading order
        as_visual, as_logical = a + b in plain, b + a in plain
        visual += as_visual and not as_logical
        logical += as_logical and not as_visual
    return visual, logical


def visually_ordered(text: str, layout: str) -> bool:
    """Whether the right-to-left words of a page's extracted ``text`` look in visual order (left to
    right) rather than reading order, judged against the page's ``layout`` text."""
    visual, logical = order_votes(text, layout)
    return visual > 0 and visual >= logical
