"""`longdoc ask` end to end through the CLI: input modes x output formats, exit codes, errors.

Runs the real pipeline (loader, segmenter, long-context encoder, BM25, fusion, cache) on the tiny
random BERT folder from conftest, so it is fast; one test uses the bundled MiniLM on a real contract.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

CONTRACT = """MASTER SERVICES AGREEMENT

1. Definitions. "Services" means the services described in Exhibit A, including installation, support,
maintenance and training, and any other services that the parties agree in writing to add to Exhibit A
from time to time during the term of this Agreement.

2. Payment. Customer shall pay each invoice within thirty (30) days of receipt. Late payments bear
interest at one percent per month or the highest rate permitted by law, whichever is lower, and
Provider may suspend the Services while any undisputed invoice remains unpaid after notice.

3. Term and Termination. This Agreement begins on the Effective Date and continues for two years.
Either party may terminate this Agreement for convenience on ninety (90) days written notice, and
either party may terminate it at once if the other party materially breaches it and fails to cure.

4. Governing Law. This Agreement is governed by the laws of the State of Delaware, without regard to
its conflict of laws rules. The state and federal courts in Wilmington have exclusive jurisdiction
over any dispute arising out of or relating to this Agreement, and each party consents to them.

5. Confidentiality. Each party shall keep the other party's Confidential Information secret, use it
only to perform this Agreement, and disclose it only to employees and advisers who need to know it
and are bound by duties of confidentiality at least as protective as those in this section.
"""


@pytest.fixture
def contract(tmp_path):
    p = tmp_path / "msa.txt"
    p.write_text(CONTRACT, encoding="utf-8")
    return p


def invoke(args, input=None):
    """Through the real entry point, in a child process (exit codes, one-line errors, stdout/stderr)."""
    return subprocess.run([sys.executable, "-m", "longdoc", *args], input=input, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("source", ["file", "stdin"])
@pytest.mark.parametrize("fmt", ["plain", "json", "jsonl"])
def test_ask_modes(tiny_model_dir, contract, source, fmt):
    path = str(contract) if source == "file" else "-"
    stdin = CONTRACT if source == "stdin" else None
    flags = {"plain": [], "json": ["--json"], "jsonl": ["--jsonl"]}[fmt]
    r = invoke(["ask", path, "governing law clause?", "termination?", "-k", "2", "--threshold", "-1",
                "--model", str(tiny_model_dir), *flags], input=stdin)
    assert r.returncode == 0, r.stderr
    shown = "-" if source == "stdin" else str(contract)
    if fmt == "json":
        data = json.loads(r.stdout)
        assert [a["question"] for a in data] == ["governing law clause?", "termination?"]
        for a in data:
            assert len(a["results"]) == 2
            for h in a["results"]:
                assert set(h) >= {"path", "char_start", "char_end", "page", "line_start", "line_end", "score", "text"}
                assert h["path"] == shown and h["page"] is None
                # offsets index the file's text exactly
                assert CONTRACT[h["char_start"]:h["char_end"]] == h["text"]
                assert CONTRACT.count("\n", 0, h["char_start"]) + 1 == h["line_start"]
    elif fmt == "jsonl":
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert len(lines) == 4 and {x["question"] for x in lines} == {"governing law clause?", "termination?"}
    else:
        lines = r.stdout.splitlines()
        assert lines[0] == "# governing law clause?"
        hits = [x for x in lines if not x.startswith("#")]
        assert len(hits) == 4 and all(x.startswith(f"{shown}:") and x.count("\t") == 2 for x in hits)
    assert r.stderr == ""  # not a terminal: no progress, no logs


def test_questions_file_and_exit_1_when_nothing_clears(tiny_model_dir, contract, tmp_path):
    qf = tmp_path / "q.txt"
    qf.write_text("payment terms?\n\nconfidentiality?\n")
    r = invoke(["ask", str(contract), "--questions-file", str(qf), "--json", "--threshold", "-1",
                "--model", str(tiny_model_dir)])
    assert r.returncode == 0
    assert [a["question"] for a in json.loads(r.stdout)] == ["payment terms?", "confidentiality?"]
    r = invoke(["ask", str(contract), "payment?", "--threshold", "1.01", "--model", str(tiny_model_dir)])
    assert r.returncode == 1 and r.stdout == ""


def test_questions_in_any_encoding(tiny_model_dir, contract, tmp_path):
    """A questions file is decoded as documents are (UTF-16 here), and a non-UTF-8 byte in an argument
    (a lone surrogate in Python) becomes U+FFFD instead of a UnicodeEncodeError traceback."""
    qf = tmp_path / "q16.txt"
    qf.write_text("payment terms?\nconfidentiality \u2013 o\u00f9?\n", encoding="utf-16")
    common = ["--json", "--threshold", "-1", "--model", str(tiny_model_dir)]
    r = invoke(["ask", str(contract), "--questions-file", str(qf), *common])
    assert r.returncode == 0, r.stderr
    assert [a["question"] for a in json.loads(r.stdout)] == ["payment terms?", "confidentiality \u2013 o\u00f9?"]
    r = subprocess.run([sys.executable, "-m", "longdoc", "ask", str(contract), b"payment \xe9?", *common],
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.decode())[0]["question"] == "payment \ufffd?"


# A run whose address space is capped CAP_MB above what it holds once torch and longdoc are loaded
# (their threads and BLAS buffers made first, so that the cap falls on the run's own allocations).
_CAPPED = """import resource, sys
import numpy as np
import torch
import longdoc.model.load, longdoc.model.variants, longdoc.tasks.ask
from longdoc.cli import main
torch.ones(64, 64) @ torch.ones(64, 64)
np.ones((64, 64)) @ np.ones((64, 64))
vm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmSize:")) * 1024
cap = vm + int(sys.argv[1]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
main(sys.argv[2:])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="caps the address space through /proc and RLIMIT_AS")
def test_out_of_memory_is_one_line_exit_2(tiny_model_dir, tmp_path):
    """A failed allocation is an error message, not an allocator traceback. With 768 MiB more address
    space a plain `ask` of this 6k-token file runs; lsh with 4096-token chunks (a 4096 x 8192 score block
    per head, about 1 GiB in all) does not. (10^9 lsh buckets provoked it before they were refused.)"""
    doc = tmp_path / "long.txt"
    doc.write_text(CONTRACT * 20)
    run = lambda *args: subprocess.run([sys.executable, "-c", _CAPPED, "768", "ask", str(doc), "payment?",
                                        "--no-cache", "--model", str(tiny_model_dir), *args],
                                       capture_output=True, text=True, timeout=300)
    r = run()
    assert r.returncode in (0, 1), r.stderr  # the cap leaves room for the run itself
    r = run("--attention", "lsh:chunk=4096")
    assert r.returncode == 2 and r.stderr.startswith("longdoc: error: out of memory"), r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args,needle", [
    (["ask", "/nonexistent/file.txt", "q?"], "no such file"),
    (["ask", "{contract}", ""], "empty question"),
    (["ask", "{contract}"], "no question"),
    (["ask", "{contract}", "q?", "--model", "/nonexistent-model"], "model folder not found"),
    (["ask", "{contract}", "q?", "--json", "--jsonl"], "one of --json and --jsonl"),
    (["ask", "{contract}", "q?", "--lang", "python"], "filter the files of an indexed directory"),
    # --index was silently ignored for a file
    (["ask", "{contract}", "q?", "--index", "/tmp"], "--index names the index of an indexed directory"),
    # both from stdin: the questions took it all, and the document read as empty ("no text to search")
    (["ask", "-", "--questions-file", "-"], "standard input cannot be both"),
    (["classify", "{contract}", "--preset", "cuad-types", "--json", "--jsonl"], "one of --json and --jsonl"),
])
def test_bad_input_is_one_line_exit_2(contract, args, needle):
    args = [a.replace("{contract}", str(contract)) for a in args]
    r = invoke(args)
    assert r.returncode == 2
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_threshold_nan_is_refused(contract):
    r = invoke(["ask", str(contract), "q?", "--threshold", "nan"])
    assert r.returncode == 2 and "not nan" in r.stderr and "Traceback" not in r.stderr


