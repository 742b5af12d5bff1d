"""classify and xref over several FILEs: an unreadable FILE is reported on its own and the others are
still done (grep's way), and `classify` takes its options before or after FILE."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from longdoc.cli import cli, main
from longdoc.errors import LongdocError

CONTRACT = ("SERVICES AGREEMENT\n\n1. Definitions. \"Services\" means the work in Exhibit A.\n\n"
            "2. Fees. The Customer pays for the Services as set out in Section 1.\n\n"
            "3. Term. This Agreement ends as Section 2 allows.\n")
LEASE = "LEASE\n\n1. Premises. Landlord leases the premises.\n\n2. Rent. Tenant pays rent under Section 1.\n"


@pytest.fixture
def batch(tmp_path):
    """[readable, scan, missing, blank, readable]: a scan is a PDF whose pages carry no text layer; the
    blank file holds byte order marks only, which the segmenter reads as spaces."""
    from pypdf import PdfWriter

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(CONTRACT, encoding="utf-8")
    b.write_text(LEASE, encoding="utf-8")
    scan = tmp_path / "scan.pdf"
    w = PdfWriter()
    w.add_blank_page(612, 792)
    w.write(scan)
    blank = tmp_path / "blank.txt"
    blank.write_text("\ufeff\ufeff\n", encoding="utf-8")
    return [str(a), str(scan), str(tmp_path / "missing.txt"), str(blank), str(b)]


def _run(args):
    res = CliRunner().invoke(cli, args, prog_name="longdoc")
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    return res


def _errors_are_the_bad_files(stderr: str, bad: list[str], as_json: bool):
    """One line per bad FILE, in order: `longdoc: error: PATH: why`, or {"error": "PATH: why"}."""
    lines = stderr.splitlines()
    assert len(lines) == len(bad), stderr
    if as_json:
        msgs = [json.loads(line)["error"] for line in lines]
    else:
        assert all(line.startswith("longdoc: error: ") for line in lines), stderr
        msgs = [line[len("longdoc: error: "):] for line in lines]
    assert [m[:len(p) + 2] for m, p in zip(msgs, bad)] == [p + ": " for p in bad]
    assert "no text layer" in msgs[0] and msgs[1].endswith("no such file") and "no text" in msgs[2]


# ---------------------------------------------------------------------------------------------
# One unreadable FILE does not discard the batch


@pytest.mark.parametrize("fmt", ["--json", "--jsonl", "plain"])
def test_classify_reports_every_readable_file_and_each_bad_one(fmt, batch, tiny_model_dir):
    good, bad = [batch[0], batch[-1]], batch[1:-1]
    res = _run(["classify", *batch, "--labels", "services,lease", "--model", str(tiny_model_dir)]
               + ([fmt] if fmt != "plain" else []))
    assert res.exit_code == 2  # a FILE failed, though both others got a label
    if fmt == "--json":
        paths = [r["path"] for r in json.loads(res.stdout)]
    elif fmt == "--jsonl":
        paths = [json.loads(line)["path"] for line in res.stdout.splitlines()]
    else:
        paths = [line.split("\t")[0] for line in res.stdout.splitlines()]
    assert paths == good  # in the order given; nothing at all of the bad FILEs
    _errors_are_the_bad_files(res.stderr, bad, fmt != "plain")


@pytest.mark.parametrize("fmt", ["--json", "plain", "dot", "related"])
def test_xref_reports_every_readable_file_and_each_bad_one(fmt, batch, tiny_model_dir):
    good, bad = [batch[0], batch[-1]], batch[1:-1]
    opts = {"--json": ["--json", "--no-related"], "plain": ["--format", "plain", "--no-related"],
            "dot": ["--format", "dot", "--no-related"], "related": ["--json", "--model", str(tiny_model_dir)]}[fmt]
    res = _run(["xref", *batch, *opts])
    assert res.exit_code == 2
    if fmt in ("--json", "related"):
        assert [r["path"] for r in json.loads(res.stdout)] == good
    elif fmt == "plain":
        assert list(dict.fromkeys(line.split(":")[0] for line in res.stdout.splitlines())) == good
    else:
        assert [line for line in res.stdout.splitlines() if line.startswith("digraph")] == \
               [f'digraph "{p}" {{' for p in good]
    assert not any(p in res.stdout for p in bad)
    _errors_are_the_bad_files(res.stderr, bad, fmt in ("--json", "related"))


def test_json_stdout_stays_an_array_when_no_file_is_readable(batch, tiny_model_dir):
    for args in (["xref", "--no-related", batch[1], "--json"],
                 ["classify", batch[1], batch[2], "--labels", "a,b", "--json", "--model", str(tiny_model_dir)]):
        res = _run(args)
        assert res.exit_code == 2 and json.loads(res.stdout) == []
        assert all("error" in json.loads(line) for line in res.stderr.splitlines())


def test_xref_on_a_real_contract_and_a_real_scan(shared_data):
    contract = min((shared_data / "cuad" / "txt").glob("*.txt"))
    scan = shared_data / "pdf-robustness" / "pypdf-resources" / "git.pdf"
    if not scan.exists():
        pytest.skip("the scanned PDF is not in ../shared/data")
    res = _run(["xref", "--no-related", str(contract), str(scan), "--json"])
    assert res.exit_code == 2
    assert [r["path"] for r in json.loads(res.stdout)] == [str(contract)]
    assert json.loads(res.stderr)["error"].startswith(f"{scan}: no text layer")


# ---------------------------------------------------------------------------------------------
# `longdoc classify [OPTIONS] FILE...`: options anywhere; `classify train` beside it


def test_classify_options_before_or_after_file(batch, tiny_model_dir):
    model = ["--model", str(tiny_model_dir)]
    after = _run(["classify", batch[0], batch[-1], "--labels", "services,lease", "--jsonl", *model])
    assert after.exit_code == 0, after.output
    for args in (["--labels", "services,lease", "--jsonl", *model, batch[0], batch[-1]],
                 ["--labels", "services,lease", batch[0], "--jsonl", batch[-1], *model]):
        res = _run(["classify", *args])
        assert (res.exit_code, res.stdout) == (0, after.stdout), res.output


def test_classify_help_shows_a_usage_line_that_works(batch, tiny_model_dir):
    for args in (["classify", "--help"], ["classify", "-h"], ["classify", batch[0], "--help"],
                 ["classify", "--preset", "cuad-types", "--help"]):
        res = _run(args)
        assert res.exit_code == 0, res.output
        assert res.stdout.startswith("Usage: longdoc classify [OPTIONS] FILE...\n"), res.stdout[:200]
        assert "classify run" not in res.stdout and "classify train" in res.stdout and "--preset" in res.stdout
    res = _run(["classify", "train", "--help"])
    assert res.exit_code == 0 and res.stdout.startswith("Usage: longdoc classify train [OPTIONS] DIRECTORY\n")
    # The usage line as written: options, then FILE.
    res = _run(["classify", "--labels", "a,b", "--model", str(tiny_model_dir), batch[0]])
    assert res.exit_code == 0 and res.stdout.startswith(batch[0] + "\t"), res.output


def test_classify_train_still_dispatches_with_its_options_first(tmp_path, tiny_model_dir, capfd):
    with pytest.raises(SystemExit) as e:  # the trainer's own refusal, not "train: no such file"
        main(["classify", "train", "--out", str(tmp_path / "h.safetensors"), "--model", str(tiny_model_dir),
              str(tmp_path)])
    assert e.value.code == 2 and "need labelled examples" in capfd.readouterr().err


@pytest.mark.parametrize("fmt", ["plain", "--json"])
def test_classify_and_xref_print_the_loaders_warnings(fmt, tmp_path, tiny_model_dir):
    """A PDF page without text is named on stderr as `ask`, `tokens` and `index` name it (a JSON object
    in JSON modes); `classify` and `xref` said nothing, so their results could rest on part of a file."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_tokens import make_pdf

    pdf = make_pdf(tmp_path / "half.pdf", ["Section 2 of this Agreement applies to the Services.", ""])
    as_json = fmt == "--json"
    for args in (["xref", "--no-related", str(pdf)],
                 ["classify", str(pdf), "--labels", "services,lease", "--model", str(tiny_model_dir)]):
        res = _run(args + ([fmt] if as_json else []))
        assert res.exit_code == 0, res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 1, res.stderr
        line = json.loads(lines[0])["warning"] if as_json else lines[0][len("longdoc: warning: "):]
        assert line.startswith(f"{pdf}: ") and "page 2" in line, res.stderr


