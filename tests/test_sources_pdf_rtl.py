"""Right-to-left text that pypdf extracts in visual order is named in a warning: Hebrew and Arabic PDFs
built here (a line drawn as one run, words drawn one by one in either direction, a number inside the
line, a Hebrew name inside an English line), the order check on its own, and the real PDFs of
../shared/data (ArabicCIDTrueType.pdf named, the other Arabic files and every contract and filing not)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# A Type0 font with a ToUnicode map: pypdf reads the text through the map, whatever the font's name.
from test_sources_pdf_garbled import Codes, cjk_pdf  # noqa: E402
from test_sources_pdf import write  # noqa: E402

from longdoc.errors import LongdocError  # noqa: E402
from longdoc.sources import PAGE_SEPARATOR, load, stream  # noqa: E402
from longdoc.sources.rtl import has_rtl, order_votes, visually_ordered  # noqa: E402

# The first article of the Universal Declaration of Human Rights, in reading order.
HE = ["כל בני האדם נולדו בני חורין ושווים בערכם ובזכויותיהם.",
      "כולם חוננו בתבונה ובמצפון, לפיכך חובה עליהם לנהוג איש ברעהו ברוח של אחוה."]
AR = ["يولد جميع الناس أحرارًا متساوين في الكرامة والحقوق.",
      "وقد وهبوا عقلاً وضميرًا وعليهم أن يعامل بعضهم بعضًا بروح الإخاء."]


def warning_for(pages: str) -> str:
    it = "it" if pages.startswith("page ") else "them"
    return (f"the right-to-left text of {pages} looks visually ordered (its words left to right, the reverse of "
            f"reading order); answers from {it} may be unreliable")


def rtl_pdf(pages: list[list[tuple[float, float, str]]]) -> bytes:
    """One Tj per run (x, y, text), the text's glyphs drawn in the order given."""
    codes = Codes()
    return cjk_pdf([[(x, y, codes(s)) for x, y, s in runs] for runs in pages], to_unicode=codes.to_unicode)


def one_run(lines: list[str]) -> list[tuple[float, float, str]]:
    """Each line one run, its glyphs left to right on the page (the reading order reversed), as most
    producers draw a line: pypdf reverses the run back."""
    return [(72, 700 - 16 * i, line[::-1]) for i, line in enumerate(lines)]


def by_word(lines: list[str], reading_order: bool) -> list[tuple[float, float, str]]:
    """A run per word (12 pt a glyph, a 12 pt space), set from the right margin; the runs in reading
    order (right to left on the page) or left to right."""
    runs = []
    for i, line in enumerate(lines):
        x, row = 580.0, []
        for w in line.split():
            x -= 12 * len(w)
            row.append((x, 700 - 16 * i, w[::-1]))
            x -= 12
        runs += row if reading_order else row[::-1]
    return runs


def words(text: str) -> list[str]:
    """The words, without the punctuation pypdf may move to the other end of a line."""
    return [w for w in (w.strip(".,") for w in text.split()) if w]


@pytest.mark.parametrize("lines", [HE, AR], ids=["hebrew", "arabic"])
def test_a_line_drawn_as_one_run_reads_in_order_and_is_not_named(tmp_path, lines):
    doc = load(write(tmp_path, "one-run.pdf", rtl_pdf([one_run(lines)])))
    assert words(doc.text) == words(" ".join(lines)) and doc.warnings == ()


@pytest.mark.parametrize("lines", [HE, AR], ids=["hebrew", "arabic"])
def test_words_drawn_left_to_right_read_in_order_and_are_not_named(tmp_path, lines):
    doc = load(write(tmp_path, "ltr.pdf", rtl_pdf([by_word(lines, reading_order=False)])))
    glued = [w.replace(",", "") for w in words(doc.text)]  # pypdf loses the spaces between the runs
    assert "".join(glued) == "".join(w.replace(",", "") for w in words(" ".join(lines))) and doc.warnings == ()


@pytest.mark.parametrize("lines", [HE, AR], ids=["hebrew", "arabic"])
def test_words_drawn_in_reading_order_come_out_reversed_and_are_named(tmp_path, lines):
    """Page 2's words are drawn right to left: pypdf gives each word right and their order reversed."""
    p = write(tmp_path, "rtl.pdf", rtl_pdf([one_run(lines), by_word(lines, reading_order=True)]))
    doc = load(p)
    two = doc.text.split(PAGE_SEPARATOR)[1]
    last = words(lines[0])[-1]
    assert two.startswith(last)  # the line's last word first
    assert doc.warnings == (warning_for("page 2"),)
    s = stream(p)
    assert "".join(s.chunks) == doc.text and s.warnings == list(doc.warnings)


