"""File names that are not plain text on every verb's output: a byte that is not UTF-8 (a lone
surrogate in Python) and a line break. `ask` showed them escaped; `tokens`, `classify` and `xref`
wrote the raw name, a UnicodeEncodeError traceback on a UTF-8 stdout (any UTF-8 locale other than C)
and a broken line or JSON otherwise."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TEXT = ('This Agreement is governed by the laws of France. The term "Licensee" means the buyer. '
        "See Section 2.\n\n2. Term. The Licensee pays the fee each year.\n")

# (argv after the file, output format): every verb that names its files in its output.
RUNS = [
    (["tokens"], "text"),
    (["tokens", "--json"], "json"),
    (["xref", "--no-related"], "text"),
    (["xref", "--no-related", "--json"], "json"),
    (["xref", "--no-related", "--format", "dot"], "dot"),
    (["classify", "--labels", "License,Supply"], "text"),
    (["classify", "--labels", "License,Supply", "--json"], "json"),
    (["classify", "--labels", "License,Supply", "--jsonl"], "jsonl"),
]


@pytest.fixture
def odd_names(tmp_path):
    latin1 = os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt")
    with open(latin1, "wb") as f:
        f.write(TEXT.encode())
    broken = tmp_path / "two\nlines.txt"
    broken.write_text(TEXT)
    return os.fsdecode(latin1), str(broken)


@pytest.mark.parametrize("argv,fmt", RUNS, ids=[" ".join(a) for a, _ in RUNS])
def test_odd_file_names_on_a_strict_utf8_stdout(argv, fmt, odd_names, tiny_model_dir):
    latin1, broken = odd_names
    verb, *opts = argv
    model = ["--model", str(tiny_model_dir)] if verb == "classify" else []
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}  # errors=strict, as under en_US.UTF-8
    r = subprocess.run([sys.executable, "-m", "longdoc", verb, os.fsencode(latin1), broken, *opts, *model],
                       capture_output=True, env=env, timeout=300)
    assert r.returncode in (0, 1), r.stderr.decode(errors="replace")
    out = r.stdout.decode("utf-8")  # valid UTF-8: no surrogate escaped as raw bytes
    if fmt == "json":
        data = json.loads(out)
        paths = [f["path"] for f in data["files"]] if verb == "tokens" else [d["path"] for d in data]
        assert paths == [latin1, broken]  # the very names, escaped as \udce9 and \n
    elif fmt == "jsonl":
        assert [json.loads(line)["path"] for line in out.splitlines()] == [latin1, broken]
    elif fmt == "dot":  # in a quoted DOT id, the escape's own backslash is doubled
        assert "caf\\\\xe9.txt" in out and "two\\\\nlines.txt" in out
    else:
        assert "caf\\xe9.txt" in out and "two\\nlines.txt" in out
        if fmt == "text" and verb != "tokens":  # one finding per line, each starting with its file
            assert all(line.startswith(("/", "caf")) for line in out.splitlines()), out
