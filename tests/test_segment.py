"""Segmentation: clause labels, headings, Markdown, code units, and the coverage / no-split rules."""
from __future__ import annotations

import bisect
import re

import pytest

from longdoc.segment import DEFAULT_MAX_CHARS, clauses, segment
from longdoc.sources.document import Document


def blank(c: str) -> bool:
    return c.isspace() or c == "\ufeff"


def check_invariants(doc: Document, segs, max_chars: int) -> None:
    """Every non-blank char in exactly one segment; only blanks between segments; no cut inside a
    word unless that word is longer than max_chars; lengths within max_chars (prose)."""
    text = doc.text
    prev_end = 0
    for sg in segs:
        assert 0 <= sg.start < sg.end <= len(text)
        assert sg.start >= prev_end, "segments overlap or are out of order"
        assert all(blank(c) for c in text[prev_end:sg.start]), "non-blank text dropped"
        assert not blank(text[sg.start]) and not blank(text[sg.end - 1])
        if doc.kind != "code":
            assert sg.end - sg.start <= max_chars
        prev_end = sg.end
    assert all(blank(c) for c in text[prev_end:]), "non-blank text dropped at the end"
    touching = [a.end for a, b in zip(segs, segs[1:]) if a.end == b.start]
    if touching:  # a cut inside a run of non-blank chars: only allowed in a run longer than max_chars
        runs = [(m.start(), m.end()) for m in re.finditer(r"[^\s\ufeff]+", text)]
        starts = [r[0] for r in runs]
        for cut in touching:
            run_start, run_end = runs[bisect.bisect_right(starts, cut) - 1]
            assert run_start < cut < run_end
            assert run_end - run_start > max_chars, f"word split: {text[run_start:run_end]!r}"


def doc(text: str, kind: str = "text", language: str | None = None) -> Document:
    return Document("t", text, kind, language=language)


CONTRACT = """MASTER SERVICES AGREEMENT

ARTICLE I
DEFINITIONS

1.1 "Affiliate" means any entity that controls, is controlled by, or is under common control with a party.

1.2 "Services" means the services described in Exhibit B.

ARTICLE II
TERM AND TERMINATION

Section 2.1 Term. This Agreement begins on the Effective Date and continues for three (3) years.

2.2 Termination for Convenience. Either party may terminate this Agreement:
(a) on ninety (90) days' written notice to the other party; or
(b) immediately if the other party becomes insolvent.

12.3(b) Governing Law. This Agreement is governed by the laws of the State of New York.
"""


def test_clause_numbers_and_headings_become_labels():
    d = doc(CONTRACT)
    labels = [c.label for c in clauses(d)]
    for want in ["MASTER SERVICES AGREEMENT", "ARTICLE I", "DEFINITIONS", "1.1", "1.2", "ARTICLE II",
                 "2.1", "2.2", "2.2(a)", "2.2(b)", "12.3(b)"]:
        assert want in labels, (want, labels)
    by_label = {c.label: d.text[c.start:c.end] for c in clauses(d)}
    assert by_label["2.2(a)"].startswith("(a) on ninety")
    assert by_label["12.3(b)"].endswith("State of New York.")


def test_small_clauses_merge_and_keep_the_first_label():
    d = doc(CONTRACT)
    segs = segment(d, max_chars=300, min_chars=120)
    check_invariants(d, segs, 300)
    # a heading never ends a segment on its own: it joins what follows
    for sg in segs:
        assert d.text[sg.start:sg.end] not in ("ARTICLE I", "ARTICLE II", "DEFINITIONS")
    first = {sg.label for sg in segs}
    assert "1.1" in first or "ARTICLE I" in first


def test_with_min_chars_zero_every_clause_stands_alone():
    d = doc(CONTRACT)
    segs = segment(d, max_chars=1000, min_chars=0)
    labels = [s.label for s in segs]
    assert {"1.1", "1.2", "2.2(a)", "2.2(b)", "12.3(b)"} <= set(labels)


def test_edgar_style_space_runs_separate_paragraphs():
    text = ("agree as follows:     1. DEFINITIONS. Terms have the meanings below.     1.1. \"Product\" means "
            "the widget.     1.2. \"Territory\" means Canada.     2. APPOINTMENT. Seller appoints Buyer.")
    d = doc(text)
    labels = [c.label for c in clauses(d)]
    assert labels[1:] == ["1", "1.1", "1.2", "2"]


