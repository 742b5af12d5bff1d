"""PDF loading with pypdf: the text of every page and the page of every character.

Pages are joined with ``PAGE_SEPARATOR`` ("\\n\\f\\n": a newline, a form feed as pdftotext uses for a
page break, a newline). ``page_starts[p]`` is the offset of page ``p + 1``'s first character; the
separator belongs to the page before it. Inside a page's text, CR/CRLF become LF and any form feed
becomes LF, so a form feed in the Document always means a page break.

Failures become one-line ``LongdocError``s naming the reason: encrypted without (or with a wrong)
password, no text layer (scanned; no OCR is done), a broken file, or the per-file time limit.
"""
from __future__ import annotations

import contextlib
import io
import logging
import signal
import threading
import time

from ..errors import LongdocError

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


def iter_pages(reader, name: str, *, timeout: float | None, warnings: list[str] | None = None):
    """The text of each page in order, extracted one page at a time (each under its own ``timeout``),
    so the caller need not hold them all. At the end: a ``LongdocError`` when no page had text, and the
    pages that failed or were empty appended to ``warnings``."""
    from pypdf.errors import FileNotDecryptedError

    n = len(reader.pages)
    failed: list[int] = []
    empty: list[int] = []
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
