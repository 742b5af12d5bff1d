"""PDF loading with pypdf: the text of every page and the page of every character.

Pages are joined with ``PAGE_SEPARATOR`` ("\\n\\f\\n": a newline, a form feed as pdftotext uses for a
page break, a newline). ``page_starts[p]`` is the offset of page ``p + 1``'s first character; the
separator belongs to the page before it. Inside a page's text, CR/CRLF become LF and any form feed
becomes LF, so a form feed in the Document always means a page break.

Failures become one-line ``LongdocError``s naming the reason: encrypted without (or with a wrong)
password, no text layer (scanned; no OCR is done), a broken file, or the per-file time limit. Pages
whose extracted text looks garbled (``garbled``) are named in a warning: pypdf returns mojibake, not an
error, for a CJK font it cannot map to Unicode, and one letter per line for vertically set text. So
are pages whose right-to-left words came out in visual order (``rtl``; checked only on pages that hold
Hebrew, Arabic or another right-to-left script, against a second, layout-mode extraction).
"""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
import signal
import threading
import time
import unicodedata

from ..errors import LongdocError
from . import rtl

PAGE_SEPARATOR = "\n\f\n"


class _Timeout(BaseException):
    """BaseException, like KeyboardInterrupt, so pypdf's own ``except Exception`` cannot swallow it."""


@contextlib.contextmanager
def _deadline(seconds: float | None):
    """Raise ``_Timeout`` inside the block after ``seconds`` of wall time.

    pypdf is pure Python, so SIGALRM interrupts it anywhere. Signals only work in the main thread;
    elsewhere ``_pdf_errors`` checks the time after each step. Each step (opening, one page) has its own
    limit, so a long but healthy PDF (thousands of pages) is never cut off while one stuck page is.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _Timeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    old_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if old_timer[0]:  # someone else's timer was running: give it back what is left
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, old_timer[0]), old_timer[1])


@contextlib.contextmanager
def _quiet_pypdf():
    """Silence pypdf's log lines (one per repaired defect or unsupported CMap, even at ERROR level):
    a failure reaches the user as our one-line error, and empty pages as ``Document.warnings``."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


# Predefined CJK CMaps (ISO 32000 9.7.5.2) whose character codes are a legacy byte encoding that Python
# decodes, missing from pypdf 7.1's table: without them pypdf reads the bytes as UTF-16 and returns
# plausible-looking mojibake (GBK "我们都是黑体字" came out as Hangul "컒쏇뚼쫇뫚쳥ퟖ"). Entries pypdf has
# are never replaced.
_CJK_CMAPS = {
    "/GBKp-EUC-H": "gbk", "/GBKp-EUC-V": "gbk",  # GBK with proportional Latin
    "/B5pc-H": "big5", "/B5pc-V": "big5",
    "/HKscs-B5-H": "big5hkscs", "/HKscs-B5-V": "big5hkscs",
    "/EUC-H": "euc_jp", "/EUC-V": "euc_jp",
    "/90msp-RKSJ-H": "cp932", "/90msp-RKSJ-V": "cp932",  # Shift-JIS with proportional Latin
    "/KSC-EUC-H": "euc_kr", "/KSC-EUC-V": "euc_kr",
    "/KSCms-UHC-H": "cp949", "/KSCms-UHC-V": "cp949", "/KSCms-UHC-HW-H": "cp949", "/KSCms-UHC-HW-V": "cp949",
    "/UniKS-UTF16-H": "utf-16-be", "/UniKS-UTF16-V": "utf-16-be",
}


@functools.cache  # once per process: the table is pypdf's, shared by every reader
def _register_cjk_cmaps() -> None:
    try:
        from pypdf import _cmap

        table = _cmap._predefined_cmap  # private: another pypdf may lack it
    except (ImportError, AttributeError):
        return  # these fonts then give mojibake, as before
    for name, codec in _CJK_CMAPS.items():
        table.setdefault(name, codec)


# A page's text "looks garbled" when at least _BAD_MIN and _BAD_SHARE of its non-space characters
# cannot be text (see _n_bad), or when at least _SPACED_SHARE of its (at least _SPACED_MIN) words are one
# letter: vertical text set a character at a time comes out one letter per line, letter-spaced text one
# letter per word. On the CUAD and FinanceBench PDFs the largest shares are 0.004 and 0.17.
_BAD_MIN = 3
_BAD_SHARE = 0.1
_SPACED_MIN = 10
_SPACED_SHARE = 0.5
_NOT_TEXT = frozenset({"Cn", "Co", "Cs", "Cc"})  # unassigned, private use, surrogate, control
_MARKS = frozenset({"Mn", "Mc", "Me"})
# Text made only of these (ASCII, Latin-1 and Latin Extended-A, common punctuation and symbols: no
# control, unassigned or private character, no mark) has nothing to count; most pages are such.
_SUSPECT = re.compile(r"[^\s\x20-\x7e\u00a0-\u017f\u2010-\u2027\u2030-\u205e\u20a0-\u20bf\u2100-\u214f"
                      r"\u2190-\u22ff\u25a0-\u26ff]")
