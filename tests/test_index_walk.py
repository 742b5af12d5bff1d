"""File selection for `longdoc index`: ignore files, built-in skips, binaries, sizes, symlinks, lists."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from longdoc.errors import LongdocError
from longdoc.index.walk import WalkOptions, read_file_list, walk


def make(root, files: dict[str, str | bytes]) -> None:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)


def rels(res) -> list[str]:
    return [f.rel for f in res.files]


def test_gitignore_nested_negation_and_anchoring(tmp_path):
    make(tmp_path, {
        ".gitignore": "*.log\n!keep.log\n/top.txt\nsecret/\n",
        "a.py": "x", "x.log": "x", "src/keep.log": "x", "top.txt": "x", "src/top.txt": "x",
        "secret/s.py": "x", "src/secret/t.py": "x",
        "src/.gitignore": "gen_*.py\n", "src/gen_a.py": "x", "gen_b.py": "x",
        "src/deep/.gitignore": "!gen_c.py\n", "src/deep/gen_c.py": "x",
    })
    assert rels(walk(tmp_path)) == ["a.py", "gen_b.py", "src/deep/gen_c.py", "src/keep.log", "src/top.txt"]


def test_git_info_exclude_and_parent_gitignore_apply_to_a_subfolder(tmp_path):
    repo = tmp_path / "repo"
    make(repo, {".git/info/exclude": "*.tmp\n", ".gitignore": "sub/skip_me.py\nbuild_*\n",
                "sub/a.py": "x", "sub/b.tmp": "x", "sub/skip_me.py": "x", "sub/build_x.py": "x"})
    assert rels(walk(repo / "sub")) == ["a.py"]
    assert rels(walk(repo)) == ["sub/a.py"]
    # Outside a git repository the parent's .gitignore does not apply (as in git and ripgrep).
    make(tmp_path, {"nogit/.gitignore": "*.py\n", "nogit/inner/a.py": "x"})
    assert rels(walk(tmp_path / "nogit" / "inner")) == ["a.py"]


def test_ignore_and_longdocignore_override_gitignore(tmp_path):
    make(tmp_path, {".gitignore": "*.md\n", ".ignore": "!notes.md\n", ".longdocignore": "a.py\n",
                    "notes.md": "x", "other.md": "x", "a.py": "x", "b.py": "x"})
    assert rels(walk(tmp_path)) == ["b.py", "notes.md"]


def test_hidden_vendored_build_lockfiles_skipped_unless_asked(tmp_path):
    make(tmp_path, {"a.py": "x", ".hidden/h.py": "x", ".env.py": "x", "node_modules/m/i.js": "x",
                    ".venv/lib/x.py": "x", "build/o.py": "x", "pkg/__pycache__/c.py": "x", "dist/d.py": "x",
                    "yarn.lock": "x", "Cargo.lock": "x", "app.min.js": "x", ".git/config": "x"})
    res = walk(tmp_path)
    assert rels(res) == ["a.py"]
    assert ("yarn.lock", "generated file (lockfile or bundle)") in res.skipped
    assert rels(walk(tmp_path, WalkOptions(hidden=True))) == [".env.py", ".hidden/h.py", "a.py"]
    all_ = rels(walk(tmp_path, WalkOptions(no_ignore=True, hidden=True)))
    assert "node_modules/m/i.js" in all_ and "build/o.py" in all_ and "yarn.lock" in all_
    assert not any(r.startswith(".git/") for r in all_)  # version control metadata: never


def test_binary_size_and_pdf(tmp_path):
    make(tmp_path, {"t.txt": "text", "bin.dat": b"\x00\x01\x02abc", "doc.pdf": b"%PDF-1.4\n\x00\x00 stream",
                    "u16.txt": "\ufeffhello".encode("utf-16"), "big.txt": "y" * 5000})
    res = walk(tmp_path, WalkOptions(max_size=4000))
    assert rels(res) == ["doc.pdf", "t.txt", "u16.txt"]
    reasons = dict(res.skipped)
    assert reasons["bin.dat"] == "binary" and "larger than 4,000 bytes" in reasons["big.txt"]


def test_pdf_header_after_junk_is_judged_as_the_loader_judges_it(tmp_path):
    """The walker took `%PDF-` only at byte 0, so a PDF after leading junk (a saved HTTP response, a
    MacBinary header) that holds a NUL was skipped as "binary", while `longdoc ask` reads it. It asks
    the loader now (`sources.looks_like_pdf`): a .pdf file, or junk that is not text, before the header."""
    sys.path.insert(0, os.path.dirname(__file__))
    from test_sources_pdf import make_pdf

    from longdoc.sources import load

    pdf = make_pdf([["Hello world"]]) + b"\n%\x00\x01 binary trailer\n"
    make(tmp_path, {"saved.pdf": b"HTTP/1.1 200 OK\r\n\r\n" + pdf, "mac.bin": b"\x00\x05doc\x00\x00" + pdf,
                    # a text file that mentions the header, then holds a NUL: text to the loader, so binary
                    "notes.txt": b"a PDF starts with %PDF-1.7\n\x00"})
    res = walk(tmp_path)
    assert rels(res) == ["mac.bin", "saved.pdf"] and dict(res.skipped) == {"notes.txt": "binary"}
    assert all(load(str(tmp_path / r)).kind == "pdf" for r in rels(res))


def test_the_pdf_size_limit_follows_the_content_not_the_name(tmp_path, monkeypatch):
    """The limit was chosen by name before the content was sniffed: a PDF not named .pdf (after junk, as
    the loader reads it) got the text limit, and a text file named .pdf the PDF one. The content decides
    now, from the sniff's bytes only: no skipped file is read further."""
    import builtins

    from longdoc.index import walk as walk_mod

    sys.path.insert(0, os.path.dirname(__file__))
    from test_sources_pdf import make_pdf

    def pdf(size):
        body = b"\x00\x05doc\x00\x00" + make_pdf([["Hello world"]]) + b"\n%"
        return body + b"x" * (size - len(body))

    make(tmp_path, {"mac.bin": pdf(20_000), "huge.bin": pdf(200_000), "big.txt": "y" * 20_000,
                    "fake.pdf": "not a PDF at all\n" * 1200, "small.txt": "text"})
    read = {}

    class Counted:
        def __init__(self, f, name):
            self.f, self.name = f, name

        def read(self, n=-1):
            data = self.f.read(n)
            read[self.name] = read.get(self.name, 0) + len(data)
            return data

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(walk_mod, "open", lambda p, *a, **kw: Counted(builtins.open(p, *a, **kw), os.path.basename(p)),
                        raising=False)
    opts = WalkOptions(max_size=1000, max_pdf_size=100_000)
    res = walk(tmp_path, opts)
    assert rels(res) == ["mac.bin", "small.txt"]
    assert dict(res.skipped) == {"big.txt": "larger than 1,000 bytes", "fake.pdf": "larger than 1,000 bytes",
                                 "huge.bin": "larger than 100,000 bytes"}
    assert all(n <= walk_mod.SNIFF_BYTES for n in read.values()), read
    assert rels(read_file_list(["mac.bin", "big.txt"], tmp_path, opts)) == ["mac.bin"]


