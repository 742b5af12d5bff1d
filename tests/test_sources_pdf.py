"""PDF loading on small PDFs built here: pages, separators, passwords, no text layer, time limit."""
from __future__ import annotations

import io
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from longdoc.errors import LongdocError
from longdoc.sources import PAGE_SEPARATOR, load


def make_pdf(pages: list[list[str] | None]) -> bytes:
    """A valid PDF with one page per entry: a list of text lines (Helvetica), or None for a page
    with no text at all (what a scan without OCR looks like to a text extractor)."""
    objs: list[bytes] = []  # object i+1

    def add(body: bytes) -> int:
        objs.append(body)
        return len(objs)

    catalog = add(b"")  # placeholders, filled in below
    pages_id = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    for lines in pages:
        if lines is None:
            content = b""
        else:
            ops = [b"BT /F1 12 Tf 14 TL 72 720 Td"]
            for line in lines:
                esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
                ops.append(b"(" + esc.encode("cp1252") + b") Tj T*")
            ops.append(b"ET")
            content = b"\n".join(ops)
        stream = add(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                        b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                        % (pages_id, font, stream)))
    return pdf_bytes(objs, catalog, pages_id, kids)


def pdf_bytes(objs: list[bytes], catalog: int, pages_id: int, kids: list[int]) -> bytes:
    """The file for objects ``objs`` (object i + 1 is objs[i]), filling in the catalog and page-tree
    placeholders at ``catalog`` and ``pages_id`` with the page objects ``kids``; with its xref table."""
    objs[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    objs[pages_id - 1] = (b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids)
                          + b"] /Count %d >>" % len(kids))
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % i + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1))
    for off in offsets:
        out.write(b"%010d 00000 n \n" % off)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objs) + 1, catalog, xref))
    return out.getvalue()


def encrypt(data: bytes, user: str, owner: str | None = None, algorithm: str = "AES-256") -> bytes:
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter()
    w.append(PdfReader(io.BytesIO(data)))
    w.encrypt(user_password=user, owner_password=owner, algorithm=algorithm)
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def test_page_of_every_character(tmp_path):
    pages = [["Page one first line", "ARTICLE I"], ["Page two (with parens)"], ["Third page café"]]
    doc = load(write(tmp_path, "three.pdf", make_pdf(pages)))
    assert doc.kind == "pdf" and doc.n_pages == 3 and not doc.warnings
    assert doc.text.count("\f") == 2
    parts = doc.text.split(PAGE_SEPARATOR)
    assert len(parts) == 3
    for p, (part, lines) in enumerate(zip(parts, pages), 1):
        start = doc.page_starts[p - 1]
        assert doc.text[start:start + len(part)] == part
        for line in lines:
            off = doc.text.index(line)
            assert doc.page_of(off) == p and doc.page_of(off + len(line) - 1) == p
    assert "café" in doc.text and "(with parens)" in doc.text
    # the separator belongs to the page before it
    sep_at = doc.text.index(PAGE_SEPARATOR)
    assert doc.page_of(sep_at) == 1 and doc.page_of(sep_at + len(PAGE_SEPARATOR)) == 2


def test_pdf_detected_by_content_not_extension(tmp_path):
    doc = load(write(tmp_path, "download.bin", make_pdf([["hello pdf"]])))
    assert doc.kind == "pdf" and "hello pdf" in doc.text


def test_no_text_layer(tmp_path):
    p = write(tmp_path, "scan.pdf", make_pdf([None, None]))
    with pytest.raises(LongdocError, match=r"no text layer \(scanned\?\); OCR is not done") as ei:
        load(p)
    assert str(ei.value).startswith(p)


def test_some_pages_without_text_are_a_warning(tmp_path):
    doc = load(write(tmp_path, "mixed.pdf", make_pdf([["text"], None, None, ["more"]])))
    assert doc.n_pages == 4
    assert doc.warnings == ("pages 2-3 have no text layer (scanned?); OCR is not done",)
    assert doc.page_of(doc.text.index("more")) == 4
    doc = load(write(tmp_path, "one.pdf", make_pdf([["text"], None])))
    assert doc.warnings == ("page 2 has no text layer (scanned?); OCR is not done",)


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_encrypted(tmp_path, algorithm):
    p = write(tmp_path, "secret.pdf", encrypt(make_pdf([["top secret text"]]), "pw", "owner", algorithm))
    with pytest.raises(LongdocError, match=r"encrypted PDF; give its password with --password"):
        load(p)
    with pytest.raises(LongdocError, match=r"wrong password .*--password"):
        load(p, password="nope")
    assert "top secret text" in load(p, password="pw").text
    assert "top secret text" in load(p, password="owner").text  # the owner password opens it too


