"""Streamed reading (longdoc.sources.stream, text.iter_decoded): the pieces join to what ``load`` gives.

Small sample sizes put the sample's end and the block boundaries inside CRLF pairs and multi-byte
characters; real files of more than the 1 MiB sample go through the CLI tests.
"""
import codecs
import io
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longdoc.errors import LongdocError
from longdoc.sources import PAGE_SEPARATOR, load, stream
from longdoc.sources.text import decode_text, iter_decoded

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_tokens import make_pdf  # noqa: E402  (a hand-written PDF, one text line per page)

TEXT = ("Clause 1.\r\nThe Licensee shall pay\r\rwithin 30 days — café, naïve, 中文, \U0001f600.\n" * 40
        + "end\r")


def _decoded(data: bytes, sample: int, block: int | None = None, name="t"):
    warnings = []
    pieces = iter_decoded(io.BytesIO(data), name, warnings, sample=sample, block=block or sample)
    return "".join(pieces), warnings


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32", "cp1252"])
@pytest.mark.parametrize("sample,block", [(16, 1), (16, 2), (64, 3), (64, 7), (1000, 1000), (1 << 20, 1 << 20)])
def test_pieces_join_to_decode_text(encoding, sample, block):
    text = TEXT
    if encoding == "cp1252":  # an 8-bit code page is detected on a sample of the language, not 16 bytes
        text = ("Le café est très cher à Noël, déjà réservé. " * 40 + "\r\n") * 3
        sample = max(sample, 1000)
    data = text.encode(encoding)
    got, warnings = _decoded(data, sample, block)
    assert got == decode_text(data, "t")[0] and warnings == []


def test_invalid_utf8_is_replaced_and_counted_never_an_exception():
    good = "Die Gebühr ist fällig.\r\n".encode() * 300
    data = good[:1000] + b"\xff" + good[1000:] + b"\xc3(" + good + b"\xed\xa0\x80 end"
    got, warnings = _decoded(data, 4096)  # the first bad byte in the sample, the others after it
    want = data.decode("utf-8", "replace").replace("\r\n", "\n")
    assert got == want
    assert warnings == [f"{got.count(chr(0xFFFD))} invalid utf-8 byte sequence(s) shown as U+FFFD"]
    small, w = _decoded(data, 1 << 20)  # the whole file in the sample: exactly decode_text
    assert (small, tuple(w)) == (decode_text(data, "t")[0], decode_text(data, "t")[2])


def test_binary_and_undecodable_fail_before_any_piece():
    with pytest.raises(LongdocError, match="binary file"):
        iter_decoded(io.BytesIO(b"text\x00\x01\x02" * 5000), "b", sample=4096)
    with pytest.raises(LongdocError, match="binary file"):  # a NUL past the first 8 KiB, in a non-UTF-8 sample
        iter_decoded(io.BytesIO(b"\xe9t\xe9 " * 4000 + b"\x00" + b"x" * 100000), "b", sample=20000)
    with pytest.raises(LongdocError, match="encoding could not be detected"):
        iter_decoded(io.BytesIO(bytes(range(1, 256)) * 100), "b", sample=4096)


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.sampled_from(list("ab \t.é中\U0001f600\r\n\f\u2028\ufffd")), max_size=300),
       encoding=st.sampled_from(["utf-8", "utf-16", "utf-8-sig"]), block=st.integers(1, 50))
def test_random_text_pieces_join_to_decode_text(text, encoding, block):
    data = text.encode(encoding)
    assert _decoded(data, 8, block)[0] == decode_text(data, "t")[0]


def test_stream_equals_load_for_text_markdown_and_pdf(tmp_path):
    t = tmp_path / "a.md"
    t.write_bytes(codecs.BOM_UTF8 + TEXT.encode())
    s = stream(t)
    assert (s.kind, "".join(s.chunks), s.warnings) == ("text", load(t).text, [])
    pdf = make_pdf(tmp_path / "c.pdf", ["Exhibit B. Payment terms apply.", "", "Page three has words."])
    s = stream(pdf)
    assert s.kind == "pdf" and s.warnings == []  # complete only once read
    chunks = list(s.chunks)
    assert "".join(chunks) == load(pdf).text and chunks.count(PAGE_SEPARATOR) == 2
    assert s.warnings == list(load(pdf).warnings) == ["page 2 has no text layer (scanned?); OCR is not done"]


@pytest.mark.parametrize("case,message", [
    ("missing", "no such file"), ("dir", "is a directory"), ("fake-pdf", r"not a PDF \(no %PDF- header\)"),
    ("empty-pdf", "empty file, not a PDF"), ("binary", "binary file"), ("broken-pdf", "cannot read PDF"),
    ("no-text-pdf", "no text layer"),
])
def test_stream_errors_are_one_line(tmp_path, case, message):
    path = tmp_path / {"missing": "nope.txt", "dir": "d", "fake-pdf": "x.pdf", "empty-pdf": "e.pdf",
                       "binary": "b.bin", "broken-pdf": "y.pdf", "no-text-pdf": "z.pdf"}[case]
    if case == "dir":
        path.mkdir()
    elif case == "fake-pdf":
        path.write_text("hello")
    elif case == "empty-pdf":
        path.write_bytes(b"")
    elif case == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "broken-pdf":
        path.write_bytes(b"%PDF-1.4\n1 0 obj garbage")
    elif case == "no-text-pdf":
        make_pdf(path, ["", ""])
    with pytest.raises(LongdocError, match=message) as e:
        "".join(stream(path).chunks)  # the PDF without text fails at its end, the others at once
    assert "\n" not in str(e.value) and str(path) in str(e.value)
