"""The question-level answer head on short documents (rank.SHORT_SEGMENTS): a note of one to a few
passages whose passage holds the answer is answered without --threshold, and one that does not is
still answered with nothing. Unit tests on the head; the end-to-end ones load the bundled MiniLM."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from longdoc.tasks import rank
from longdoc.tasks.rank import ANSWER_FEATURES, SHORT_SEGMENTS, Ranker


def _ranker(short: bool = True) -> Ranker:
    n = len(ANSWER_FEATURES)
    return Ranker(np.zeros(len(rank.FEATURES)), 0.0, np.full(n, 0.5), -2.0, 0.3, {},
                  np.full(n, 1.5) if short else None, 1.0)


def _scores(S: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (rng.uniform(0, 1, (2, S)), rng.uniform(-0.2, 0.7, (2, S)), rng.uniform(0, 3, (2, S)),
            rng.uniform(0, 0.7, 2))


def test_short_documents_are_judged_by_the_short_head():
    r, rng = _ranker(), np.random.default_rng(0)
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))
    for S in range(1, SHORT_SEGMENTS + 3):
        prob, dense, lex, ident = _scores(S, rng)
        x = rank.answer_features(prob, dense, lex, ident)
        want = sig(x @ r.short_answer_weights + r.short_answer_bias) if S <= SHORT_SEGMENTS \
            else sig(x @ r.answer_weights + r.answer_bias)
        assert r.answerable(prob, dense, lex, ident) == pytest.approx(want), S
    # without a short head (a ranker.json from before it), every length gets the one head
    prob, dense, lex, ident = _scores(1, rng)
    old = _ranker(short=False)
    assert old.answerable(prob, dense, lex, ident) == pytest.approx(
        sig(rank.answer_features(prob, dense, lex, ident) @ old.answer_weights + old.answer_bias))


def test_ranker_json_round_trip_with_and_without_the_short_head(tmp_path):
    p = tmp_path / "ranker.json"
    r = _ranker()
    r.save(p)
    d = json.loads(p.read_text())
    assert d["answer_short"]["max_segments"] == SHORT_SEGMENTS
    back = Ranker.load(p)
    assert np.array_equal(back.short_answer_weights, r.short_answer_weights)
    assert back.short_answer_bias == r.short_answer_bias and back.answer_threshold == r.answer_threshold
    del d["answer_short"]
    p.write_text(json.dumps(d))
    assert Ranker.load(p).short_answer_weights is None
    # weights fitted through other identity questions are refused, as weights of other features are
    d["identity_questions"] = ["What is this?"]
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="do not match"):
        Ranker.load(p)


def test_the_opening_counts_only_through_the_identity_score():
    """The lead and position priors act through how much the question asks about the document itself:
    a question with identity 0 gets the same features for the opening as for any other passage of the
    same scores, and a question with identity 1 gets the lead columns in full."""
    S, rng = 6, np.random.default_rng(1)
    dense, lex = rng.uniform(-0.2, 0.7, (2, S)), rng.uniform(0, 3, (2, S))
    spans = [(i * 100, i * 100 + 90) for i in range(S)]
    f = rank.features(dense, lex, spans, 600, identity=np.array([0.0, 1.0]))
    col = {name: f[..., i] for i, name in enumerate(rank.FEATURES)}
    assert not col["lead_identity"][0].any() and not col["position_identity"][0].any()
    assert not col["dense_z_lead_identity"][0].any()
    assert col["lead_identity"][1].tolist() == [1.0] * rank.LEAD_PASSAGES + [0.0] * (S - rank.LEAD_PASSAGES)
    assert np.allclose(col["position_identity"][1], col["position"][1])
    vecs = np.eye(4)[:2]  # two questions, each as close as can be to one of the identity questions
    assert rank.identity(vecs, np.eye(4)[[1, 2]]).tolist() == [0.0, 1.0]


def test_shipped_head_answers_a_one_passage_note_that_holds_the_answer():
    """The scores `ask` computes with the bundled MiniLM for the note "This Agreement shall be
    governed by the laws of the State of New York." (one passage). The head fitted on whole
    contracts scored the first 0.099 against its cut of 0.205 (nothing answered): with one passage
    every margin is 0, which it read as "nothing stands out". (Passage probabilities as the head
    gated by the identity score gives them.)"""
    r = Ranker.load()
    assert r.short_answer_weights is not None
    holds = r.answerable(np.array([[0.425]]), np.array([[0.419]]), np.array([[0.230]]),
                         np.array([0.275]))  # governing law clause?
    absent = r.answerable(np.array([[0.033]]), np.array([[0.021]]), np.array([[0.0]]),
                          np.array([0.142]))  # how much does parking cost?
    assert holds[0] >= r.answer_threshold > absent[0]


NOTE = "This Agreement shall be governed by the laws of the State of New York.\n"
MEMO = """MEMORANDUM

To: All engineering staff. From: Facilities. Re: Office move. The Berlin office moves to the new building at Alexanderplatz 7 on March 3. Please pack your desks by February 28; movers arrive at 8 am.

The server room will be offline from March 1 to March 3. The on-call engineer during the move is Dana Kim, reachable at extension 4412. Backups run as usual on the night of February 28.