def test_json_mode_errors_are_json(contract):
    r = invoke(["ask", "/nonexistent/file.txt", "q?", "--json"])
    assert r.returncode == 2 and json.loads(r.stderr)["error"].endswith("no such file")


@pytest.mark.parametrize("args,message", [
    (["ask", "{contract}", "q?", "--json", "--bogus"], "No such option '--bogus'."),
    (["ask", "--jsonl"], "Missing argument 'PATH'."),
    (["ask", "{contract}", "q?", "--json", "--threshold", "nan"], "Invalid value for '--threshold': must be a number, not nan"),
    (["index", "status", "--json", "--zzz"], "No such option '--zzz'."),
])
def test_json_mode_usage_errors_are_json(contract, args, message):
    """click's own errors (unknown option, missing argument, bad value) came out as prose with a usage
    line even with --json / --jsonl on the command line; they are one {"error"} object, exit 2."""
    r = invoke([a.replace("{contract}", str(contract)) for a in args])
    assert (r.returncode, [json.loads(x) for x in r.stderr.splitlines()]) == (2, [{"error": message}])


def test_errors_reaching_main_are_json_in_json_modes(contract, capsys, monkeypatch):
    """Out of memory (and interrupts) reached main() and were said in prose whatever the mode; without
    --json they still are, and `--` ends the options (a question "--json" is not the flag)."""
    from longdoc.cli import main
    from longdoc.tasks import ask

    def oom(*a, **kw):
        raise MemoryError

    monkeypatch.setattr(ask.Engine, "__init__", oom)
    said = "out of memory (a smaller --window or --attention setting, fewer --devices or a shorter input needs less)"
    for args, err in ((["--jsonl"], json.dumps({"error": said}) + "\n"),
                      ([], f"longdoc: error: {said}\n"), (["--", "--json"], f"longdoc: error: {said}\n")):
        with pytest.raises(SystemExit) as e:
            main(["ask", str(contract), "q?", *args])
        assert (args, e.value.code, capsys.readouterr()) == (args, 2, ("", err))


