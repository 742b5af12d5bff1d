"""Loaders: turn a path (or ``-`` for stdin) into a ``Document``.

``load`` picks the format from the content first (a ``%PDF-`` header) and the extension second:

- PDF: pypdf, every character mapped to its page (see ``pdf.PAGE_SEPARATOR``);
- Markdown (``.md``, ``.markdown``, ...): kind ``"markdown"``;
- code (``.py``, ``.rs``, ... or a ``#!`` line): kind ``"code"`` with a tree-sitter language name;
- anything else that decodes as text: kind ``"text"``.

Text is exactly what ``open(path, encoding="utf-8").read()`` returns for UTF-8 files (universal
newlines, a UTF-8 BOM kept as U+FEFF), so character offsets agree with it. Other encodings are
detected (``Document.encoding`` says which) or rejected with a clear error, as are binary files.

An empty (or whitespace-only) text file gives an empty Document, not an error: it is a legitimate
file in a repository, and segmenting it yields no passages. A PDF without any extractable text is
an error. Nothing is truncated: the whole file is read. Only regular files (and ``-``) are read, so
a FIFO or ``/dev/zero`` cannot hang the loader; ``timeout`` bounds PDF parsing, the only step whose
time does not grow linearly with the file's size.

``stream`` gives the same text in pieces (``TextStream``) for inputs too large to hold whole: ``ask
--stream`` and ``tokens`` read through it.
"""
from __future__ import annotations

import functools
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import LongdocError
from .document import Document, Segment
from .pdf import PAGE_SEPARATOR, iter_pages, open_pdf, read_pdf
from .text import SAMPLE_BYTES, decode_text, iter_decoded

__all__ = ["Document", "Segment", "load", "stream", "TextStream", "looks_like_pdf", "LOAD_TIMEOUT_S",
           "PAGE_SEPARATOR", "language_for", "MARKDOWN_EXTENSIONS", "CODE_LANGUAGES", "loader_identity"]


@functools.cache
def loader_identity() -> str:
    """This loader, as stored beside what it judged (the index keeps it with each file it could not
    read, to read that file again under another loader): longdoc's version and a hash of these
    sources, because the version moves only at a release while loader fixes land between them."""
    from .. import __version__
    from ..cache import code_hash

    return f"{__version__}+{code_hash('sources')}"

# Wall-clock limit for loading one file (seconds). pypdf extracts roughly 20-100 pages a second
# here, so 120 s covers thousands of pages while still ending a pathological file.
LOAD_TIMEOUT_S = 60.0  # per PDF step (opening, each page); a healthy page takes milliseconds

MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mdx"})

# Extension -> tree-sitter language name (the grammar's own name, as in tree-sitter-<name> packages).
CODE_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".cs": "c_sharp", ".rb": "ruby", ".php": "php", ".kt": "kotlin", ".kts": "kotlin",
    ".scala": "scala", ".swift": "swift", ".lua": "lua", ".hs": "haskell", ".ml": "ocaml",
    ".mli": "ocaml", ".jl": "julia", ".sh": "bash", ".bash": "bash", ".zsh": "bash",
    ".sql": "sql", ".r": "r", ".pl": "perl", ".pm": "perl", ".ex": "elixir", ".exs": "elixir",
    ".erl": "erlang", ".dart": "dart", ".zig": "zig", ".m": "objc", ".mm": "objc",
    ".css": "css", ".scss": "scss", ".html": "html", ".htm": "html", ".vue": "vue",
    ".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".xml": "xml",
    ".proto": "proto", ".tf": "hcl", ".cmake": "cmake", ".mk": "make",
}
_CODE_FILENAMES = {"makefile": "make", "dockerfile": "dockerfile", "cmakelists.txt": "cmake"}
_SHEBANGS = {"python": "python", "node": "javascript", "bash": "bash", "sh": "bash", "zsh": "bash",
             "ruby": "ruby", "perl": "perl", "lua": "lua"}


def language_for(path: str, text: str = "") -> str | None:
    """The tree-sitter language name for a code file (by extension, file name, or ``#!`` line)."""
    base = os.path.basename(path)
    lang = _CODE_FILENAMES.get(base.lower())
    if lang:
        return lang
    ext = os.path.splitext(base)[1].lower()
    if ext in CODE_LANGUAGES:
        return CODE_LANGUAGES[ext]
    if text.startswith("#!"):
        words = text[2:text.find("\n") if "\n" in text else len(text)].split()
        if words:
            prog = os.path.basename(words[0])
            if prog == "env" and len(words) > 1:
                prog = words[1]
            prog = prog.rstrip("0123456789.")  # python3.11 -> python
            return _SHEBANGS.get(prog)
    return None


def _open_bytes(path: str):
    """A binary file object for ``path`` ('-': standard input), after the checks every reader needs."""
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if stream is None:
            raise LongdocError("-: no standard input to read")
        return stream
    if os.path.isdir(path):
        raise LongdocError(f"{path}: is a directory (index it with `longdoc index`)")
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # /dev/zero, a FIFO, a socket: could never end
            raise LongdocError(f"{path}: not a regular file (use - to read standard input)")
        return open(path, "rb")
    except OSError as e:
        raise _os_error(path, e) from None


