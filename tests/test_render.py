import io
import json

from longdoc import render
from longdoc.results import Answer, Hit

HIT = Hit(path="c.pdf", char_start=10, char_end=60, page=3, line_start=7, line_end=9, score=0.8123,
          text="This Agreement shall be governed by\nthe laws of Delaware.", label="12.3")
ANSWERS = [Answer("governing law clause?", [HIT], heat=[0.1, 0.5, 0.9])]


def test_rich_golden():
    buf = io.StringIO()
    out = render.console(color="never", width=80, file=buf)
    render.answers_rich(ANSWERS, out)
    assert buf.getvalue() == (
        "governing law clause?\n"
        "  map  ▄█  (pages)\n"
        "  c.pdf:7-9  p.3  0.812  12.3\n"
        "    This Agreement shall be governed by the laws of Delaware.\n"
        "\n"
    )


def test_highlight_marks_stemmed_question_words():
    t = render.highlight("governed by the laws", render.query_terms("governing law clause?"))
    styled = [t.plain[s.start:s.end] for s in t.spans]
    assert styled == ["governed", "laws"]


def test_plain_is_grep_shaped():
    buf = io.StringIO()
    render.answers_plain(ANSWERS, buf)
    assert buf.getvalue() == "c.pdf:7-9:p.3\t0.812\tThis Agreement shall be governed by the laws of Delaware.\n"


def test_json_contract():
    buf = io.StringIO()
    render.answers_json(ANSWERS, buf)
    data = json.loads(buf.getvalue())
    assert data == [{"question": "governing law clause?", "results": [{
        "path": "c.pdf", "char_start": 10, "char_end": 60, "page": 3, "line_start": 7, "line_end": 9,
        "score": 0.8123, "text": HIT.text, "label": "12.3"}]}]
    buf = io.StringIO()
    render.answers_jsonl(ANSWERS, buf)
    line = json.loads(buf.getvalue())
    assert line["question"] == "governing law clause?" and line["char_start"] == 10


def test_a_file_name_that_is_not_utf8_prints_and_stays_valid_json():
    """An indexed file named with a latin-1 byte (a lone surrogate in Python) is shown as \\xe9 in text
    and escaped as \\udce9 in JSON, which is valid UTF-8 and loads back as the very name."""
    name = "pars\udce9r.py"
    a = [Answer("q", [Hit(name, 0, 4, None, 1, 1, 0.5, "text")])]
    raw = io.BytesIO()
    strict = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    render.answers_plain(a, strict)
    render.answers_jsonl(a, strict)
    strict.flush()
    lines = raw.getvalue().decode("utf-8").splitlines()
    assert lines[0].startswith("pars\\xe9r.py:1\t")
    assert json.loads(lines[1])["path"] == name
    out = io.StringIO()
    render.answers_json(a, out)
    out.getvalue().encode("utf-8")  # no lone surrogate left
    assert json.loads(out.getvalue())[0]["results"][0]["path"] == name


def test_rich_output_to_a_reader_that_left_is_a_quiet_exit_0(tmp_path):
    """`longdoc xref --format tree FILE | head -1` (or any --color always output): Rich's own answer to
    a closed pipe was exit 1, which for longdoc means "nothing found"; the CLI ends quietly with 0,
    as it does for the plain and JSON outputs."""
    import os
    import subprocess
    import sys

    doc = tmp_path / "c.txt"
    doc.write_text("SERVICES AGREEMENT\n\n1. Definitions. \"Services\" means the work in Exhibit A.\n\n"
                   "2. Fees. The Customer pays as set out in Section 1.\n", encoding="utf-8")
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    for fmt in ("tree", "plain"):
        p = subprocess.Popen([sys.executable, "-m", "longdoc", "xref", "--no-related", "--format", fmt, str(doc)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        p.stdout.close()
        err = p.stderr.read()
        assert (fmt, p.wait(timeout=120), err) == (fmt, 0, b"")


def test_output_to_a_full_disk_is_a_one_line_error(tmp_path):
    """`longdoc ... > out` on a full disk (/dev/full): a traceback and exit 1 ("nothing found" for ask
    and xref) before; one line on stderr and exit 2 now, whether the failing write is the command's
    own or the flush at exit."""
    import os
    import subprocess
    import sys

    if not os.path.exists("/dev/full"):
        import pytest

        pytest.skip("no /dev/full here")
    doc = tmp_path / "c.txt"
    doc.write_text("SERVICES AGREEMENT\n\n1. Fees. The Customer pays as set out in Section 2.\n", encoding="utf-8")
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    said = "cannot write the output (No space left on device); it is incomplete"
    for args in (["xref", "--no-related", str(doc)], ["xref", "--no-related", "--json", str(doc)],
                 ["xref", "--no-related", "--format", "tree", str(doc)], ["--help"]):
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "longdoc", *args], stdout=full, stderr=subprocess.PIPE,
                               env=env, timeout=120)
        want = json.dumps({"error": said}) if "--json" in args else f"longdoc: error: {said}"
        assert (args, r.returncode, r.stderr.decode()) == (args, 2, want + "\n")


def test_output_to_a_full_disk_in_json_modes_is_a_json_error(tmp_path, tiny_model_dir):
    """`longdoc ask FILE q --json > /dev/full`: the error was prose in JSON modes; it is {"error"} now."""
    import os
    import subprocess
    import sys

    import pytest

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    doc = tmp_path / "c.txt"
    doc.write_text("The Agreement is governed by the laws of Delaware.\n", encoding="utf-8")
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    for mode in ("--json", "--jsonl"):
        with open("/dev/full", "w") as full:
            r = subprocess.run([sys.executable, "-m", "longdoc", "ask", str(doc), "governing law?", mode,
                                "--threshold", "-1", "--model", str(tiny_model_dir)],
                               stdout=full, stderr=subprocess.PIPE, env=env, timeout=300)
        assert (mode, r.returncode, [json.loads(x) for x in r.stderr.decode().splitlines()]) == (
            mode, 2, [{"error": "cannot write the output (No space left on device); it is incomplete"}])


def test_a_closed_stderr_leaves_the_results_and_the_exit_status(tmp_path, tiny_model_dir):
    """`longdoc ask FILE q 2>&-`, or stderr to a reader that left: the first warning written there
    failed (no sys.stderr; a BrokenPipeError taken for stdout's), so the run printed nothing and exited
    1, or 0 with its results thrown away. A message that cannot be written is lost, nothing else: the
    results print and the exit status is what it would have been (0 found, 2 on error)."""
    import os
    import subprocess
    import sys

    doc = tmp_path / "latin.txt"  # an invalid UTF-8 byte: a warning on stderr before the results
    doc.write_bytes(b"Caf\xc3\xa9 \xff. The Agreement is governed by the laws of Delaware.\n")
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    ask = [sys.executable, "-m", "longdoc", "ask", "--model", str(tiny_model_dir), "--threshold", "-1"]
    for args, rc in (([str(doc), "governing law?"], 0), ([str(tmp_path / "nope.txt"), "q"], 2)):
        closed = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", *ask, *args], stdout=subprocess.PIPE,
                                env=env, timeout=300)
        p = subprocess.Popen(ask + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        p.stderr.close()  # the reader of stderr left
        left = p.stdout.read()
        for how, code, out in (("2>&-", closed.returncode, closed.stdout), ("left", p.wait(timeout=300), left)):
            assert (args[0], how, code) == (args[0], how, rc)
            assert out.startswith(f"{doc}:1\t".encode()) if rc == 0 else out == b"", (how, out)
