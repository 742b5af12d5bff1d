"""`longdoc ask FILE --stream` (a text file or a PDF, read in pieces) and the --stream hint of `ask FILE`."""
import json
import os
import subprocess
import sys
import time

import pytest

from longdoc.sources import PAGE_SEPARATOR, load
from longdoc.sources.document import Document
from longdoc.tasks.stream_ask import passages_of

sys.path.insert(0, os.path.dirname(__file__))
from test_tokens import make_pdf  # noqa: E402  (a hand-written PDF, one text line per page)

LOG = [f"2026-11-22 12:00:{i % 60:02d} INFO job {i} ok, caf\u00e9 served" for i in range(300)]
LOG[190] = "2026-11-22 13:00:00 ERROR database connection refused"


def _ask(args, model, input=None):
    """The real `longdoc ask` in this process (torch is loaded once for the whole test session)."""
    from click.testing import CliRunner

    from longdoc.cli import cli

    r = CliRunner().invoke(cli, ["ask", *args, "--model", str(model)], input=input, standalone_mode=False)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


@pytest.mark.parametrize("piece", [1, 5, 64, 800, 10**6, None])
def test_passages_are_the_same_for_any_pieces_and_carry_lines_and_pages(piece):
    pages = ["Page one.\n" + "x" * 1700 + "\n\nshort\n", "", "\n\nPage three line\nlast line no newline"]
    text = PAGE_SEPARATOR.join(pages)
    doc = Document("t.pdf", text, "pdf", page_starts=(0, len(pages[0]) + 3, len(pages[0]) + 6))
    chunks = text.splitlines(keepends=True) if piece is None else [text[i:i + piece] for i in range(0, len(text), piece)]
    got = list(passages_of(chunks, 800, pages=True))
    assert got == list(passages_of([text], 800, pages=True))
    assert [p[4] for p in got] == [1, 1, 1, 1, 3]
    for start, end, line_start, line_end, page, body in got:
        assert text[start:end] == body and "\f" not in body and len(body) <= 800
        assert (line_start, line_end, page) == (doc.line_of(start), doc.line_of(end - 1), doc.page_of(start))
    plain = list(passages_of(chunks, 800))  # not a PDF: a form feed is text, and there are no pages
    assert all(p[4] is None for p in plain) and "".join(p[5] for p in plain).count("\f") == 2


@pytest.mark.parametrize("piece", [1, 7, 800, 10**6])
def test_long_lines_are_cut_between_words(piece):
    """A line longer than max_chars is cut after its last space within them (it was cut every 800
    characters, mid-word); only a word longer than max_chars itself is cut."""
    words = " ".join(f"word{i}" + "x" * (i % 9) for i in range(600))
    text = words + " " + "y" * 2000 + "\ufeff" + words + "\nshort line\n"
    chunks = [text[i:i + piece] for i in range(0, len(text), piece)]
    got = list(passages_of(chunks, 800))
    assert got == list(passages_of([text], 800))
    assert "".join(p[5] for p in got) == text
    for start, end, *_, body in got:
        assert text[start:end] == body and len(body) <= 800
        if 0 < start < len(text) and not text[start - 1].isspace() and text[start - 1] != "\ufeff":
            assert text[start - 1] == text[start] == "y", f"word split at {start}: {text[start - 10:start + 10]!r}"
    assert sum(len(p[5]) == 800 for p in got) == 2  # the 2,000-character word: two full pieces and its end


def test_ask_file_stream_equals_stdin_stream_with_the_real_path(tiny_model_dir, tmp_path):
    """Same bytes (CRLF line ends, Latin-1 text: decoded by detection, as the normal loader does) through
    a path and through stdin: the same results, with the path in them; offsets index load(path).text."""
    path = tmp_path / "app.log"
    data = "\r\n".join(LOG).encode("cp1252")
    path.write_bytes(data)
    q = ["database error", "-k", "3", "--stream", "--json"]
    by_path = _ask([str(path), *q], tiny_model_dir)
    by_stdin = _ask(["-", *q], tiny_model_dir, input=data)
    assert by_path.exit_code == by_stdin.exit_code == 0, by_path.stderr + by_stdin.stderr
    a, b = json.loads(by_path.stdout), json.loads(by_stdin.stdout)
    assert len(a[0]["results"]) == 3 and all(h["path"] == str(path) for h in a[0]["results"])
    for h in b[0]["results"]:
        h["path"] = str(path)
    assert a == b
    text = load(path).text
    assert "caf\u00e9" in text and "\r" not in text
    for h in a[0]["results"]:
        assert text[h["char_start"]:h["char_end"]] == h["text"] and h["page"] is None
        assert set(h) == {"path", "char_start", "char_end", "page", "line_start", "line_end", "score", "text"}


