"""Which files of a tree get indexed: ignore files, built-in skips, binaries, size limits.

The rules follow ripgrep's, which most users already know:

* ``.gitignore`` files at every level (nested ones apply below their folder), ``.git/info/exclude``
  of the enclosing repository, and the ``.gitignore`` files of the folders between the repository's
  top and the indexed root. ``.ignore`` and ``.longdocignore`` use the same syntax and win over
  ``.gitignore`` at the same level; a deeper file wins over a shallower one; within one file the last
  matching pattern wins (so ``!keep.log`` re-includes). Matching is pathspec's ``GitIgnoreSpec``.
* Hidden files and folders (a name starting with ``.``) are skipped unless ``hidden``; version-control
  folders always are.
* Vendored, virtual-environment and build folders, lockfiles and minified bundles are skipped
  (``no_ignore`` lifts these together with the ignore files).
* A file whose first 8 KiB hold a NUL byte is binary and skipped, except PDFs (recognised by the
  loader's own rule, ``sources.looks_like_pdf``) and UTF-16 text with a byte-order mark. Files above
  ``max_size`` bytes (``max_pdf_size`` for what that rule calls a PDF) are skipped.
* ``exclude`` patterns (gitignore syntax, relative to the root) win over everything; when ``include``
  patterns are given only files matching one of them are kept.
* Symbolic links are not followed unless ``follow``; then each real folder is entered once, so a
  link cycle ends the walk instead of hanging it.

Skipped files are reported with the reason, so ``longdoc index status`` can say why a file is missing.
"""
from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from ..errors import LongdocError
from ..sources import looks_like_pdf

# Folders never worth encoding: dependencies, environments, caches and build outputs.
SKIP_DIRS = frozenset({
    "node_modules", "bower_components", "jspm_packages", "vendor", "third_party",
    ".venv", "venv", "env", ".env", "site-packages", "__pypackages__",
    "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox", ".hypothesis",
    ".eggs", "dist", "build", "target", "out", "_build", ".next", ".nuxt", ".gradle", ".terraform",
    ".idea", ".vscode", ".longdoc", "coverage", "htmlcov",
})
# Version-control metadata: skipped even with --hidden / --no-ignore.
VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", ".jj"})
# Generated files whose text is noise for retrieval.
SKIP_FILES = pathspec.GitIgnoreSpec.from_lines([
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb",
    "Cargo.lock", "poetry.lock", "Pipfile.lock", "uv.lock", "pdm.lock", "composer.lock",
    "Gemfile.lock", "go.sum", "flake.lock", "*.min.js", "*.min.css", "*.map", "*.pyc",
])
IGNORE_FILES = (".gitignore", ".ignore", ".longdocignore")  # lowest to highest precedence
DEFAULT_MAX_SIZE = 1 << 20  # bytes; above this a source file is almost always generated
DEFAULT_MAX_PDF_SIZE = 64 << 20  # PDFs carry images and fonts, so their text is a small share
SNIFF_BYTES = 8192
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class WalkOptions:
    """How to choose files; every field maps to a ``longdoc index`` flag."""

    no_ignore: bool = False
    hidden: bool = False
    follow: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_size: int = DEFAULT_MAX_SIZE
    max_pdf_size: int = DEFAULT_MAX_PDF_SIZE


@dataclass(frozen=True)
class Entry:
    """A file to index: ``rel`` is the POSIX path under the root (what results print)."""

    rel: str
    path: Path
    size: int
    mtime_ns: int


@dataclass
class WalkResult:
    files: list[Entry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason)