def test_a_number_inside_a_hebrew_line_is_named(tmp_path):
    """A date splits the run: pypdf reverses the pieces one by one and keeps them left to right."""
    line = "החוזה נחתם ב-12 במאי 2024 בירושלים"
    drawn = line[::-1].replace("21", "12").replace("4202", "2024")  # digits stay left to right
    doc = load(write(tmp_path, "date.pdf", rtl_pdf([[(72, 700, drawn)]])))
    assert doc.text.split()[0].startswith("בירושלים") and doc.warnings == (warning_for("page 1"),)


def test_hebrew_inside_an_english_line_is_not_named(tmp_path):
    runs = [(72, 700, "Tenant: " + "דוד כהן"[::-1] + ", Haifa"), (72, 684, "Landlord: " + "שרה לוי"[::-1])]
    doc = load(write(tmp_path, "names.pdf", rtl_pdf([runs])))
    assert "דוד כהן" in doc.text and "שרה לוי" in doc.text and doc.warnings == ()


# -- the check on its own ------------------------------------------------------------------------

def test_has_rtl():
    assert has_rtl("Name: שלום") and has_rtl("مرحبا") and has_rtl("ﻟﻌﺮﺑﻴﺔ")  # presentation forms too
    assert not has_rtl("Hello, мир, 你好, 123") and not has_rtl("")


@pytest.mark.parametrize("text, layout, votes", [
    ("שלום עולם יפה", "הפי םלוע םולש", (0, 2)),  # reading order
    ("יפה עולם שלום", "הפי םלוע םולש", (2, 0)),  # visual order
    ("יפהעולםשלום", "הפי  םלוע  םולש", (2, 0)),  # the spaces lost, as pypdf loses them
    ("שלום עולם. עולם שלום.", "םלוע םולש", (0, 0)),  # both orders in the text: no vote
    ("שלום עולם", "םולש      םלוע", (0, 0)),  # a column gap: not neighbours
    ("שלום עולם", "םלוע text םולש", (0, 0)),  # a left-to-right word between them
    ("שלום 2024 עולם", "םלוע 2024 םולש", (0, 1)),  # a number between them keeps their order
    ("ב שלום", "םולש ב", (0, 0)),  # one letter: too short to vote
    ("abc שלום def", "abc םולש def", (0, 0)),  # one word: no order to judge
])
def test_order_votes(text, layout, votes):
    assert order_votes(text, layout) == votes
    assert visually_ordered(text, layout) == (votes[0] > 0 and votes[0] >= votes[1])


# -- the real PDFs of ../shared/data -------------------------------------------------------------

def _rtl_warning(doc) -> str | None:
    return next((w for w in doc.warnings if "right-to-left" in w), None)


def test_the_arabic_pdfs_of_the_robustness_corpus(shared_data):
    corpus = shared_data / "pdf-robustness"
    arabic = load(str(corpus / "pdfjs-test-pdfs" / "ArabicCIDTrueType.pdf"))  # each word its own run
    assert arabic.text.split("\n")[0].split() == ["اﻟﻌﺮﺑﻴﺔ", "اﳋﻄﻮط", "اﻧﻮاع"]  # reading order: the reverse
    assert arabic.warnings == (warning_for("page 1"),)
    multilang = load(str(corpus / "pypdf-resources" / "multilang.pdf"))  # one run: reading order
    assert "مرحبا بالعالم" in multilang.text and not multilang.warnings
    for name in ["habibi.pdf", "habibi-rotated.pdf", "habibi-oneline-cmap.pdf"]:  # one Arabic word a line
        assert not load(str(corpus / "py-pdf-sample-files" / "015-arabic" / name)).warnings, name


def test_no_other_robustness_pdf_is_named(shared_data):
    named = set()
    for f in sorted((shared_data / "pdf-robustness").rglob("*.pdf")):
        try:
            if _rtl_warning(load(str(f))):
                named.add(f.name)
        except LongdocError:  # encrypted and broken files: test_pdf_corpus's business
            continue
    assert named == {"ArabicCIDTrueType.pdf"}