def test_empty_user_password_opens_without_asking(tmp_path):
    p = write(tmp_path, "open.pdf", encrypt(make_pdf([["readable"]]), "", "owner"))
    assert "readable" in load(p).text


def test_password_on_unencrypted_pdf_is_ignored(tmp_path):
    assert "x y" in load(write(tmp_path, "plain.pdf", make_pdf([["x y"]])), password="pw").text


def test_broken_pdf_is_one_line_error(tmp_path):
    p = write(tmp_path, "broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ngarbage")
    with pytest.raises(LongdocError) as ei:
        load(p)
    assert str(ei.value).startswith(p + ": ") and "\n" not in str(ei.value)


def test_time_limit(tmp_path):
    p = write(tmp_path, "long.pdf", make_pdf([[f"line {i} of page {j}" for i in range(40)] for j in range(150)]))
    with pytest.raises(LongdocError, match=r"longer than the 0.01 s limit"):
        load(p, timeout=0.01)
    assert load(p, timeout=None).n_pages == 150


def test_time_limit_off_the_main_thread(tmp_path):
    # No SIGALRM in a worker thread: the limit is checked between pages.
    p = write(tmp_path, "long.pdf", make_pdf([[f"line {i}" for i in range(40)] for j in range(150)]))
    errors = []

    def run():
        try:
            load(p, timeout=0.01)
        except LongdocError as e:
            errors.append(str(e))

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert errors and "limit" in errors[0]


def test_stdin_pdf(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(make_pdf([["from a pipe"]]))))
    doc = load("-")
    assert doc.path == "-" and doc.kind == "pdf" and "from a pipe" in doc.text


_GOOD = make_pdf([["Section 1. Terms of the agreement", "more words here"], ["page two text"]])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(_GOOD)), flip=st.lists(
    st.tuples(st.integers(min_value=0, max_value=len(_GOOD) - 1), st.integers(0, 255)), max_size=4))
def test_truncated_or_corrupted_pdf_loads_or_fails_cleanly(tmp_path, cut, flip):
    data = bytearray(_GOOD[:cut])
    for i, b in flip:
        if i < len(data):
            data[i] = b
    p = write(tmp_path, "fuzz.pdf", bytes(data))
    try:
        doc = load(p, timeout=10)
    except LongdocError as e:
        assert "\n" not in str(e) and str(e).startswith(p)
    else:
        assert doc.text.strip()
        if doc.kind == "pdf":
            assert len(doc.page_starts) >= 1 and doc.page_starts[0] == 0


def test_text_that_mentions_the_pdf_header_is_text(tmp_path):
    """A source file or note that names the `%PDF-` header in its first KiB (longdoc's own
    sources/__init__.py, a test holding a PDF's bytes) is text, by `load` and `stream` (it was read
    as a broken PDF: "cannot read PDF", and `longdoc index` of this repository failed on 3 files)."""
    from longdoc.sources import looks_like_pdf, stream

    code = tmp_path / "make.py"
    code.write_text('"""Writes a (a ``%PDF-`` header) file."""\nBROKEN = b"%PDF-1.7\\nnot a pdf"\n', encoding="utf-8")
    notes = tmp_path / "notes.md"
    notes.write_text("# The format\n\nA PDF starts with a header line:\n\n```\n%PDF-1.7\n```\n", encoding="utf-8")
    for p, kind in ((code, "code"), (notes, "markdown")):
        doc = load(str(p))
        assert (doc.kind, doc.text) == (kind, p.read_text(encoding="utf-8"))
        s = stream(str(p))
        assert (s.kind, "".join(s.chunks)) == ("text", doc.text)
    # A PDF: the header first; or after junk in a file named .pdf, or after junk that is not text
    # (a MacBinary-style header of NULs and controls), wherever the name
    pdf = make_pdf([["Hello world"]])
    assert looks_like_pdf(pdf) and looks_like_pdf(b"HTTP/1.1 200 OK\r\n\r\n" + pdf, "x.pdf")
    assert not looks_like_pdf(b"HTTP/1.1 200 OK\r\n\r\n" + pdf, "x.txt")
    for name, data in (("saved.pdf", b"HTTP/1.1 200 OK\r\n\r\n" + pdf), ("mac.bin", b"\x00\x05doc\x00\x00" + pdf)):
        (tmp_path / name).write_bytes(data)
        assert load(str(tmp_path / name)).kind == "pdf" and "Hello world" in load(str(tmp_path / name)).text
        assert stream(str(tmp_path / name)).kind == "pdf"
