import io
import json

from longdoc import render
from longdoc.results import Answer, Hit

HIT = Hit(path="c.pdf", char_start=10, char_end=60, page=3, line_start=7, line_end=9, score=0.8123,
          text="This Agreement shall be governed by\nthe laws of Delaware.", label="12.3")
ANSWERS = [Answer("governing law clause?", [HIT], heat=[0.1, 0.5, 0.9])]


def test_rich_golden():
    buf = io.StringIO()
    out = render.console(color="never", width=80, file=buf)
    render.answers_rich(ANSWERS, out)
    assert buf.getvalue() == (
        "governing law clause?\n"
        "  map  ▄█  (pages)\n"
        "  c.pdf:7-9  p.3  0.812  12.3\n"
        "    This Agreement shall be governed by the laws of Delaware.\n"
        "\n"
    )


def test_highlight_marks_stemmed_question_words():
    t = render.highlight("governed by the laws", render.query_terms("governing law clause?"))
    styled = [t.plain[s.start:s.end] for s in t.spans]
    assert styled == ["governed", "laws"]


def test_plain_is_grep_shaped():
    buf = io.StringIO()
    render.answers_plain(ANSWERS, buf)
    assert buf.getvalue() == "c.pdf:7-9:p.3\t0.812\tThis Agreement shall be governed by the laws of Delaware.\n"


def test_json_contract():
    buf = io.StringIO()
    render.answers_json(ANSWERS, buf)
    data = json.loads(buf.getvalue())
    assert data == [{"question": "governing law clause?", "results": [{
        "path": "c.pdf", "char_start": 10, "char_end": 60, "page": 3, "line_start": 7, "line_end": 9,
        "score": 0.8123, "text": HIT.text, "label": "12.3"}]}]
    buf = io.StringIO()
    render.answers_jsonl(ANSWERS, buf)
    line = json.loads(buf.getvalue())
    assert line["question"] == "governing law clause?" and line["char_start"] == 10