def test_long_clause_splits_at_sentences_and_keeps_its_label():
    sentences = [f"Sentence number {i} of the indemnification clause is here." for i in range(40)]
    text = "7.4 Indemnification. " + " ".join(sentences)
    d = doc(text)
    segs = segment(d, max_chars=400, min_chars=100)
    check_invariants(d, segs, 400)
    assert len(segs) >= 6 and all(s.label == "7.4" for s in segs)
    for s in segs[:-1]:
        assert d.text[s.end - 1] == "."  # ends at a sentence end
    lengths = [s.end - s.start for s in segs]
    assert max(lengths) - min(lengths) < 200  # near-equal pieces, no tiny tail


def test_no_word_split_without_punctuation():
    words = " ".join(f"word{i}" for i in range(2000))
    d = doc(words)
    segs = segment(d, max_chars=250, min_chars=50)
    check_invariants(d, segs, 250)


def test_word_longer_than_max_is_cut():
    d = doc("short " + "x" * 2500 + " tail")
    segs = segment(d, max_chars=1000, min_chars=10)
    check_invariants(d, segs, 1000)
    assert max(s.end - s.start for s in segs) <= 1000


def test_pdf_page_breaks_separate_blocks():
    text = "First page paragraph ends here." + "\n\f\n" + "Second page starts here."
    d = Document("t.pdf", text, "pdf", page_starts=(0, text.index("Second")))
    cl = clauses(d)
    assert [d.page_of(c.start) for c in cl] == [1, 2]


def test_page_footer_does_not_carry_the_next_page():
    """A page's short last block (its page number) is not merged forward: the next page's text starts
    its own passage, so the passage is cited at the page that holds it. A heading at the foot of a
    page still joins its body on the next page."""
    body = "The parties shall keep the terms of this Agreement confidential and use them only for it. " * 3
    cont = "be subject to and the parties' rights under the Confidentiality Agreement, which survives. " * 3
    text = body + "\n\n15\n\f\n" + cont + "\n\nCONFIDENTIALITY\n\f\n" + body
    starts = (0, text.index("be subject"), text.index("CONFIDENTIALITY\n") + 17)
    d = Document("t.pdf", text, "pdf", page_starts=starts)
    segs = segment(d)
    check_invariants(d, segs, DEFAULT_MAX_CHARS)
    first = next(sg for sg in segs if "be subject" in text[sg.start:sg.end])
    assert text[first.start:].startswith("be subject") and d.page_of(first.start) == 2
    head = next(sg for sg in segs if "CONFIDENTIALITY" in text[sg.start:sg.end])
    assert text[head.start:head.end].startswith("CONFIDENTIALITY") and text[head.start:head.end].endswith("it.")


def test_markdown_headings_label_their_sections():
    md = """# Install

Run the installer.

## Linux

Use the package manager:

```
# not a heading
apt install thing


more code
```

Setext title
============

Body under setext.
"""
    d = doc(md, "markdown")
    cl = clauses(d)
    got = [(c.kind, c.label) for c in cl]
    assert ("heading", "Install") in got and ("heading", "Linux") in got
    assert ("heading", "Setext title") in got
    fence = [c for c in cl if c.kind == "code"]
    assert len(fence) == 1 and "# not a heading" in d.text[fence[0].start:fence[0].end]
    assert fence[0].label == "Linux"
    para = next(c for c in cl if d.text[c.start:c.end].startswith("Use the package"))
    assert para.label == "Linux"
    segs = segment(d, max_chars=200, min_chars=50)
    check_invariants(d, segs, 200)
    # segments never run across a heading into the next section's... start from a heading
    assert any(d.text[s.start:].startswith("## Linux") for s in segs)


PY = '''"""Module doc."""
import os


def top(a, b):
    """Add."""
    return a + b


class Store:
    """A store."""

    limit = 3

    @property
    def size(self):
        return 1

    def put(self, key, value):
        # a comment
        self.data[key] = value
        return value

    class Inner:
        def deep(self):
            pass


x = top(1, 2)
'''


def test_python_functions_classes_methods():
    pytest.importorskip("tree_sitter_python")
    d = doc(PY, "code", "python")
    segs = segment(d, max_chars=DEFAULT_MAX_CHARS, min_chars=0)
    check_invariants(d, segs, DEFAULT_MAX_CHARS)
    labels = [s.label for s in segs]
    for want in ["top", "Store", "Store.size", "Store.put", "Store.Inner", "Store.Inner.deep"]:
        assert want in labels, labels
    size = next(s for s in segs if s.label == "Store.size")
    assert d.text[size.start:size.end].startswith("@property")
    assert d.line_of(size.start) == PY[:PY.index("@property")].count("\n") + 1


