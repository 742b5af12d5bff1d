"""The FinanceBench evaluation's scoring: gold pages from the dataset, and page hits by span."""
from longdoc.eval import financebench as fb
from longdoc.sources.document import Document


def test_hit_is_a_unit_that_spans_a_gold_page():
    text = "page one text\fpage two text\fpage three text"
    starts = (0, text.index("page two"), text.index("page three"))
    doc = Document("f.pdf", text, "pdf", page_starts=starts)
    spans = [(0, 5), (starts[1] - 3, starts[1] + 4), (starts[2], len(text))]  # p.1, p.1-2, p.3
    t = fb.Tally()
    t.add(doc, spans, [0, 1, 2], {2})  # the second unit crosses into page 2
    t.add(doc, spans, [0, 2], {2})  # no unit on page 2
    t.add(doc, spans, [2, 0], {3})
    row = t.row()
    assert row["pairs"] == 3 and row["R@1"] == 1 / 3 and row["R@3"] == 2 / 3
    assert abs(row["MRR@10"] - (1 / 2 + 1) / 3) < 1e-12
    assert fb._page_spans(doc) == [(0, starts[1]), (starts[1], starts[2]), (starts[2], len(text))]


def test_questions_carry_one_based_gold_pages(shared_data):
    qs = fb.load_questions(shared_data / "financebench")
    assert len(qs) == 18 and all(q["pdf"].exists() for q in qs)
    for q in qs:
        assert q["gold_pages"] == sorted({e["evidence_page_num"] + 1 for e in q["evidence"]})
