"""`python -m longdoc.eval.pdf_snapshot`: a snapshot of built PDFs, and the diff of two snapshots."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from test_sources_pdf import make_pdf  # noqa: E402

from longdoc.eval.pdf_snapshot import diff, main  # noqa: E402


def test_snapshot_and_diff(tmp_path, capsys):
    (tmp_path / "pdfs").mkdir()
    (tmp_path / "pdfs" / "a.pdf").write_bytes(make_pdf([["Payment terms apply."]]))
    (tmp_path / "pdfs" / "b.pdf").write_bytes(make_pdf([["Exhibit B."], None]))
    (tmp_path / "pdfs" / "c.pdf").write_bytes(b"%PDF-1.4 broken")
    out = tmp_path / "before.json"
    assert main([str(out), str(tmp_path / "pdfs")]) == 0
    before = json.loads(out.read_text(encoding="utf-8"))
    a, b, c = (before[str(tmp_path / "pdfs" / n)] for n in ("a.pdf", "b.pdf", "c.pdf"))
    assert a["chars"] == len("Payment terms apply.\n") and a["pages"] == 1 and a["warnings"] == []
    assert b["warnings"] == ["page 2 has no text layer (scanned?); OCR is not done"]
    assert "cannot read PDF" in c["error"]
    assert diff(before, before)[-1].startswith("3 files, 3 with the same text or error")

    after = json.loads(json.dumps(before))
    after[str(tmp_path / "pdfs" / "a.pdf")]["sha256"] = "0" * 64
    after[str(tmp_path / "pdfs" / "b.pdf")]["warnings"] = ["another"]
    lines = diff(before, after)
    assert lines[:-1] == [f"{tmp_path / 'pdfs' / 'a.pdf'}: text changed (21 -> 21)",
                          f"{tmp_path / 'pdfs' / 'b.pdf'}: - page 2 has no text layer (scanned?); OCR is not done",
                          f"{tmp_path / 'pdfs' / 'b.pdf'}: + another"]
    assert lines[-1].startswith("3 files, 2 with the same text or error")