def test_binary_file_is_refused(tmp_path):
    p = tmp_path / "blob.bin"
    p.write_bytes(b"\x00\x01\x02" * 100)
    r = invoke(["ask", str(p), "q?"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_repeated_question_uses_the_cache(tiny_model_dir, contract, monkeypatch):
    from longdoc.tasks import ask as ask_mod

    first = ask_mod.Engine(model=str(tiny_model_dir))
    doc = first.load(str(contract))
    a1 = ask_mod.ask(doc, ["termination?"], engine=first, threshold=-1)
    assert first._encoder is not None
    second = ask_mod.Engine(model=str(tiny_model_dir))
    a2 = ask_mod.ask(second.load(str(contract)), ["termination?"], engine=second, threshold=-1)
    assert second._encoder is None  # nothing was encoded: vectors and question came from the cache
    assert [h.char_start for h in a1[0].results] == [h.char_start for h in a2[0].results]


@pytest.mark.model
def test_real_model_finds_the_governing_law_clause_in_a_real_pdf():
    r = invoke(["ask", "examples/distributor-agreement.pdf", "governing law clause?", "--json", "-k", "3"])
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)[0]["results"]
    assert any("governed by" in h["text"] and "laws" in h["text"] for h in hits)
    assert all(h["page"] >= 1 for h in hits)


@pytest.mark.model
def test_the_title_page_answers_questions_about_the_document_not_about_its_clauses():
    """The opening passages (title, parties, dates) rank by how much the question asks about the
    document itself (rank.IDENTITY_QUESTIONS), not first for every question."""
    about_it = ["who are the parties to this agreement?", "what is the effective date?"]
    about_clauses = ["termination clause?", "governing law clause?", "what are the payment terms?"]
    r = invoke(["ask", "examples/distributor-agreement.pdf", *about_it, *about_clauses, "--json", "-k", "3",
                "--threshold", "0"])
    assert r.returncode == 0, r.stderr
    answers = {a["question"]: a["results"] for a in json.loads(r.stdout)}
    for q in about_it:
        assert answers[q][0]["page"] == 1 and "Accuray" in answers[q][0]["text"], q
    for q in about_clauses:
        assert all(h["page"] != 1 for h in answers[q]), q


def test_devices_2_gives_the_same_answer_as_one(tiny_model_dir, contract):
    """`--devices 2` shards the sequence over two gloo processes on the CPU; the result is exact."""
    args = ["ask", str(contract), "termination?", "--json", "--threshold", "-1", "--no-cache",
            "--model", str(tiny_model_dir)]
    one = invoke(args)
    two = invoke(args + ["--devices", "2"])
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout)[0]["results"], json.loads(two.stdout)[0]["results"]
    assert [h["char_start"] for h in a] == [h["char_start"] for h in b]
    assert [h["score"] for h in a] == pytest.approx([h["score"] for h in b], abs=1e-4)