def _os_error(path: str, e: OSError) -> LongdocError:
    if isinstance(e, FileNotFoundError):
        return LongdocError(f"{path}: no such file")
    if isinstance(e, IsADirectoryError):
        return LongdocError(f"{path}: is a directory (index it with `longdoc index`)")
    if isinstance(e, PermissionError):
        return LongdocError(f"{path}: permission denied")
    return LongdocError(f"{path}: cannot read: {e.strerror or e}")


def _read_bytes(path: str) -> bytes:
    f = _open_bytes(path)
    try:
        return f.read()
    except OSError as e:
        raise _os_error(path, e) from None
    finally:
        _close(f)


# Bytes that text does not hold (C0 controls other than tab, line breaks and form feed; DEL).
_NOT_TEXT = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def looks_like_pdf(data: bytes, path: str | os.PathLike | None = None) -> bool:
    """Whether ``data`` (a file's first bytes) is a PDF's start. Readers tolerate junk before the
    ``%PDF-`` header, anywhere in the first 1024 bytes; but a text file that only mentions the header
    (a PDF library's source, a test holding a PDF's bytes, notes on the format) is text. So a header
    after other bytes counts only in a file named ``.pdf`` or after junk that is not text."""
    at = data.find(b"%PDF-", 0, 1024)
    if at <= 0:
        return at == 0
    if path is not None and os.path.splitext(os.fspath(path))[1].lower() == ".pdf":
        return True
    return _NOT_TEXT.search(data, 0, at) is not None


def load(path: str | os.PathLike, *, password: str | None = None,
         timeout: float | None = LOAD_TIMEOUT_S) -> Document:
    """Load a PDF, text, Markdown or code file (or ``-`` for stdin) as a ``Document``.

    ``password`` opens an encrypted PDF; ``timeout`` bounds opening a PDF and extracting each of its
    pages (seconds per step, ``None`` for no limit), so a stuck file stops while a 5,000-page one
    does not. Raises ``LongdocError`` with a one-line reason on any problem.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    ext = os.path.splitext(path)[1].lower()
    if looks_like_pdf(data, path):
        text, page_starts, warnings = read_pdf(data, path, password=password, timeout=timeout)
        return Document(path, text, "pdf", page_starts=page_starts, warnings=warnings)
    if ext == ".pdf":
        if not data:
            raise LongdocError(f"{path}: empty file, not a PDF")
        raise LongdocError(f"{path}: not a PDF (no %PDF- header); the file may be truncated or mislabelled")
    text, encoding, warnings = decode_text(data, path)
    if ext in MARKDOWN_EXTENSIONS:
        return Document(path, text, "markdown", encoding=encoding, warnings=warnings)
    lang = language_for(path, text)
    if lang is not None:
        return Document(path, text, "code", language=lang, encoding=encoding, warnings=warnings)
    return Document(path, text, "text", encoding=encoding, warnings=warnings)


@dataclass
class TextStream:
    """The text of a source in pieces (``chunks``), for sources too large to hold as one ``str``.

    Joined, the pieces equal ``load(path).text``: a PDF's pages joined by ``PAGE_SEPARATOR``, extracted
    one at a time (the file's bytes are held, pypdf needs them; its text is not); a text file decoded
    block by block (``text.iter_decoded``: the encoding is decided on the first MiB). ``warnings`` is
    complete once ``chunks`` is exhausted.
    """

    path: str
    kind: str  # "pdf" | "text" (Markdown and code are read as text)
    chunks: Iterator[str]
    warnings: list[str] = field(default_factory=list)


def stream(path: str | os.PathLike, *, password: str | None = None,
           timeout: float | None = LOAD_TIMEOUT_S) -> TextStream:
    """``load`` without holding the text: the source is opened and its format (and a text file's
    encoding) decided now, so a bad input fails before any work; the text is read as ``chunks`` are
    consumed. Raises ``LongdocError`` with a one-line reason, now or while iterating."""
    path = os.fspath(path)
    f = _open_bytes(path)
    try:
        head = f.read(SAMPLE_BYTES)
        if looks_like_pdf(head, path):
            data = head + f.read()
            _close(f)
            warnings: list[str] = []
            reader = open_pdf(data, path, password=password, timeout=timeout)
            pages = iter_pages(reader, path, timeout=timeout, warnings=warnings)
            return TextStream(path, "pdf", _joined(pages, PAGE_SEPARATOR), warnings)
        if os.path.splitext(path)[1].lower() == ".pdf":
            if not head:
                raise LongdocError(f"{path}: empty file, not a PDF")
            raise LongdocError(f"{path}: not a PDF (no %PDF- header); the file may be truncated or mislabelled")
        warnings = []
        chunks = iter_decoded(f, path, warnings, head=head)
        return TextStream(path, "text", _closing(chunks, f, path), warnings)
    except OSError as e:
        _close(f)
        raise _os_error(path, e) from None
    except BaseException:
        _close(f)
        raise


def _close(f) -> None:
    if f is not getattr(sys.stdin, "buffer", None):
        f.close()


def _closing(chunks, f, path):
    try:
        yield from chunks
    except OSError as e:
        raise _os_error(path, e) from None
    finally:
        _close(f)


def _joined(parts, sep: str):
    for i, part in enumerate(parts):
        if i:
            yield sep
        yield part