def _read_patterns(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def _spec(lines: list[str]) -> pathspec.GitIgnoreSpec | None:
    if not any(ln.strip() and not ln.startswith("#") for ln in lines):
        return None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _folder_lines(folder: Path) -> list[str]:
    """The folder's ignore patterns in precedence order: with git's last-match-wins rule, a
    ``.longdocignore`` pattern beats an ``.ignore`` one, which beats a ``.gitignore`` one."""
    lines: list[str] = []
    for name in IGNORE_FILES:
        lines += _read_patterns(folder / name)
    return lines


@dataclass(frozen=True)
class _Rules:
    """One folder's ignore patterns; ``prefix`` turns a root-relative path into a folder-relative one.

    For a folder inside the root the prefix is removed (``strip``); for a folder above the root (the
    enclosing git repository) the root's path below that folder is prepended (``prefix``).
    """

    spec: pathspec.GitIgnoreSpec
    strip: str = ""
    prefix: str = ""

    def verdict(self, rel: str, is_dir: bool) -> bool | None:
        """True: ignored, False: re-included by a ``!`` pattern, None: no pattern applies."""
        sub = self.prefix + rel[len(self.strip):] + ("/" if is_dir else "")
        return self.spec.check_file(sub).include


def _outer_rules(root: Path) -> list[_Rules]:
    """Rules reaching the root from the enclosing git repository, shallowest first: its
    ``.git/info/exclude`` and the ignore files of the folders from its top down to the root's parent
    (the root's own ignore files are read by the walk)."""
    top = next((d for d in (root, *root.parents) if (d / ".git").exists()), None)
    if top is None:
        return []
    parts = root.relative_to(top).parts
    out = []
    for depth in range(len(parts) + 1):
        d = top.joinpath(*parts[:depth])
        lines = _read_patterns(top / ".git" / "info" / "exclude") if depth == 0 else []
        if depth < len(parts):
            lines += _folder_lines(d)
        spec = _spec(lines)
        if spec is not None:
            below = "/".join(parts[depth:])
            out.append(_Rules(spec, prefix=below + "/" if below else ""))
    return out


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def sniff(path: Path) -> tuple[bool, str | None]:
    """(whether the file is a PDF, None when it is indexable else the reason it is skipped), from its
    first SNIFF_BYTES only."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError as e:
        return False, f"unreadable ({e.strerror or e})"
    if looks_like_pdf(head, path):  # the loader's own rule, so that what it reads as a PDF is indexed
        return True, None
    if b"\x00" in head and not head.startswith(_UTF16_BOMS):
        return False, "binary"
    return False, None


def walk(root: str | os.PathLike, opts: WalkOptions = WalkOptions()) -> WalkResult:
    """Every indexable file under ``root``, sorted by relative path."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise LongdocError(f"{root}: not a directory")
    res = WalkResult()
    include = pathspec.GitIgnoreSpec.from_lines(opts.include) if opts.include else None
    exclude = pathspec.GitIgnoreSpec.from_lines(opts.exclude) if opts.exclude else None
    outer = [] if opts.no_ignore else _outer_rules(root)
    seen_dirs: set[tuple[int, int]] = set()

    def ignored(rel: str, is_dir: bool, chain: list) -> bool:
        if exclude is not None and exclude.match_file(rel + ("/" if is_dir else "")):
            return True
        for rules in reversed(chain):  # deepest folder first
            v = rules.verdict(rel, is_dir)
            if v is not None:
                return v
        return False

    def visit(folder: Path, rel_dir: str, chain: list) -> None:
        try:
            st = folder.stat()
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a symlink cycle or a second link to a folder already walked
            res.skipped.append((rel_dir or ".", "folder already visited (symlink)"))
            return
        seen_dirs.add(key)
        if not opts.no_ignore:
            spec = _spec(_folder_lines(folder))
            if spec is not None:
                chain = chain + [_Rules(spec, strip=rel_dir + "/" if rel_dir else "")]
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as e:
            res.skipped.append((rel_dir or ".", f"unreadable folder ({e.strerror or e})"))
            return
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            try:
                is_link = e.is_symlink()
                is_dir = e.is_dir(follow_symlinks=opts.follow)
                is_file = e.is_file(follow_symlinks=opts.follow)
            except OSError:
                continue
            if is_link and not opts.follow:
                continue
            if is_dir:
                if e.name in VCS_DIRS:
                    continue
                if not opts.hidden and _is_hidden(e.name):
                    continue
                if not opts.no_ignore and e.name in SKIP_DIRS:
                    continue
                if ignored(rel, True, chain):
                    continue
                visit(Path(e.path), rel, chain)
                continue
            if not is_file:
                continue
            if not opts.hidden and _is_hidden(e.name):
                continue
            if ignored(rel, False, chain):
                continue
            if not opts.no_ignore and SKIP_FILES.match_file(rel):
                res.skipped.append((rel, "generated file (lockfile or bundle)"))
                continue
            if include is not None and not include.match_file(rel):
                continue
            entry = _entry(Path(e.path), rel, opts, res)
            if entry is not None:
                res.files.append(entry)

    visit(root, "", list(outer))
    res.files.sort(key=lambda f: f.rel)
    return res


def _entry(path: Path, rel: str, opts: WalkOptions, res: WalkResult) -> Entry | None:
    try:
        st = path.stat()
    except OSError as e:
        res.skipped.append((rel, f"unreadable ({e.strerror or e})"))
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    is_pdf, why = sniff(path)  # the content, not the name, says which limit applies (as the loader reads it)
    if why is not None:  # first: a file that could not be read has no content to size up
        res.skipped.append((rel, why))
        return None
    limit = opts.max_pdf_size if is_pdf else opts.max_size
    if st.st_size > limit:
        res.skipped.append((rel, f"larger than {limit:,} bytes"))
        return None
    return Entry(rel, path, st.st_size, st.st_mtime_ns)


def read_file_list(source: str | list[str], root: str | os.PathLike, opts: WalkOptions = WalkOptions()) -> WalkResult:
    """The files named in ``source`` (a path, ``-`` for stdin, or the names themselves), as
    ``--files-from`` takes them.

    One path per line, or NUL-separated (``git ls-files -z``). Relative paths are taken from the
    current folder when they exist there, else from the root. Ignore files do not apply (the list is
    the user's choice); binaries, the size limit and ``--include/--exclude`` still do. Paths outside
    the root are an error: an index never points outside its root.
    """
    root = Path(root).resolve()
    if isinstance(source, list):
        names = source
    else:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            try:
                data = Path(source).read_bytes()
            except OSError as e:
                raise LongdocError(f"--files-from {source}: {e.strerror or e}") from None
        sep = b"\x00" if b"\x00" in data else b"\n"
        names = [n.decode("utf-8", "surrogateescape").rstrip("\r") for n in data.split(sep)]
    include = pathspec.GitIgnoreSpec.from_lines(opts.include) if opts.include else None
    exclude = pathspec.GitIgnoreSpec.from_lines(opts.exclude) if opts.exclude else None
    res = WalkResult()
    seen = set()
    for name in names:
        if not name.strip():
            continue
        p = Path(name)
        if not p.is_absolute():
            p = p if p.exists() else root / p
        try:
            real = p.resolve()
            rel = real.relative_to(root).as_posix()
        except (OSError, ValueError):
            raise LongdocError(f"--files-from: {name} is outside {root}") from None
        if rel in seen:
            continue
        seen.add(rel)
        if not real.exists():
            res.skipped.append((rel, "does not exist"))
            continue
        if real.is_dir():
            res.skipped.append((rel, "is a folder"))
            continue
        if exclude is not None and exclude.match_file(rel):
            continue
        if include is not None and not include.match_file(rel):
            continue
        entry = _entry(real, rel, opts, res)
        if entry is not None:
            res.files.append(entry)
    res.files.sort(key=lambda f: f.rel)
    return res