# A letter's script is the first word of its Unicode name ("CYRILLIC SMALL LETTER A"); Chinese, Japanese
# and Korean mix these in one word, and the letters below belong to no script.
_CJK = frozenset({"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HANGUL", "BOPOMOFO", "IDEOGRAPHIC",
                  "FULLWIDTH", "HALFWIDTH"})
_NO_SCRIPT = frozenset({"MODIFIER", "SUPERSCRIPT", "SUBSCRIPT", "FEMININE", "MASCULINE", "MICRO",
                        "MATHEMATICAL", "DOUBLE-STRUCK", "SCRIPT", "BLACK-LETTER", "PLANCK", "KELVIN",
                        "ANGSTROM", "OHM", "COMBINING", "VARIATION"})


@functools.lru_cache(maxsize=8192)
def _script(c: str) -> str | None:
    if c < "\x80":
        return "LATIN"
    word = unicodedata.name(c, "").split(" ", 1)[0]
    return "CJK" if word in _CJK else None if word in _NO_SCRIPT or not word else word


def _n_bad(text: str) -> int:
    """Characters no real text has: U+FFFD, unassigned code points, private use (icons aside, what a
    font without a Unicode map yields), lone surrogates, control characters; combining marks without
    a base or on a letter of another script; and letters whose script differs from the letter before
    them in the same word. CIDs read as code points (a CJK font without a Unicode map) give such a
    soup: Greek, Cyrillic, Hebrew, Thaana, Devanagari and Lao letters and marks in one word."""
    if not _SUSPECT.search(text):
        return 0
    bad = 0
    base = None  # the last character that is not a mark (None: start of text or after a space)
    script = None  # the script of the word's last letter
    for c in text:
        if c.isspace():
            base = script = None
            continue
        cat = unicodedata.category(c)
        if cat in _MARKS:
            if base is None:
                bad += 1
            elif unicodedata.category(base)[0] == "L":
                own = _script(c)  # "ARABIC FATHA"; None for "COMBINING ACUTE ACCENT"
                bad += own is not None and own != _script(base)
            continue
        if cat in _NOT_TEXT or c == "\ufffd":
            bad += 1
        elif cat[0] == "L":
            own = _script(c)
            if own == "LATIN":  # Latin words and symbols sit inside CJK text ("iPhone手机"), and Greek
                script = None  # beside them in formulas ("αᵢxᵢ"): no sign of garbling
            elif own is not None:
                bad += script is not None and own != script
                script = own
        if cat != "Cf":  # a joiner between a letter and its mark is not the mark's base
            base = c
    return bad


def garbled(text: str) -> bool:
    """Whether a page's extracted text looks garbled (the thresholds above)."""
    n = len("".join(text.split()))
    if not n:
        return False
    bad = _n_bad(text)
    if bad >= _BAD_MIN and bad >= _BAD_SHARE * n:
        return True
    words = [w for w in text.split() if any(c.isalpha() for c in w)]
    single = sum(1 for w in words if len(w) == 1)
    return len(words) >= _SPACED_MIN and single >= _SPACED_SHARE * len(words)


