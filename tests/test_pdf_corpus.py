"""Every PDF of ../shared/data/pdf-robustness either yields text with page numbers or a one-line
LongdocError naming the file and the reason; none hangs. Expectations: tests/data/pdf_corpus_expectations.json
(regenerate with `python tests/test_pdf_corpus.py --write` and review the diff)."""
from __future__ import annotations

import csv
import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from longdoc.errors import LongdocError
from longdoc.sources import PAGE_SEPARATOR, load

REPO = Path(__file__).resolve().parents[1]
EXPECTATIONS = REPO / "tests" / "data" / "pdf_corpus_expectations.json"


def _shared() -> Path | None:
    for cand in (REPO.parent / "shared", Path("/work/shared")):
        if (cand / "data" / "pdf-robustness" / "manifest.tsv").is_file():
            return cand
    return None


SHARED = _shared()
CORPUS = SHARED / "data" / "pdf-robustness" if SHARED else None
pytestmark = pytest.mark.skipif(SHARED is None, reason="../shared/data/pdf-robustness is not present")

# Each case is loaded with this limit; the slowest file here takes ~1 s on the 2-core dev machine.
PER_FILE_TIMEOUT_S = 30.0

# The reason in an error message, as a short stable key.
REASONS = {
    "no_text": r"no text layer \(scanned\?\); OCR is not done",
    "needs_password": r"encrypted PDF; give its password with --password",
    "wrong_password": r"wrong password for encrypted PDF \(--password\)",
}


def cases() -> list[tuple[str, str | None]]:
    """(manifest path, password) for every PDF: with its password when it has one, and also
    without it (and with a wrong one) so the errors are exercised."""
    out = []
    with open(CORPUS / "manifest.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if not row["file"].endswith(".pdf"):
                continue
            out.append((row["file"], row["password"] or None))
            if row["password"]:
                out.append((row["file"], ""))  # no password given (load's password=None)
                out.append((row["file"], "qwerty"))
    return out


def key(path: str, password: str | None) -> str:
    return path if password is None else f"{path} [password={password or 'none'}]"


def observe(path: str, password: str | None) -> dict:
    full = CORPUS / path
    t0 = time.monotonic()
    try:
        doc = load(str(full), password=password or None, timeout=PER_FILE_TIMEOUT_S)
    except LongdocError as e:
        msg = str(e)
        reason = next((k for k, rx in REASONS.items() if re.search(rx, msg)), "other")
        return {"outcome": "error", "reason": reason, "message": msg.replace(str(full), "FILE"),
                "seconds": time.monotonic() - t0}
    return {"outcome": "text", "pages": doc.n_pages, "doc": doc, "seconds": time.monotonic() - t0}


def manifest_pages() -> dict[str, int]:
    with open(CORPUS / "manifest.tsv", encoding="utf-8", newline="") as f:
        return {r["file"]: int(r["pages"]) for r in csv.DictReader(f, delimiter="\t") if r["pages"]}


@pytest.fixture(scope="module")
def expectations() -> dict:
    return json.loads(EXPECTATIONS.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path,password", cases() if CORPUS else [], ids=lambda v: str(v))
def test_corpus_file(path, password, expectations):
    got = observe(path, password)
    want = expectations[key(path, password)]
    assert got["seconds"] < PER_FILE_TIMEOUT_S
    if got["outcome"] == "error":
        msg = got["message"]
        assert msg.startswith("FILE: ") and "\n" not in msg and len(msg) < 300
        assert want == {"outcome": "error", "reason": got["reason"]}, msg
        return
    doc = got["doc"]
    assert want == {"outcome": "text", "pages": got["pages"]}
    assert doc.text.strip()
    assert doc.page_starts[0] == 0 and list(doc.page_starts) == sorted(doc.page_starts)
    # page p's text runs from page_starts[p-1] to the separator before page p+1
    parts = doc.text.split(PAGE_SEPARATOR)
    assert len(parts) == doc.n_pages
    for p, part in enumerate(parts, 1):
        s = doc.page_starts[p - 1]
        assert doc.text[s:s + len(part)] == part
        if part:
            assert doc.page_of(s) == p and doc.page_of(s + len(part) - 1) == p


def test_expectations_cover_the_corpus(expectations):
    assert set(expectations) == {key(p, pw) for p, pw in cases()}


def test_page_counts_match_the_manifest(expectations):
    # poppler's page counts (manifest) agree with ours wherever we yield text
    pages = manifest_pages()
    for k, want in expectations.items():
        if want["outcome"] == "text":
            assert want["pages"] == pages[k.split(" [")[0]], k


def test_reference_text_of_crazyones():
    doc = load(str(CORPUS / "pypdf-resources" / "crazyones.pdf"))
    ref = (CORPUS / "pypdf-resources" / "crazyones.txt").read_text(encoding="utf-8")
    assert " ".join(doc.text.split()) == " ".join(ref.split())


def test_wrong_password_for_the_known_file():
    with pytest.raises(LongdocError, match="wrong password"):
        load(str(CORPUS / "pypdf-resources" / "encrypted-file.pdf"), password="qwerty")
    assert load(str(CORPUS / "pypdf-resources" / "encrypted-file.pdf"), password="test").text.strip()


@pytest.mark.skipif(not os.environ.get("LONGDOC_SLOW"), reason="slow (35-90 s here): set LONGDOC_SLOW=1")
def test_real_contract_and_filing_pdfs():
    """The CUAD and FinanceBench PDFs (up to 96 pages) all load, with pypdf's page count."""
    from pypdf import PdfReader

    files = sorted((SHARED / "data" / "cuad" / "pdf").glob("*.pdf")) + \
        sorted((SHARED / "data" / "financebench" / "pdfs").glob("*.pdf"))
    assert files
    for f in files:
        doc = load(str(f))
        assert doc.n_pages == len(PdfReader(str(f)).pages) and len(doc.text) > 1000


if __name__ == "__main__" and "--write" in sys.argv:
    out = {}
    for p, pw in cases():
        got = observe(p, pw)
        out[key(p, pw)] = ({"outcome": "text", "pages": got["pages"]} if got["outcome"] == "text"
                           else {"outcome": "error", "reason": got["reason"]})
    EXPECTATIONS.write_text(json.dumps(out, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                            encoding="utf-8")
    print(f"wrote {len(out)} expectations to {EXPECTATIONS}")