def test_include_exclude(tmp_path):
    make(tmp_path, {"a.py": "x", "b.md": "x", "src/c.py": "x", "src/test_c.py": "x", "docs/d.md": "x"})
    assert rels(walk(tmp_path, WalkOptions(include=("*.py",)))) == ["a.py", "src/c.py", "src/test_c.py"]
    assert rels(walk(tmp_path, WalkOptions(include=("*.py",), exclude=("test_*",)))) == ["a.py", "src/c.py"]
    assert rels(walk(tmp_path, WalkOptions(exclude=("docs/", "/a.py")))) == ["b.md", "src/c.py", "src/test_c.py"]


def test_symlinks_not_followed_by_default_and_loops_terminate(tmp_path):
    make(tmp_path, {"a/x.py": "x", "b/y.py": "y"})
    os.symlink("..", tmp_path / "a" / "up")  # a cycle
    os.symlink(tmp_path / "b", tmp_path / "a" / "to_b")  # a second path to b
    os.symlink(tmp_path / "b" / "y.py", tmp_path / "link.py")
    assert rels(walk(tmp_path)) == ["a/x.py", "b/y.py"]
    # With --follow every real folder is walked once; run in a child with a time limit so a
    # regression shows as a failure, not a hung suite.
    code = ("import sys; from longdoc.index.walk import walk, WalkOptions; "
            "print(','.join(f.rel for f in walk(sys.argv[1], WalkOptions(follow=True)).files))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    got = out.stdout.strip().split(",")
    assert "a/x.py" in got and "link.py" in got
    assert sum(r.endswith("/y.py") for r in got) == 1  # b/y.py or a/to_b/y.py, not both


def test_files_from_lines_nul_stdin_and_outside_root(tmp_path, monkeypatch):
    make(tmp_path, {"r/a.py": "x", "r/.gitignore": "b.py\n", "r/b.py": "x", "r/c.bin": b"\x00", "other.py": "x"})
    root = tmp_path / "r"
    lst = tmp_path / "list.txt"
    lst.write_text("a.py\nb.py\nc.bin\nmissing.py\n\n")
    res = read_file_list(str(lst), root)
    assert rels(res) == ["a.py", "b.py"]  # ignore files do not apply to an explicit list
    assert dict(res.skipped) == {"c.bin": "binary", "missing.py": "does not exist"}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"b.py\x00a.py\x00")))
    assert rels(read_file_list("-", root)) == ["a.py", "b.py"]
    lst.write_text(str(tmp_path / "other.py") + "\n")
    with pytest.raises(LongdocError, match="outside"):
        read_file_list(str(lst), root)


def test_not_a_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(LongdocError, match="not a directory"):
        walk(tmp_path / "f")


def test_a_file_that_cannot_be_read_is_named_unreadable_whatever_its_size(tmp_path, monkeypatch):
    """The size limit follows the sniffed content; a file that could not be opened has none, and was
    reported as 'larger than 1,048,576 bytes' (the text limit) instead of why it was skipped."""
    import builtins

    from longdoc.index import walk as walk_mod

    make(tmp_path, {"locked.pdf": "%PDF-1.4\n" + "x" * 3000, "ok.txt": "text"})

    def refuse(p, *a, **kw):
        if os.path.basename(p) == "locked.pdf":
            raise PermissionError(13, "Permission denied")
        return builtins.open(p, *a, **kw)

    monkeypatch.setattr(walk_mod, "open", refuse, raising=False)
    res = walk(tmp_path, WalkOptions(max_size=1000))
    assert rels(res) == ["ok.txt"]
    assert dict(res.skipped) == {"locked.pdf": "unreadable (Permission denied)"}