def test_classify_train_json_errors_are_json(tmp_path):
    """`classify train --json` wrote its errors in prose, unlike `classify --json` and the other verbs."""
    for args in (["classify", "train", str(tmp_path / "nowhere"), "--out", str(tmp_path / "h.safetensors")],
                 ["classify", "train", str(tmp_path), "--out", str(tmp_path / "no" / "h.safetensors")]):
        res = _run(args + ["--json"])
        assert res.exit_code == 2 and res.stdout == ""
        assert [list(json.loads(line)) for line in res.stderr.splitlines()] == [["error"]], res.stderr


def test_stdin_named_twice_is_refused(tiny_model_dir):
    """`tokens - -` counted stdin, then an empty file; `xref - -` and `classify - -` said "-: no text"
    of the second. Standard input can be read once: naming it twice is an error, before any reading."""
    for args in (["tokens", "-", "-"], ["xref", "--no-related", "-", "-"],
                 ["classify", "-", "-", "--labels", "a,b", "--model", str(tiny_model_dir)]):
        for fmt in ([], ["--json"]):
            res = CliRunner().invoke(cli, args + fmt, input="Section 2 applies to the Services.\n")
            assert res.stdout == "", (args, fmt, res.stdout)
            if fmt:  # a JSON object on stderr, exit 2
                assert res.exit_code == 2, (args, res.exception)
                err = json.loads(res.stderr)["error"]
            else:  # main() prints a LongdocError as one line, exit 2
                assert isinstance(res.exception, LongdocError), (args, res.exception)
                err = str(res.exception)
            assert "standard input (-) can be read only once" in err, (args, fmt, err)
