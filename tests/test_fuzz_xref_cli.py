"""Property-based tests (hypothesis): reference parsing and definitions on arbitrary text, and the
CLI's argument handling on arbitrary arguments. Neither may raise; every span must lie in the text;
every bad argument must end with a one-line error and exit 2, never a traceback."""
from __future__ import annotations

import json
import sys

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longdoc.cli import main
from longdoc.sources.document import Document
from longdoc.tasks.xref import find_references, roman_to_int, xref

# Pieces of contract language that steer the text into the parser's interesting paths, mixed with
# arbitrary text (NUL, surrogate-free unicode, RTL and CJK letters, lone brackets).
FRAGMENTS = ["Section", "Sections", "section", "SECTION", "Article", "ARTICLE", "Clause", "clauses", "Exhibit",
             "EXHIBIT", "Schedule", "Annex", "Appendix", "Part", "§", "§§", "paragraph", " ", "\n", "\n\n", "\t",
             "(a)", "(ii)", "(b)(i)", "(", ")", "4.2", "10.1.3", "IV", "xiv", "X", "B", "and", "or", ",",
             "through", "to", "of this Agreement", "of the Securities Act", "17 C.F.R. ", "hereof", '"', "“",
             "”", '"Term"', "means", "shall mean", '(the "Agreement")', "1.", "1.1", ".", "-", "–", "\x00",
             "\u05d0\u05d1", "\u3042\u3044", "\ufeff", "\r\n"]
TEXT = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=80).map("".join)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _in(text: str, place) -> bool:
    return 0 <= place.start <= place.end <= len(text)


@given(TEXT)
@SETTINGS
def test_references_and_terms_never_raise_and_stay_in_the_text(text):
    doc = Document(path="fuzz.txt", text=text, kind="text")
    for s, e, kind, item, external in find_references(doc):
        assert 0 <= s < e <= len(text) and isinstance(kind, str) and isinstance(external, bool)
    rep = xref(doc, related=False)
    assert rep.related is None
    for a in rep.anchors:
        assert _in(text, a.place)
    for r in rep.references:
        assert _in(text, r.place) and r.status in ("resolved", "partial", "unresolved", "external")
        assert (r.target is not None) == (r.status in ("resolved", "partial"))
    for t in rep.terms:
        assert _in(text, t.definition) and all(_in(text, p) for p in t.uses + t.redefined)
    for u in rep.undefined:
        assert all(_in(text, p) for p in u.uses)
    json.dumps(rep.counts())


@given(st.text(max_size=12))
@SETTINGS
def test_roman_numerals_parse_or_refuse(s):
    v = roman_to_int(s)
    assert v is None or (isinstance(v, int) and v > 0)


# The CLI: arbitrary values for every option of the verbs that take a document, on inputs that
# exist (an empty file, a tiny text, a directory) and ones that do not. A run may succeed (exit 0/1:
# answered or not) or refuse (exit 2 with one line on stderr); it must never raise.
OPTIONS = {
    "ask": ["-k", "--top-k", "--threshold", "--window", "--attention", "--devices", "--shard-tokens", "--password",
            "--color", "--lang", "--glob", "--questions-file"],
    "tokens": ["--model"],
    "classify": ["--labels", "--preset", "--evidence", "--window", "--head", "--password"],
    "xref": ["--top", "--min-gap", "--min-similarity", "--format", "--window"],
}
FLAGS = {"ask": ["--json", "--jsonl", "-q", "--no-cache"], "tokens": ["--json"],
         "classify": ["--json", "--jsonl", "--multi", "--no-cache"], "xref": ["--json", "--no-related"]}
# A real argv cannot hold a NUL byte (execve ends each argument at one), so none is generated.
ARG_TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=10)
VALUES = st.one_of(st.sampled_from(["0", "-1", "1", "3", "1e9", "nan", "inf", "", " ", "auto", "local",
                                     "lsh:rounds=0", "sinks:sinks=-2", "strided:stride=x", "nope", "never",
                                     "o200k_base", "9" * 30, "\x1e", "é", "--json"]),
                   ARG_TEXT)
