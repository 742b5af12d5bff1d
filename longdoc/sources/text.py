"""Decoding of text files: bytes -> str, with offsets exactly as Python's text mode gives them.

For a UTF-8 file the result equals ``open(path, encoding="utf-8").read()``: universal newlines
(``\\r\\n`` and ``\\r`` become ``\\n``) and a UTF-8 byte order mark kept as U+FEFF at offset 0, so a
``char_start`` we report indexes the string a user gets from that call. Other encodings are taken from
a BOM (UTF-16/32), detected as BOM-less UTF-16, or detected with charset-normalizer; the text is then
what ``open(path, encoding=<that encoding>).read()`` gives. Binary files and undetectable encodings
raise ``LongdocError``.
"""
from __future__ import annotations

import codecs
import re

from ..errors import LongdocError

# Longest prefix inspected by the binary / UTF-16 sniffers (bytes). Big enough to see past a text
# header, small enough to stay cheap on gigabyte logs.
SNIFF_BYTES = 8192

_BOMS = (  # longest first: the UTF-32-LE BOM starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),  # kept as U+FEFF, exactly like open(encoding="utf-8")
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


_NON_ASCII_TEXT = re.compile("[^\x00-\x7f\ufffd]")


def universal_newlines(text: str) -> str:
    """What text mode's ``newline=None`` does to a decoded string: CRLF and lone CR become LF."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _bom_encoding(data: bytes) -> str | None:
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return enc
    return None


def _bomless_utf16(head: bytes) -> str | None:
    """'utf-16-le'/'utf-16-be' when the NUL pattern looks like BOM-less UTF-16 text, else None.

    Mostly-ASCII UTF-16 text has a NUL in every other byte; binary data does not keep that rhythm.
    """
    n = len(head) - len(head) % 2
    if n < 4:
        return None
    even_nul = head[0:n:2].count(0) / (n // 2)
    odd_nul = head[1:n:2].count(0) / (n // 2)
    if odd_nul > 0.6 and even_nul < 0.05:
        return "utf-16-le"
    if even_nul > 0.6 and odd_nul < 0.05:
        return "utf-16-be"
    return None


def _decode(data: bytes, encoding: str, name: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise LongdocError(
            f"{name}: not valid {encoding} text (bad bytes at offset {e.start}); re-encode it as UTF-8"
        ) from None


def decode_text(data: bytes, name: str) -> tuple[str, str, tuple[str, ...]]:
    """Decode a text file's bytes; returns ``(text, encoding, warnings)``.

    ``name`` is used in messages. A UTF-8 file with a few invalid bytes (at most 1 in 1,000, and
    real multi-byte UTF-8 elsewhere, so it is not a legacy 8-bit encoding) is decoded with each bad
    sequence replaced by U+FFFD and a warning (``open(path, encoding="utf-8")`` would refuse it).
    """
    enc = _bom_encoding(data)
    if enc is not None:
        return universal_newlines(_decode(data, enc, name)), enc, ()
    head = data[:SNIFF_BYTES]
    if b"\x00" in head:
        enc = _bomless_utf16(head)
        if enc is None:
            raise LongdocError(f"{name}: binary file (NUL bytes), not text")
        return universal_newlines(_decode(data, enc, name)), enc, ()
    try:
        return universal_newlines(data.decode("utf-8")), "utf-8", ()
    except UnicodeDecodeError as e:
        bad_at = e.start
    if b"\x00" in data:  # a NUL past the sniffed prefix: still binary
        raise LongdocError(f"{name}: binary file (NUL bytes), not text")
    text = data.decode("utf-8", "replace")
    n_bad = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    if n_bad <= max(1, len(data) // 1000) and _NON_ASCII_TEXT.search(text):
        return (universal_newlines(text), "utf-8",
                (f"{n_bad} invalid UTF-8 byte(s) (first at byte {bad_at}) shown as U+FFFD",))
    enc = _detect(data)
    if enc is None:
        raise LongdocError(
            f"{name}: not UTF-8 (invalid byte at offset {bad_at}) and the encoding could not be "
            "detected; re-encode it as UTF-8"
        )
    return universal_newlines(_decode(data, enc, name)), enc, ()


# Windows-1252 (a superset of Latin-1's printable range) is by far the most common legacy encoding.
_TIE_PREFERENCE = ("cp1252", "latin_1", "iso8859_15")


def _detect(data: bytes) -> str | None:
    from charset_normalizer import from_bytes

    # charset-normalizer reads samples of the payload; giving it the whole buffer keeps its view
    # of a long file representative without us guessing a prefix length.
    matches = from_bytes(data)
    best = matches.best()
    if best is None:
        return None
    enc = best.encoding
    # Several 8-bit code pages often fit equally well (é, è, ü are at the same code points in
    # cp1250 and cp1252, but è is not). On a tie, take the one most legacy files are actually in.
    tied = {m.encoding for m in matches
            if abs(m.chaos - best.chaos) <= 0.01 and m.coherence >= best.coherence - 0.02}
    for preferred in _TIE_PREFERENCE:
        if preferred in tied:
            enc = preferred
            break
    try:
        codecs.lookup(enc)
    except LookupError:
        return None
    return enc
