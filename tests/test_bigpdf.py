"""longdoc.eval.bigpdf: the large-PDF builder used for the load and sharding runs."""
from pathlib import Path

from pypdf import PdfReader

from longdoc.eval.bigpdf import build
from longdoc.sources import load

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_pages_repeat_in_order_and_load_with_page_numbers(tmp_path):
    src = EXAMPLES / "distributor-agreement.pdf"
    pages = len(PdfReader(src).pages)
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\nnot a pdf")  # skipped, named on stderr
    out = tmp_path / "big.pdf"
    assert build(out, [src, broken], repeat=2) == 2 * pages
    doc = load(str(out))
    assert doc.n_pages == 2 * pages and doc.page_of(len(doc.text) - 1) == 2 * pages
    ps = doc.page_starts
    for p in (0, 1, pages - 2):  # the second copy repeats the first, page for page
        assert doc.text[ps[p]:ps[p + 1]] == doc.text[ps[pages + p]:ps[pages + p + 1]]
    assert doc.text[ps[0]:ps[1]].strip()