def test_long_function_splits_at_line_ends_with_its_label():
    pytest.importorskip("tree_sitter_python")
    body = "\n".join(f"    v{i} = compute({i})  # step" for i in range(120))
    src = f"def big():\n{body}\n    return v0\n"
    d = doc(src, "code", "python")
    segs = segment(d, max_chars=500, min_chars=100)
    check_invariants(d, segs, 500)
    assert len(segs) > 3 and all(s.label == "big" for s in segs)
    for s in segs:
        assert s.end - s.start <= 500
        assert s.end == len(src.rstrip()) or src[s.end] == "\n"


@pytest.mark.parametrize("language,src,labels", [
    ("javascript", "import x from 'y';\nexport const f = (a) => a + 1;\nclass B {\n  m() { return 1; }\n}\n",
     ["f", "B", "B.m"]),
    ("typescript", "interface I { a: number }\nexport function g(x: number): number { return x; }\n",
     ["I", "g"]),
    ("go", "package p\n\n// M does things.\nfunc (s *T) M() {}\n\ntype T struct{}\n", ["T.M", "T"]),
    ("rust", "impl Foo for Bar {\n    fn x(&self) {}\n}\nfn main() {}\n", ["Bar", "Bar.x", "main"]),
    ("java", "class A {\n  A() {}\n  void f() {}\n}\n", ["A", "A.A", "A.f"]),
    ("c", "#include <stdio.h>\nstatic int add(int a, int b) { return a + b; }\n", ["add"]),
    ("cpp", "namespace n {\nclass A { void f() {} };\n}\nint A::h() { return 2; }\n", ["n", "n.A", "n.A.f", "A::h"]),
])
def test_other_languages(language, src, labels):
    pytest.importorskip("tree_sitter_" + ("typescript" if language == "typescript" else language))
    d = doc(src, "code", language)
    segs = segment(d, min_chars=0)
    check_invariants(d, segs, DEFAULT_MAX_CHARS)
    got = [s.label for s in segs]
    for want in labels:
        assert want in got, got


def test_go_doc_comment_belongs_to_its_function():
    pytest.importorskip("tree_sitter_go")
    src = "package p\n\n// M does things.\nfunc (s *T) M() {}\n"
    d = doc(src, "code", "go")
    m = next(s for s in segment(d, min_chars=0) if s.label == "T.M")
    assert src[m.start:m.end].startswith("// M does things.")


def test_code_without_grammar_falls_back_to_line_blocks():
    src = "proc a {} {\n  puts hi\n}\n\nproc b {} {\n  puts there\n}\n"
    d = doc(src, "code", "tcl-no-such-grammar")
    segs = segment(d, min_chars=0)
    check_invariants(d, segs, DEFAULT_MAX_CHARS)
    assert [s.kind for s in segs] == ["lines", "lines"]


def test_non_ascii_code_offsets_are_chars_not_bytes():
    pytest.importorskip("tree_sitter_python")
    src = 'S = "ünïcödé ✓ 😀"\n\n\ndef f():\n    return "é"\n'
    d = doc(src, "code", "python")
    f = next(s for s in segment(d, min_chars=0) if s.label == "f")
    assert src[f.start:f.end] == 'def f():\n    return "é"'


def test_empty_and_blank():
    assert segment(doc("")) == []
    assert segment(doc(" \n\n\t \f ")) == []
    assert segment(doc("\ufeff")) == []
    assert segment(doc("", "code", "python")) == []


def test_bom_is_not_part_of_a_segment():
    d = doc("\ufeffHello there.")
    (s,) = segment(d)
    assert d.text[s.start:s.end] == "Hello there."


def test_parameters_are_validated():
    with pytest.raises(ValueError):
        segment(doc("x"), max_chars=0)


def test_cuad_like_real_contract_if_present():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    txt = next((p for p in (repo.parent / "shared" / "data" / "cuad" / "txt",
                            Path("/work/shared/data/cuad/txt")) if p.is_dir()), None)
    if txt is None:
        pytest.skip("CUAD dev texts not present")
    from longdoc.sources import load

    for path in sorted(txt.glob("*.txt"))[:10]:
        d = load(str(path))
        segs = segment(d)
        check_invariants(d, segs, DEFAULT_MAX_CHARS)
        assert sum(1 for s in segs if s.label and re.fullmatch(r"\d+(\.\d+)*(\([a-z]+\))?", s.label)) > 0 \
            or len(segs) < 30
