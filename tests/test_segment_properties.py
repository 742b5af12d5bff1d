"""Property tests (hypothesis) for load + segment: random bytes, huge lines, invalid UTF-8, NULs."""
from __future__ import annotations


from hypothesis import HealthCheck, given, settings, strategies as st

from longdoc.errors import LongdocError
from longdoc.segment import segment
from longdoc.sources import load
from longdoc.sources.document import Document

from test_segment import check_invariants

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Text that looks like documents: words, clause markers, headings, blank lines, space runs, page
# breaks, Markdown and code punctuation, and some arbitrary characters.
_PIECES = st.sampled_from([
    "word", "Word", "the", "12.3", "12.3(b)", "(b)", "(iv)", "ARTICLE IV", "Section 5.", "B.", "1.",
    "TERM AND TERMINATION", "#", "##", "```", "- ", "* ", "def", "class", "{", "}", "(", ")", ":", ";",
    ".", ",", "!", "?", "\"", "“", "é", "😀", "\ufeff", "\x00", "\t", " ", "   ", "     ", "\n", "\n\n",
    "\r\n", "\f", "\n\f\n", "====", "----", "\u00a0", "\u2028",
])
DOCLIKE = st.lists(st.one_of(_PIECES, st.text(max_size=12)), max_size=300).map("".join)


@FAST
@given(text=DOCLIKE, kind=st.sampled_from(["text", "pdf", "markdown"]),
       max_chars=st.integers(1, 400), min_chars=st.integers(0, 200))
def test_prose_segments_cover_everything_without_splitting_words(text, kind, max_chars, min_chars):
    d = Document("t", text, kind)
    check_invariants(d, segment(d, max_chars=max_chars, min_chars=min_chars), max_chars)


@FAST
@given(text=DOCLIKE, language=st.sampled_from(["python", "javascript", "go", "rust", "c", "cpp", "java", None]),
       max_chars=st.integers(20, 400))
def test_code_segments_cover_everything(text, language, max_chars):
    d = Document("t", text, "code", language=language)
    check_invariants(d, segment(d, max_chars=max_chars, min_chars=max_chars // 4), max_chars)


@FAST
@given(src=st.lists(st.sampled_from([
    "def f(x):\n", "    return x\n", "class A:\n", "    def m(self):\n", "        pass\n", "\n",
    "@dec\n", "# comment\n", "x = [\n", "]\n", "    '''doc'''\n", "async def g():\n", "  y = 'ü'\n",
]), max_size=80).map("".join), max_chars=st.integers(30, 300))
def test_python_like_code(src, max_chars):
    d = Document("t.py", src, "code", language="python")
    check_invariants(d, segment(d, max_chars=max_chars, min_chars=0), max_chars)


@settings(max_examples=6, deadline=None)
@given(n=st.integers(50_000, 200_000), spaced=st.booleans())
def test_huge_lines(n, spaced):
    text = ("lorem ipsum dolor sit amet " * (n // 27 + 1))[:n] if spaced else "x" * n
    d = Document("t", text, "text")
    segs = segment(d, max_chars=800, min_chars=200)
    check_invariants(d, segs, 800)


@FAST
@given(data=st.one_of(
    st.binary(max_size=2000),
    st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.builds(lambda t, junk: t.encode() + junk + t.encode(), st.text(max_size=300), st.binary(max_size=4)),
), suffix=st.sampled_from([".txt", ".md", ".py", ".pdf", ""]))
def test_load_random_bytes_never_crashes(tmp_path, data, suffix):
    p = tmp_path / f"f{suffix}"
    p.write_bytes(data)
    try:
        d = load(str(p), timeout=10)
    except LongdocError as e:
        msg = str(e)
        assert msg.startswith(str(p)) and "\n" not in msg
        return
    try:
        with open(p, encoding="utf-8") as f:
            expected = f.read()
    except (UnicodeDecodeError, ValueError):
        expected = None
    if expected is not None and d.kind != "pdf":
        assert d.text == expected  # valid UTF-8: exactly Python's text mode
    check_invariants(d, segment(d, max_chars=300, min_chars=50), 300)


def test_load_a_few_megabytes_of_text_quickly(tmp_path):
    p = tmp_path / "big.log"
    line = "2026-01-01 12:00:00 INFO request handled in 12 ms path=/api/v1/items?id=42\n"
    p.write_text(line * 60_000, encoding="utf-8")  # ~4.6 MB
    d = load(str(p))
    assert len(d.text) == len(line) * 60_000
    segs = segment(d)
    assert segs[0].start == 0 and segs[-1].end == len(d.text) - 1