def test_ask_stream_on_invalid_utf8_and_on_a_pdf(tiny_model_dir, tmp_path):
    data = ("\n".join(LOG[:150]) + "\n").encode() + b"\xff\xfe broken bytes\n" + "\n".join(LOG[150:]).encode()
    r = _ask(["-", "database error", "--stream", "-k", "1"], tiny_model_dir, input=data)
    assert r.exit_code == 0, r.stderr
    assert "invalid UTF-8" in r.stderr  # the loader's own warning

    pdf = make_pdf(tmp_path / "c.pdf", ["Exhibit B. Payment terms apply.", "Termination on notice.", "Governing law."])
    r = _ask([str(pdf), "governing law", "--stream", "--jsonl", "-k", "3"], tiny_model_dir)
    assert r.exit_code == 0, r.stderr
    doc = load(pdf)
    hits = [json.loads(x) for x in r.stdout.splitlines()]
    assert sorted(h["page"] for h in hits) == [1, 2, 3]
    for h in hits:
        assert doc.text[h["char_start"]:h["char_end"]] == h["text"] and doc.page_of(h["char_start"]) == h["page"]
        assert doc.line_of(h["char_start"]) == h["line_start"]


@pytest.mark.parametrize("as_json", [False, True])
def test_ask_stream_bad_input_is_one_line_before_the_model(tiny_model_dir, tmp_path, as_json):
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(range(256)) * 8)
    t0 = time.monotonic()
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-m", "longdoc", "ask", str(path), "q", "--stream", "--model", str(tiny_model_dir),
                        *(["--json"] if as_json else [])], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "binary file" in err[0] and str(path) in err[0]
    assert json.loads(err[0])["error"] if as_json else err[0].startswith("longdoc: error: ")
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("stream", [False, True])
def test_quiet_ask_still_prints_the_loaders_warnings(tiny_model_dir, tmp_path, stream):
    """-q drops notes and progress, not warnings: it used to hide that bytes were replaced."""
    path = tmp_path / "app.log"
    path.write_bytes(("\n".join(LOG[:150]) + "\n").encode() + b"\xff\xfe broken bytes\n" + "\n".join(LOG[150:]).encode())
    r = _ask([str(path), "database error", "-k", "1", "-q", *(["--stream"] if stream else [])], tiny_model_dir)
    assert r.exit_code in (0, 1), r.stderr
    assert r.stderr.startswith(f"longdoc: warning: {path}: 2 invalid UTF-8 byte(s)") and r.stderr.count("\n") == 1


def test_ask_hints_stream_before_reading_a_large_text_file(tiny_model_dir, tmp_path):
    """2.5 MB of text (about 600k tokens by its size): the hint is the first thing on stderr, before
    the file is read; the run is then stopped (it would go on to encode the whole input)."""
    big = tmp_path / "big.txt"
    with open(big, "w") as f:
        for i in range(50_000):
            f.write(f"{LOG[i % len(LOG)]}\n")
    assert big.stat().st_size // 4 >= 500_000
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    proc = subprocess.Popen([sys.executable, "-m", "longdoc", "ask", str(big), "database error", "--model",
                             str(tiny_model_dir)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    try:
        line = proc.stderr.readline()
    finally:
        proc.kill()
        proc.wait()
    assert line.startswith(f"longdoc: warning: {big}: about 6") and "--stream" in line, line

    small = tmp_path / "small.txt"
    small.write_text("\n".join(LOG))
    r = _ask([str(small), "database error"], tiny_model_dir)
    assert r.exit_code in (0, 1) and "--stream" not in r.stderr, r.stderr


@pytest.mark.parametrize("case", ["empty", "blank", "devices", "shard-tokens"])
def test_ask_stream_empty_input_and_sharding_options_are_errors(tiny_model_dir, tmp_path, case):
    """An empty input is "no text to search" (exit 2) as without --stream, not "nothing found"
    (exit 1); --devices and --shard-tokens, which --stream cannot use, are refused, not ignored."""
    text = {"empty": "", "blank": " \n\n \t\n"}.get(case, "The licensee shall pay the fees.\n")
    extra = {"devices": ["--devices", "2"], "shard-tokens": ["--shard-tokens", "64"]}.get(case, [])
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-m", "longdoc", "ask", "-", "fees?", "--stream", *extra, "--model",
                        str(tiny_model_dir)], input=text, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert ("no text to search" if case in ("empty", "blank") else "takes no --devices") in r.stderr