Parking at the new building costs 40 euros a month; register with reception by March 10. Questions go to facilities@example.com.
"""


def _ask(path, question):
    r = subprocess.run([sys.executable, "-m", "longdoc", "ask", str(path), question, "--json", "-k", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)[0]["results"]


@pytest.mark.model
@pytest.mark.parametrize("text,question,needle", [
    (NOTE, "governing law clause?", "New York"),
    (NOTE, "which law governs this agreement?", "New York"),
    (MEMO, "who is the on-call engineer?", "Dana Kim"),
], ids=["note-law-clause", "note-which-law", "memo-on-call"])
def test_short_document_that_holds_the_answer_answers_without_threshold(tmp_path, text, question, needle):
    p = tmp_path / "note.txt"
    p.write_text(text, encoding="utf-8")
    rc, hits = _ask(p, question)
    assert rc == 0 and needle in hits[0]["text"]


@pytest.mark.model
@pytest.mark.parametrize("text,question", [(NOTE, "how much does parking cost?"), (MEMO, "governing law clause?")],
                         ids=["note-parking", "memo-law-clause"])
def test_short_document_without_the_answer_still_answers_nothing(tmp_path, text, question):
    p = tmp_path / "note.txt"
    p.write_text(text, encoding="utf-8")
    assert _ask(p, question) == (1, [])


def test_eval_excerpt_holds_the_clause_and_is_a_few_whole_passages():
    from longdoc.eval.cuad import EXCERPT_SEGMENTS, Contract, _excerpt

    text = "".join(f"{i}. Clause number {i} says something about topic {i}.\n\n" for i in range(1, 21))
    segs, pos = [], 0
    for i in range(1, 21):
        s = text.index(f"{i}. Clause", pos)
        e = text.index("\n\n", s)
        segs.append((s, e))
        pos = e
    gs = text.index("topic 13")
    c = Contract("doc", text, "t", gold={"Thirteen": [(gs, gs + 8)]}, negatives=["Other"])
    for ci in range(20):
        for cat, qi in (("Thirteen", 0), ("Other", 1)):
            ex = _excerpt(c, segs, cat, ci, qi)
            assert ex == _excerpt(c, segs, cat, ci, qi)  # deterministic
            a = text.index(ex)
            inside = [i for i, (s, e) in enumerate(segs) if a <= s and e <= a + len(ex)]
            # whole consecutive passages, from the start of the first to the end of the last
            assert 1 <= len(inside) <= max(EXCERPT_SEGMENTS)
            assert (segs[inside[0]][0], segs[inside[-1]][1]) == (a, a + len(ex))
            if cat == "Thirteen":
                assert "topic 13" in ex


def test_eval_reads_cuads_category_descriptions(tmp_path):
    """--queries description: CUAD's CSV labels every cell ("Category: ...", "Description: ..."),
    starts with a byte-order mark, and spells some names in other case than labels.dev.jsonl."""
    from longdoc.eval.cuad import descriptions

    (tmp_path / "category_descriptions.csv").write_text(
        "\ufeffCategory (incl. context and answer),Description,Answer Format,Group\n"
        "Category: Parties,Description: The two or more parties who signed the contract,"
        "Answer Format: Entity or individual names,Group: -\n"
        'Category: IP Ownership Assignment,"Description: Does intellectual property created by one party '
        'become the property of the counterparty, either per the terms of the contract or upon the '
        'occurrence of certain events? ",Answer Format: Yes/No,Group: 3\n', encoding="utf-8")
    d = descriptions(tmp_path)
    assert d["parties"] == "The two or more parties who signed the contract"
    assert d["ip ownership assignment"].startswith("Does intellectual property") and d["ip ownership assignment"].endswith("events?")


def test_eval_folds_related_categories_together(tmp_path):
    """The 'new questions' row holds out CUAD's groups of related categories together (group "-":
    each category on its own), so a head is never scored on a sibling of what it was fitted on."""
    from longdoc.eval.cuad import FOLDS, category_folds

    rows = [("Document Name", "-"), ("Agreement Date", "1"), ("Effective Date", "1"), ("Expiration Date", "1"),
            ("Cap on Liability", "6"), ("Uncapped Liability", "6"), ("Parties", "-"), ("Insurance", "-"),
            ("Audit Rights", "5"), ("Governing Law", "-"), ("Post-Termination Services", "5")]
    (tmp_path / "category_descriptions.csv").write_text(
        "\ufeffCategory (incl. context and answer),Description,Answer Format,Group\n"
        + "".join(f"Category: {c},Description: d,Answer Format: a,Group: {g}\n" for c, g in rows), encoding="utf-8")
    cats = [c.title() for c, _ in rows]  # labels.dev.jsonl spells some names in another case
    f = dict(zip(cats, category_folds(tmp_path, cats)))
    assert f["Agreement Date"] == f["Effective Date"] == f["Expiration Date"]
    assert f["Cap On Liability"] == f["Uncapped Liability"] and f["Audit Rights"] == f["Post-Termination Services"]
    assert set(f.values()) == set(range(FOLDS))  # 8 units over 5 folds: every fold holds out something
