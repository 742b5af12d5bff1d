"""xref: reference parsing and resolution, defined terms, related clauses, renderers and CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from longdoc.cli import cli
from longdoc.sources.document import Document
from longdoc.tasks.xref import defined_terms, related_clauses, roman_to_int, xref

CONTRACT = """SUPPLY AGREEMENT

This Supply Agreement (the "Agreement") is made by Acme Corp. ("Supplier") and Beta LLC ("Buyer").

ARTICLE I
DEFINITIONS

1.1 "Confidential Information" means any information disclosed by a Party and marked confidential.

1.2 "Products" shall mean the goods listed in Exhibit B.

ARTICLE II
SUPPLY

2.1 Orders. Buyer shall order Products as set out in Section 2.2(b) and Schedule 2.

2.2 Delivery. Supplier shall deliver the Products as follows:

(a) within ten days of an order; and

(b) to the site named by Buyer, subject to paragraph (a) above.

2.3 Price. The price is stated in Exhibit C. Article IV governs disputes about the price.

ARTICLE III
TERM

3.1 Term. This Agreement lasts two years unless ended under Section 9.9 or Section 3.2.

3.2 Termination. Either Party may terminate under Section 365(n) of the Bankruptcy Code. The Steering Committee shall meet and the Steering Committee shall decide.

ARTICLE IV
DISPUTES

4.1 Any dispute about Confidential Information shall be settled under Sections 1.1 and 2.1.

EXHIBIT B
PRODUCTS

Widgets and gadgets.
"""


def _doc(text=CONTRACT, path="contract.txt"):
    return Document(path, text, "text")


def _resolved(report):
    return {(r.text, r.status, r.target.label if r.target else None) for r in report.references}


def test_references_resolve_to_their_clauses():
    r = xref(_doc(), related=False)
    got = _resolved(r)
    assert ("Section 2.2(b)", "resolved", "2.2(b)") in got
    assert ("Exhibit B", "resolved", "EXHIBIT B") in got
    assert ("Article IV", "resolved", "ARTICLE IV") in got
    assert ("Section 3.2", "resolved", "3.2") in got
    assert ("Sections 1.1", "resolved", "1.1") in got
    assert ("2.1", "resolved", "2.1") in got  # second item of the list "Sections 1.1 and 2.1"
    # "paragraph (a) above" is the item (a) of the clause it is written in
    para = next(x for x in r.references if x.text == "paragraph (a)")
    assert para.status == "resolved" and para.target.key == "2.2(a)"
    assert para.target.place.start < para.place.start


def test_missing_targets_are_unresolved_and_other_instruments_external():
    r = xref(_doc(), related=False)
    status = {x.text: x.status for x in r.references}
    assert status["Section 9.9"] == "unresolved"
    assert status["Schedule 2"] == "unresolved"
    assert status["Exhibit C"] == "unresolved"
    assert status["Section 365(n)"] == "external"
    # headings are anchors, never references to themselves
    assert not any(x.text.upper() == x.text and x.text.startswith(("ARTICLE", "EXHIBIT")) for x in r.references)


def test_reference_source_is_the_enclosing_clause():
    r = xref(_doc(), related=False)
    ref = next(x for x in r.references if x.text == "Article IV")
    assert ref.source.label == "2.3"


@pytest.mark.parametrize("text,key", [
    ("as set out in Section 12.3(b)(ii) of this Agreement.", "12.3(b)(ii)"),
    ("under Article XIV hereof.", "XIV"),
    ("see clause 7 below.", "7"),
    ("in Schedule A-1.", "A-1"),
    ("in § 4.", "4"),
])
def test_reference_forms(text, key):
    r = xref(_doc("1. Heading text\n\n" + text), related=False)
    assert [x.key for x in r.references] == [key]


LETTERED = """DISTRIBUTOR AGREEMENT

9. Information

A) The Distributor will supply monthly sales prospects.

D) The Distributor will supply an annual sales plan.

