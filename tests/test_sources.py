"""Loaders for text, Markdown, code and stdin: offsets equal Python's text mode, clear errors."""
from __future__ import annotations

import codecs
import io
import sys

import pytest

from longdoc.errors import LongdocError
from longdoc.sources import load, language_for

SAMPLE = "Première ligne: café, naïve, 12.3 €.\nSecond line — with a dash.\n\nThird paragraph.\n"


def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


@pytest.mark.parametrize("raw", [
    SAMPLE.encode(),
    SAMPLE.replace("\n", "\r\n").encode(),  # CRLF
    SAMPLE.replace("\n", "\r").encode(),  # old Mac CR
    b"a\r\nb\rc\nd\r\r\n\n\re",  # mixed
    codecs.BOM_UTF8 + SAMPLE.encode(),  # BOM kept as U+FEFF, like open(encoding="utf-8")
    b"no newline at end",
    "\u2028line sep and \x0c form feed\x0b are not newlines in text mode\n".encode(),
])
def test_text_equals_python_text_mode(tmp_path, raw):
    p = write(tmp_path, "doc.txt", raw)
    doc = load(p)
    with open(p, encoding="utf-8") as f:
        expected = f.read()
    assert doc.text == expected
    assert doc.kind == "text" and doc.encoding == "utf-8" and doc.page_starts is None
    # line numbers agree with str.splitlines on the "\n"-only text
    for off in range(len(doc.text)):
        assert doc.line_of(off) == doc.text.count("\n", 0, off) + 1


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_32(tmp_path, encoding):
    # "utf-16-le"/"-be" write no BOM: detected from the rhythm of NUL bytes
    raw = SAMPLE.replace("\n", "\r\n").encode(encoding)
    doc = load(write(tmp_path, "u.txt", raw))
    assert doc.text == SAMPLE
    assert doc.encoding.startswith("utf-")


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_legacy_8bit_detected(tmp_path, encoding):
    text = ("Le café de la gare servait une crème brûlée très appréciée. Les élèves étaient à "
            "l'école, naïfs et sérieux; la façade était belle.\n") * 3
    doc = load(write(tmp_path, "fr.txt", text.encode(encoding)))
    assert doc.text == text
    assert doc.encoding not in ("utf-8", None)


def test_mostly_utf8_with_a_stray_byte_is_kept_with_warning(tmp_path):
    raw = ("Grüße aus Köln, " * 100).encode() + b"\xff" + " und München.\n".encode()
    doc = load(write(tmp_path, "stray.txt", raw))
    assert doc.encoding == "utf-8"
    assert doc.text.startswith("Grüße") and doc.text.endswith("München.\n")
    assert doc.text.count("\ufffd") == 1
    assert doc.warnings and "invalid UTF-8" in doc.warnings[0]


def test_undetectable_bytes_are_a_clear_error(tmp_path):
    # Non-text bytes with no NUL: either detected as some 8-bit text or refused, never a crash.
    raw = bytes(range(1, 256)) * 4
    try:
        doc = load(write(tmp_path, "blob.txt", raw))
    except LongdocError as e:
        assert "blob.txt" in str(e) and "\n" not in str(e)
    else:
        assert len(doc.text) > 0


@pytest.mark.parametrize("raw", [b"\x00\x01\x02binary\x00data", b"ELF\x7f" + bytes(300), b"text then \x00 nul"])
def test_binary_file_is_refused(tmp_path, raw):
    p = write(tmp_path, "a.bin", raw)
    with pytest.raises(LongdocError, match=r"binary file \(NUL bytes\)") as ei:
        load(p)
    assert p in str(ei.value) and "\n" not in str(ei.value)


def test_nul_after_the_sniffed_prefix_is_still_binary(tmp_path):
    raw = b"a" * 20000 + b"\x00\xff"
    with pytest.raises(LongdocError, match="binary"):
        load(write(tmp_path, "late.dat", raw))


def test_empty_file_is_an_empty_document(tmp_path):
    doc = load(write(tmp_path, "empty.txt", b""))
    assert doc.text == "" and doc.kind == "text"
    assert doc.line_of(0) == 1


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(LongdocError, match="no such file"):
        load(str(tmp_path / "nope.txt"))
    with pytest.raises(LongdocError, match="is a directory"):
        load(str(tmp_path))


def test_device_files_are_refused():
    with pytest.raises(LongdocError, match="not a regular file"):
        load("/dev/zero")


def test_kinds_by_extension_and_shebang(tmp_path):
    assert load(write(tmp_path, "README.md", b"# Title\n\nText.\n")).kind == "markdown"
    d = load(write(tmp_path, "mod.py", b"def f():\n    pass\n"))
    assert (d.kind, d.language) == ("code", "python")
    d = load(write(tmp_path, "tool", b"#!/usr/bin/env python3\nprint(1)\n"))
    assert (d.kind, d.language) == ("code", "python")
    d = load(write(tmp_path, "x.tsx", b"export const A = () => <div/>;\n"))
    assert (d.kind, d.language) == ("code", "tsx")
    assert load(write(tmp_path, "notes.txt", b"plain\n")).kind == "text"
    assert language_for("Makefile") == "make" and language_for("a.rs") == "rust"
    assert language_for("a.unknown") is None


def test_pdf_extension_without_pdf_content(tmp_path):
    with pytest.raises(LongdocError, match="not a PDF"):
        load(write(tmp_path, "fake.pdf", b"just text"))
    with pytest.raises(LongdocError, match="empty file"):
        load(write(tmp_path, "zero.pdf", b""))


def _stdin(monkeypatch, raw: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8"))


def test_stdin_text(monkeypatch):
    _stdin(monkeypatch, "Zeile 1\r\nZeile 2 ü\r\n".encode())
    doc = load("-")
    assert doc.path == "-" and doc.kind == "text"
    assert doc.text == "Zeile 1\nZeile 2 ü\n"


def test_stdin_binary_refused(monkeypatch):
    _stdin(monkeypatch, b"\x00\x00\x01")
    with pytest.raises(LongdocError, match=r"^-: binary"):
        load("-")


def test_stdin_empty(monkeypatch):
    _stdin(monkeypatch, b"")
    assert load("-").text == ""