# --devices 2..4 really starts that many CPU processes (tests/test_shard.py covers them; here they
# would cost seconds per example); every other count must be answered without starting one.
DEVICES = st.one_of(st.sampled_from(["0", "-1", "1", "auto", "9" * 30, "1000", "x", ""]), ARG_TEXT.filter(
    lambda v: not (v.strip().isdigit() and 2 <= int(v) <= 4)))


def _argv(draw, verb, paths):
    # ask takes one PATH; classify, xref and tokens a batch, where each unreadable FILE is its own error.
    args = draw(st.lists(st.sampled_from(paths), min_size=1, max_size=1 if verb == "ask" else 2))
    if verb == "ask":
        args.append(draw(st.one_of(st.sampled_from(["", " ", "termination?", "\x7f"]), ARG_TEXT)))
    opts = []
    for opt in draw(st.lists(st.sampled_from(OPTIONS[verb]), max_size=3)):
        opts += [opt, draw(DEVICES if opt == "--devices" else VALUES)]
    opts += draw(st.lists(st.sampled_from(FLAGS[verb]), max_size=2, unique=True))
    # Options before or after the arguments: both are `longdoc VERB [OPTIONS] ARGS`.
    return [verb, *(opts + args if draw(st.booleans()) else args + opts)]


def _invoke(argv) -> tuple[int, str, str]:
    """``longdoc ARGV`` in this process through the console entry point (empty stdin): (exit code,
    stdout, stderr). Anything but SystemExit escaping main() fails the test with its traceback."""
    with CliRunner().isolation(input="") as streams:
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = (s.getvalue().decode("utf-8", "replace") for s in streams[:2])
    return code, out, err


def test_cli_arguments_never_raise(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("LONGDOC_MODEL", str(tiny_model_dir))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "small.txt").write_text("1. Term. This Agreement ends on 1 May.\n\n2. Law. Section 1 applies.\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a.md").write_text("# A\n\nSee Section 2.\n")
    paths = [str(tmp_path / n) for n in ("empty.txt", "small.txt", "dir", "missing.pdf")] + ["-", ""]
    # Indexed first: otherwise whichever example first asks about dir also gets the note "indexing it
    # first" on stderr, so its stderr depended on the examples' order (a failure that did not replay).
    assert _invoke(["index", str(tmp_path / "dir"), "-q"])[0] == 0

    @given(st.data())
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.function_scoped_fixture])
    def run(data):
        verb = data.draw(st.sampled_from(sorted(OPTIONS)))
        argv = data.draw(st.composite(lambda draw: _argv(draw, verb, paths))())
        code, out, err = _invoke(argv)
        assert code in (0, 1, 2), (argv, code, (out + err)[-500:])
        assert "Traceback" not in out + err, (argv, (out + err)[-800:])
        if code == 2 and "Usage:" not in out + err:  # our own errors: one line (or one JSON object) each,
            # at most one per FILE of a batch; the files read meanwhile are reported on stdout
            n = len(err.strip().split("\n"))  # not splitlines(): a control character from the arguments
            # (\x1e, \x1c, ...) may be echoed inside the one line
            assert err.strip() and n <= max(1, sum(a in paths for a in argv[1:])), (argv, err[-800:])

    run()


def test_an_empty_path_is_refused_not_taken_as_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were "" the current folder, ask would index it and tokens count it
    (tmp_path / "a.txt").write_text("Some text.\n")
    for argv in (["ask", "", "q"], ["tokens", ""], ["tokens", "a.txt", ""], ["xref", ""],
                 ["classify", "", "--labels", "a,b"], ["index", ""]):
        code, out, err = _invoke(argv)
        assert code == 2 and "empty path" in err, (argv, out, err)
    assert not (tmp_path / ".longdoc").exists()