10. Reports

The Distributor files its reports with the regulator.

12. Payment

(a) Invoices are due in thirty days.

(b) Late payments bear interest.

14. Minimum Purchase

Quantities are agreed in the sales plan noted in clause 9D, paid under Section 12b, reported
under Section 10K, listed in Schedule 2A and clause 9F, and set out in Section 12.1c.
"""


def test_a_number_run_into_a_letter_is_the_lettered_item_of_that_clause():
    """Lucid's "clause 9D" names item D) of clause 9 and was unresolved; "Section 12b" was not read
    as a reference at all. Without such an item the reference falls back to its clause (partial);
    appended documents ("Schedule 2A") keep their key as printed."""
    got = _resolved(xref(_doc(LETTERED), related=False))
    assert ("clause 9D", "resolved", "9(D)") in got
    assert ("Section 12b", "resolved", "12(b)") in got
    assert ("Section 10K", "partial", "10") in got  # no item (k) in clause 10
    assert ("clause 9F", "partial", "9") in got
    assert ("Section 12.1c", "partial", "12") in got
    assert ("Schedule 2A", "unresolved", None) in got


def test_real_cuad_contract_lettered_reference(shared_data):
    from longdoc.sources import load

    paths = sorted((shared_data / "cuad").glob("*/LUCIDINC_04_15_2011-EX-10.9-DISTRIBUTOR AGREEMENT.*"))
    assert [p.suffix for p in paths] == [".pdf", ".txt"]
    for path in paths:
        ref = next(x for x in xref(load(path), related=False).references if x.text == "clause 9D")
        assert (ref.status, ref.target.label) == ("resolved", "9(D)"), path.suffix
        assert "supply Lucid, on an annual" in ref.target.title, path.suffix


def test_a_bare_letter_after_section_is_not_a_reference():
    r = xref(_doc("The Section Headings are for convenience. See section A of the brochure."), related=False)
    assert r.references == []


def test_roman():
    assert [roman_to_int(s) for s in ("I", "IV", "ix", "XIV", "XL")] == [1, 4, 9, 14, 40]
    assert roman_to_int("B") is None


def test_defined_terms_uses_unused_and_undefined():
    terms, undefined = defined_terms(_doc())
    by = {t.term: t for t in terms}
    assert set(by) == {"Agreement", "Supplier", "Buyer", "Confidential Information", "Products"}
    assert len(by["Confidential Information"].uses) == 1  # the definition itself is not a use
    assert len(by["Products"].uses) == 2
    assert by["Products"].definition.line == 10
    assert by["Buyer"].definition_text.startswith("This Supply Agreement")
    assert [u.term for u in undefined] == ["Steering Committee"]


def test_a_possessive_is_a_use_of_its_owner_not_an_undefined_term():
    """"the Licensee's rights" is a use of the defined "Licensee"; it was listed as an undefined term
    "Licensee's", and "the Distributor's records" as a term apart from "the Distributor"."""
    text = ('Acme Corp. ("Licensor") and Beta LLC ("Licensee") agree. '
            "The Licensee's rights are personal. The Licensee’s payments are due. The Licensee's Affiliates may audit. The Distributor's records "
            "and the Distributors' reports are kept. The Distributor shall report.")
    terms, undefined = defined_terms(_doc(text))
    assert {t.term: len(t.uses) for t in terms} == {"Licensor": 0, "Licensee": 3}
    assert [(u.term, len(u.uses)) for u in undefined] == [("Distributor", 2)]


def test_definition_forms():
    text = ('Alpha Inc. (hereinafter referred to as "Alpha") and Beta (hereinafter "Beta") agree. '
            'The "Term" shall have the meaning given below. All goods (collectively, together with the '
            'spares, the "Goods") ship. Nothing here (as defined in the "Securities Act") defines a term. '
            'Alpha ships Goods during the Term. Beta pays.')
    terms, _ = defined_terms(_doc(text))
    assert [t.term for t in terms] == ["Alpha", "Beta", "Term", "Goods"]
    assert {t.term for t in terms if not t.uses} == set()


@pytest.mark.parametrize("open_, close", [("'", "'"), ("‘", "’")], ids=["ascii", "curly"])
def test_terms_defined_in_single_quotes(open_, close):
    """Lucid's distributor agreement defines (the 'Agreement') and ('Distributor'), curly in its PDF;
    only double quotes were read, so "Distributor" was listed as used but never defined. Quotes pair:
    an apostrophe inside a word does not end a single-quoted term, and a possessive's apostrophe
    ("Distributors' reports") opens none."""
    q = lambda t: f"{open_}{t}{close}"
    text = (f"This Distributor Agreement (the {q('Agreement')}) is between Lucid Inc. and Beta LLC "
            f"({q('Distributor')}). {q('Licensee’s Products')} means goods. "
            f"Lucid's {q('Net Sales')} shall mean sales. The Distributor shall report. The Distributor's "
            "records and the Distributors' reports are kept under this Agreement. "
            f"The Distributor sells Licensee’s Products. Net Sales are reported.")
    terms, undefined = defined_terms(_doc(text))
    assert {t.term: len(t.uses) for t in terms} == {"Agreement": 2, "Distributor": 5, "Licensee’s Products": 1,
                                                    "Net Sales": 1}
    assert undefined == []
    # an apostrophe in a word ('W2E's technology') neither opens nor closes a term
    terms, _ = defined_terms(_doc("W2E Technology means 'W2E's proprietary technology for waste."))
    assert [t.term for t in terms] == []


def test_double_quoted_terms_keep_their_apostrophes():
    text = ('“Licensee’s Products” means goods. "Buyer\'s Account" means an account. '
            "Licensee’s Products and the Buyer's Account are listed.")
    terms, _ = defined_terms(_doc(text))
    assert {t.term: len(t.uses) for t in terms} == {"Licensee’s Products": 1, "Buyer's Account": 1}


def test_real_cuad_contract_with_single_quoted_definitions(shared_data):
    from longdoc.sources import load

    paths = sorted((shared_data / "cuad").glob("*/LUCIDINC_04_15_2011-EX-10.9-DISTRIBUTOR AGREEMENT.*"))
    assert [p.suffix for p in paths] == [".pdf", ".txt"]
    for path in paths:
        r = xref(load(path), related=False)  # ASCII quotes in the .txt, curly in the .pdf
        terms = {t.term: t for t in r.terms}
        assert {"Agreement", "Distributor"} <= set(terms), path.suffix
        assert len(terms["Distributor"].uses) > 50
        assert "Distributor" not in {u.term for u in r.undefined}


def test_longest_term_wins():
    text = ('"Information" means facts. "Confidential Information" means secrets. '
            "Confidential Information is kept. Information is shared.")
    terms, _ = defined_terms(_doc(text))
    by = {t.term: len(t.uses) for t in terms}
    assert by == {"Information": 1, "Confidential Information": 1}


def test_related_clauses_far_apart_not_duplicates_not_hubs():
    words = " ".join(f"w{i}" for i in range(20))
    texts = [f"alpha {words}", "beta " + " ".join(f"y{i}" for i in range(20)), "gamma " + " ".join(f"v{i}" for i in range(20)),
             "delta " + " ".join(f"u{i}" for i in range(20)), f"alpha {words}"]
    text, spans = "", []
    for t in texts:
        s = len(text)
        text += t + "\n" + " " * 3000 + "\n"
        spans.append((s, s + len(t)))
    V = np.array([[1, 0, 0], [0.9, 0.436, 0], [0.1, 0.995, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    doc = _doc(text)
    pairs = related_clauses(doc, spans, [None] * 5, V, min_gap=1000, min_similarity=0.3, hub_k=1)
    got = {(p.a.start, p.b.start) for p in pairs}
    assert (spans[0][0], spans[4][0]) not in got  # identical text: a near-duplicate
    assert (spans[0][0], spans[1][0]) in got or (spans[1][0], spans[4][0]) in got
    assert all(p.distance_chars >= 1000 for p in pairs)
    assert all(spans[3][0] not in (p.a.start, p.b.start) for p in pairs)  # nothing like it
    # too close: nothing
    assert related_clauses(doc, spans, [None] * 5, V, min_gap=10 ** 6) == []
    # top caps the pairs, and top = 0 asks for none
    assert pairs and related_clauses(doc, spans, [None] * 5, V, min_gap=1000, min_similarity=0.3, hub_k=1,
                                     top=0) == []
    assert len(related_clauses(doc, spans, [None] * 5, V, min_gap=1000, min_similarity=0.3, hub_k=1, top=1)) == 1


def test_real_cuad_contract(shared_data):
    path = shared_data / "cuad" / "txt" / "ADIANUTRITION,INC_04_01_2005-EX-10.D2-RESELLER AGREEMENT.txt"
    from longdoc.sources import load

    r = xref(load(path), related=False)
    got = _resolved(r)
    assert ("Section 4.4", "resolved", "4.4") in got
    assert ("SECTION 4.2", "resolved", "4.2") in got
    # the exhibit is referred to but not attached to the filing
    assert {x.status for x in r.references if x.text == "Exhibit A"} == {"unresolved"}
    terms = {t.term for t in r.terms}
    assert {"Documentation", "Third Parties", "Per Copy Fees", "Confidential Information", "Property"} <= terms


def test_cli_json_dot_and_plain(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text(CONTRACT, encoding="utf-8")
    runner = CliRunner()
    res = runner.invoke(cli, ["xref", str(f), "--no-related", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data[0]["counts"]["unresolved"] == 3 and data[0]["related"] is None
    ref = next(x for x in data[0]["references"] if x["text"] == "Section 2.2(b)")
    assert ref["target"]["line"] == CONTRACT[:CONTRACT.index("(b) to the site")].count("\n") + 1
    res = runner.invoke(cli, ["xref", str(f), "--no-related", "--format", "dot"])
    assert res.exit_code == 0
    assert res.output.startswith("digraph ") and res.output.rstrip().endswith("}")
    assert '[label="Section 2.2(b)"]' in res.output and "color=red" in res.output
    res = runner.invoke(cli, ["xref", str(f), "--no-related", "--format", "plain"])
    assert f"{f}:" in res.output and "\tref\tSection 9.9\tunresolved" in res.output


def test_cli_related_with_tiny_model(tmp_path, tiny_model_dir):
    f = tmp_path / "c.txt"
    f.write_text(CONTRACT, encoding="utf-8")
    res = CliRunner().invoke(cli, ["xref", str(f), "--model", str(tiny_model_dir), "--json", "--min-gap", "100",
                                   "--min-similarity", "-1"])
    assert res.exit_code == 0, res.output
    rel = json.loads(res.output)[0]["related"]
    assert isinstance(rel, list) and rel
    assert all(p["distance_chars"] >= 100 and -1 <= p["similarity"] <= 1 for p in rel)


def test_cli_errors_exit_2_one_line(tmp_path):
    from longdoc.cli import main

    code = tmp_path / "x.py"
    code.write_text("def f():\n    return 1\n")
    doc = tmp_path / "c.txt"
    doc.write_text("1. Term. This Agreement lasts a year.\n")
    for args in (["xref", str(tmp_path / "missing.txt"), "--no-related"], ["xref", str(code), "--no-related"],
                 ["xref", str(doc), "--min-similarity", "nan"], ["xref", str(doc), "--min-similarity", "5"]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2


def test_cli_errors_are_one_line(tmp_path, capfd):
    from longdoc.cli import main

    with pytest.raises(SystemExit):
        main(["xref", str(tmp_path / "missing.txt"), "--no-related"])
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
