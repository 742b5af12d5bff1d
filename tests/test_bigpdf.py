"""longdoc.eval.bigpdf: the large-PDF builder used for the load and sharding runs."""
from pathlib import Path

from pypdf import PdfReader

from longdoc.eval.bigpdf import build
from longdoc.sources import load

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_pages_repeat_in_order_and_load_with_page_numbers(tmp_path):
    src = sorted(EXAMPLES.glob("*.pdf"))
    assert src, "examples/ has no PDF"
    pages = [len(PdfReader(p).pages) for p in src]
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\nnot a pdf")
    out = tmp_path / "big.pdf"
    assert build(out, [*src, broken], repeat=2) == 2 * sum(pages)
    doc = load(str(out))
    first = load(str(src[0]))
    # the first input's text opens the output, and the last page number is the page count
    assert doc.text.startswith(first.text[:2000])
    assert doc.n_pages == 2 * sum(pages)
    assert doc.page_of(len(doc.text) - 1) == 2 * sum(pages)
