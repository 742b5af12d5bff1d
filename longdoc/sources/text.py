"""Decoding of text files: bytes -> str, with offsets exactly as Python's text mode gives them.

For a UTF-8 file the result equals ``open(path, encoding="utf-8").read()``: universal newlines
(``\\r\\n`` and ``\\r`` become ``\\n``) and a UTF-8 byte order mark kept as U+FEFF at offset 0, so a
``char_start`` we report indexes the string a user gets from that call. Other encodings are taken from
a BOM (UTF-16/32), detected as BOM-less UTF-16, or detected with charset-normalizer; the text is then
what ``open(path, encoding=<that encoding>).read()`` gives. Binary files and undetectable encodings
raise ``LongdocError``.

``iter_decoded`` gives the same text in pieces, for files too large to hold: the encoding is decided on
a leading sample of ``SAMPLE_BYTES`` with the same rules (a file no longer than the sample is decoded
by ``decode_text`` itself), and the rest is decoded incrementally with universal newlines, so the
pieces join to the string ``decode_text`` returns. Past the sample, an invalid byte becomes U+FFFD
(counted in a warning) instead of stopping the read.
"""
from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import LongdocError

# Longest prefix inspected by the binary / UTF-16 sniffers (bytes). Big enough to see past a text
# header, small enough to stay cheap on gigabyte logs.
SNIFF_BYTES = 8192
# Leading bytes on which the encoding of a streamed file is decided (iter_decoded), and its read size.
SAMPLE_BYTES = 1 << 20

_BOMS = (  # longest first: the UTF-32-LE BOM starts with the UTF-16-LE one
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8"),  # kept as U+FEFF, exactly like open(encoding="utf-8")
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


_NON_ASCII_TEXT = re.compile("[^\x00-\x7f\ufffd]")


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """U+FFFD for each lone surrogate: how Python holds a byte of a command-line argument that is not
    UTF-8, which no encoder (the tokenizer, sqlite3) accepts."""
    return _SURROGATE.sub("\ufffd", text)


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


def sniff_encoding(sample: bytes, name: str) -> tuple[str, tuple[str, ...]]:
    """``(encoding, warnings)`` for a file whose first bytes are ``sample`` (more follow): the rules of
    ``decode_text``, applied to the sample (which may end inside a character)."""
    enc = _bom_encoding(sample)
    if enc is not None:
        return enc, ()
    head = sample[:SNIFF_BYTES]
    if b"\x00" in head:
        enc = _bomless_utf16(head)
        if enc is None:
            raise LongdocError(f"{name}: binary file (NUL bytes), not text")
        return enc, ()
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return "utf-8", ()
    except UnicodeDecodeError as e:
        bad_at = e.start
    if b"\x00" in sample:
        raise LongdocError(f"{name}: binary file (NUL bytes), not text")
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(sample, final=False)
    n_bad = text.count("\ufffd") - sample.count(b"\xef\xbf\xbd")
    if n_bad <= max(1, len(sample) // 1000) and _NON_ASCII_TEXT.search(text):
        return "utf-8", ()  # the replaced bytes are counted (and reported) while decoding
    enc = _detect(sample)
    if enc is None:
        raise LongdocError(
            f"{name}: not UTF-8 (invalid byte at offset {bad_at}) and the encoding could not be "
            "detected; re-encode it as UTF-8"
        )
    return enc, ()


def iter_decoded(f: BinaryIO, name: str, warnings: list[str] | None = None, *, head: bytes | None = None,
                 sample: int = SAMPLE_BYTES, block: int = SAMPLE_BYTES) -> Iterator[str]:
    """The text of the binary stream ``f`` in pieces (one per ``block`` bytes read); joined, they equal
    ``decode_text(f.read(), name)[0]`` (see the module doc). The encoding is decided on the first
    ``sample`` bytes (``head``: those bytes, already read from ``f``), and an undecodable file refused,
    before the first piece is returned. ``warnings`` (a list) receives the warnings, complete once the
    pieces are exhausted."""
    first = f.read(sample) if head is None else head
    more = f.read(block) if len(first) == sample else b""
    if not more:  # the whole file is in hand: exactly decode_text
        text, _, warned = decode_text(first, name)
        if warnings is not None:
            warnings.extend(warned)
        return iter([text])
    enc, warned = sniff_encoding(first, name)
    if warnings is not None:
        warnings.extend(warned)
    return _decode_rest(f, enc, [first[i:i + block] for i in range(0, len(first), block)] + [more], block,
                        warnings)


def _decode_rest(f, enc, blocks, size, warnings):
    dec = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder(enc)("replace"), translate=True)
    n_bad = 0
    while blocks:
        data = blocks.pop(0)
        text = dec.decode(data)
        if enc == "utf-8" and "\ufffd" in text:  # as decode_text counts them (U+FFFD written in the file excluded)
            n_bad += text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
        yield text
        if not blocks and (data := f.read(size)):
            blocks.append(data)
    tail = dec.decode(b"", final=True)
    if tail:
        if enc == "utf-8":
            n_bad += tail.count("\ufffd")
        yield tail
    if n_bad > 0 and warnings is not None:
        warnings.append(f"{n_bad} invalid {enc} byte sequence(s) shown as U+FFFD")