def _clean_page(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n")
    return text


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 160 else msg[:157] + "..."


@contextlib.contextmanager
def _pdf_errors(name: str, timeout: float | None):
    """One step of reading a PDF (opening it, or one page) under the time limit, pypdf's failures
    turned into one-line ``LongdocError``s."""
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    started = time.monotonic()
    try:
        with _quiet_pypdf(), _deadline(timeout):
            yield
            if timeout and time.monotonic() - started > timeout:  # off the main thread: no alarm
                raise _Timeout()
    except _Timeout:
        raise LongdocError(
            f"{name}: PDF text extraction took longer than the {timeout:g} s limit (per page)"
        ) from None
    except FileNotDecryptedError:
        raise LongdocError(f"{name}: encrypted PDF; give its password with --password") from None
    except RecursionError:
        raise LongdocError(f"{name}: cannot read PDF: structure nested too deeply") from None
    except PdfReadError as e:
        raise LongdocError(f"{name}: cannot read PDF: {_one_line(e)}") from None


def open_pdf(data, name: str, *, password: str | None, timeout: float | None):
    """A pypdf reader over ``data`` (bytes or a binary file), decrypted, with at least one page."""
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    _register_cjk_cmaps()
    with _pdf_errors(name, timeout):
        try:
            reader = PdfReader(io.BytesIO(data) if isinstance(data, bytes) else data, strict=False)
        except FileNotDecryptedError:
            raise
        except Exception as e:  # pypdf raises many types on broken files
            raise LongdocError(f"{name}: cannot read PDF: {_one_line(e)}") from None
        if reader.is_encrypted:
            _decrypt(reader, name, password)
        try:
            n = len(reader.pages)
        except FileNotDecryptedError:
            raise
        except Exception as e:
            raise LongdocError(f"{name}: cannot read PDF pages: {_one_line(e)}") from None
    if n == 0:
        raise LongdocError(f"{name}: PDF has no pages")
    return reader


def _layout_text(page, timeout: float | None) -> str | None:
    """pypdf's layout-mode text of ``page`` (each line's text groups placed by x), the reference of
    ``rtl.visually_ordered``; None when it fails or overruns ``timeout``: the page keeps its text, the
    check is skipped."""
    started = time.monotonic()
    try:
        with _quiet_pypdf(), _deadline(timeout):
            layout = page.extract_text(extraction_mode="layout")
    except _Timeout:
        return None
    except Exception:  # noqa: BLE001  (a second reading of a page that already gave its text)
        return None
    if timeout and time.monotonic() - started > timeout:  # off the main thread: no alarm
        return None
    return layout


def iter_pages(reader, name: str, *, timeout: float | None, warnings: list[str] | None = None):
    """The text of each page in order, extracted one page at a time (each under its own ``timeout``),
    so the caller need not hold them all. At the end: a ``LongdocError`` when no page had text, and the
    pages that failed, were empty, look garbled or hold right-to-left text in visual order appended to
    ``warnings`` (one line each)."""
    from pypdf.errors import FileNotDecryptedError

    n = len(reader.pages)
    failed: list[int] = []
    empty: list[int] = []
    bad: list[int] = []
    visual: list[int] = []
    for i in range(n):
        with _pdf_errors(name, timeout):
            try:
                text = _clean_page(reader.pages[i].extract_text() or "")
            except (_Timeout, FileNotDecryptedError):
                raise
            except Exception:  # one broken page must not lose the others; reported below
                text = ""
                failed.append(i + 1)
        if not text.strip() and i + 1 not in failed:
            empty.append(i + 1)
        elif garbled(text):
            bad.append(i + 1)
        elif rtl.has_rtl(text):
            layout = _layout_text(reader.pages[i], timeout)
            if layout is not None and rtl.visually_ordered(text, layout):
                visual.append(i + 1)
        yield text
    if len(failed) + len(empty) == n:
        if failed:
            raise LongdocError(f"{name}: cannot extract text from any of its {n} page(s)")
        raise LongdocError(f"{name}: no text layer (scanned?); OCR is not done")
    if warnings is not None:
        if failed:
            warnings.append(f"the text of {_pages(failed)} could not be extracted")
        if empty:
            have = "has" if len(empty) == 1 else "have"
            warnings.append(f"{_pages(empty)} {have} no text layer (scanned?); OCR is not done")
        if bad:
            it = "it" if len(bad) == 1 else "them"
            warnings.append(f"the text of {_pages(bad)} looks garbled (characters that are not text, or one "
                            f"letter per line or word: a font without a Unicode map, vertical or letter-spaced "
                            f"text); answers from {it} may be unreliable")
        if visual:
            it = "it" if len(visual) == 1 else "them"
            warnings.append(f"the right-to-left text of {_pages(visual)} looks visually ordered (its words left "
                            f"to right, the reverse of reading order); answers from {it} may be unreliable")


def read_pdf(data: bytes, name: str, *, password: str | None, timeout: float | None):
    """Returns ``(text, page_starts, warnings)`` or raises ``LongdocError``."""
    warnings: list[str] = []
    texts = list(iter_pages(open_pdf(data, name, password=password, timeout=timeout), name, timeout=timeout,
                            warnings=warnings))
    page_starts = []
    pos = 0
    for t in texts:
        page_starts.append(pos)
        pos += len(t) + len(PAGE_SEPARATOR)
    return PAGE_SEPARATOR.join(texts), tuple(page_starts), tuple(warnings)


def _decrypt(reader, name: str, password: str | None) -> None:
    try:
        # An empty user password (common: "owner password only") opens without asking the user.
        if password is None:
            ok = reader.decrypt("")
            if not ok:
                raise LongdocError(f"{name}: encrypted PDF; give its password with --password")
            return
        ok = reader.decrypt(password)
    except LongdocError:
        raise
    except NotImplementedError as e:
        raise LongdocError(f"{name}: encrypted PDF with an unsupported scheme: {_one_line(e)}") from None
    except Exception as e:
        raise LongdocError(f"{name}: cannot decrypt PDF: {_one_line(e)}") from None
    if not ok:
        raise LongdocError(f"{name}: wrong password for encrypted PDF (--password)")


def _pages(pages: list[int]) -> str:
    return ("page " if len(pages) == 1 else "pages ") + _ranges(pages)


def _ranges(pages: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'"""
    out = []
    start = prev = pages[0]
    for p in pages[1:] + [None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        out.append(f"{start}-{prev}" if prev != start else f"{start}")
        if p is not None:
            start = prev = p
    return ", ".join(out)
