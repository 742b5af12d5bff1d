"""`xref`: the clause graph of one document.

Three kinds of link, each a plain function over a ``Document`` (no I/O, no printing):

- **explicit references** ("Section 4.2(b)", "Article IV", "clause 7", "Schedule 2", "Exhibit B",
  "paragraph (c) above") found by pattern and resolved to the structural clause they name
  (``longdoc.segment.clauses``: numbered clauses, article markers, headings) or listed as unresolved;
  references to another instrument ("Section 365(n) of the Bankruptcy Code") are marked external;
- **defined terms** (``"Confidential Information" means ...``, ``(the "Licensed Product")``,
  ``(hereinafter "X")``, ``('Distributor')``) linked to their definition and every use; capitalised
  phrases used like defined terms but never defined; terms defined but never used;
- **related clauses**: segment pairs that are close in the encoder's space but far apart in the text
  (``related_clauses``, over ``longdoc.tasks.ask.Passages``), scored with a hubness correction so
  boilerplate that resembles everything does not crowd the list, near-duplicates excluded.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

import numpy as np

from longdoc.sources.document import Document, Segment

# ---------------------------------------------------------------------------------------------
# Patterns

_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
_NUM = r"\d{1,3}(?:\.\d{1,3})*[A-Za-z]?(?![\w])"  # 4 / 4.2 / 12.3.1 / 4A / 9d
_ROMAN = r"[IVXLC]{1,7}(?![\w])"
_LETTER = r"[A-Z](?:-\d{1,2})?(?![\w])"  # Exhibit B / Schedule A-1
_SUB = r"\((?:[a-z]{1,4}|[A-Z]{1,2}|\d{1,2})\)"  # (b) / (iv) / (A) / (3)

# Reference keywords -> the kind of target they name.
_KINDS = {
    "section": "section", "sections": "section", "sec.": "section", "secs.": "section", "§": "section",
    "§§": "section", "subsection": "section", "subsections": "section", "clause": "section",
    "clauses": "section", "paragraph": "section", "paragraphs": "section",
    "article": "article", "articles": "article",
    "exhibit": "exhibit", "exhibits": "exhibit", "schedule": "schedule", "schedules": "schedule",
    "annex": "annex", "annexes": "annex", "appendix": "appendix", "appendices": "appendix",
    "attachment": "attachment", "attachments": "attachment", "part": "part", "parts": "part",
}
_APPENDED = ("exhibit", "schedule", "annex", "appendix", "attachment")
_KEYWORD = (r"(?i:sections?|secs?\.|subsections?|clauses?|paragraphs?|articles?|exhibits?|schedules?|"
            r"annex(?:es)?|appendix|appendices|attachments?|parts?)(?![\w])|§§?")
_ITEM = rf"(?:{_NUM}|{_ROMAN}|{_LETTER})(?:{_SUB})*|(?:{_SUB})+"
_JOIN = r"(?:\s*(?:,\s*(?:and|or)\s+|,|\band\b|\bor\b|\bthrough\b|\bto\b|&)\s*|\s+[-–]\s+|–)"
_REF = re.compile(rf"(?P<kw>{_KEYWORD})[ \t]*(?:\n[ \t]*)?(?P<first>{_ITEM})(?P<more>(?:{_JOIN}(?:{_ITEM}))*)")
_ITEM_RX = re.compile(_ITEM)
# "... of the Securities Act" / "of the Bankruptcy Code" / "of the Distribution Agreement" (another
# instrument) vs "of this Agreement" (this one).
_EXTERNAL = re.compile(r"\s*(?:of|under|in)\s+(?:the\s+)?(?!this\b|these\b|hereof\b|herein\b)"
                       r"(?:[A-Z][\w.&'’-]*\s+){0,6}(?:Act|Code|Agreement|Regulations?|Rules?|Plan|"
                       r"Contract|Lease|Indenture|Convention|Law|Statutes?|Treaty|Charter|Bylaws|"
                       r"Certificate|Articles)\b")
_EXTERNAL_BEFORE = re.compile(r"(?:C\.F\.R\.?|U\.S\.C\.?|\bCode|\bTitle\s+\d+|\bChapter\s+[\dIVXLC]+|"
                              r"\bRegulations?|\bAct|(?P<caps>\b[A-Z]{2,6}))[,\s]*$")
_DIRECTION = re.compile(r"\s*(?:,\s*)?(above|below|hereof|herein|hereto|hereunder|of this Agreement)\b", re.I)

# "clause 9D", "Section 12b": a number run into one letter names a clause numbered "9D" where there
# is one, else the lettered item of clause 9 ("9(d)" / "9(D)"), else clause 9 itself (partial).
_LETTERED = re.compile(r"(?P<num>\d{1,3}(?:\.\d{1,3})*)(?P<letter>[A-Za-z])")

# Anchors that the segmenter labels: "12.3", "12.3(b)", "(b)", "ARTICLE IV", headings.
_NUM_LABEL = re.compile(r"^(?P<num>\d{1,3}(?:\.\d{1,3})*[A-Z]?)?(?P<subs>(?:\([^)]{1,4}\))*)$")
_ARTICLE_LABEL = re.compile(r"^(?:ARTICLES?|Article)\s+(?P<key>\d{1,3}|[IVXLCivxlc]{1,7}|[A-Z])\b")
_PART_HEADING = re.compile(r"^[ \t]*(?P<kw>EXHIBIT|Exhibit|SCHEDULE|Schedule|ANNEX|Annex|APPENDIX|Appendix|"
                           r"ATTACHMENT|Attachment|PART|Part)[ \t]+(?P<key>\d{1,3}(?:\.\d{1,3})*|"
                           r"[A-Z](?:-\d{1,2})?|[IVXLC]{1,7})\b(?P<rest>[^\n]*)$", re.M)
# A numbered clause run into the previous one on the same line ("... of Products. 2.6 Acceptance /
# Rejection. 2.6.1 All Products ..."): a multi-level number right after a sentence end, then a capital.
_INLINE_ANCHOR = re.compile(r"(?<=[.:;\]][ \t])(?:(?:Section|SECTION)[ \t]+)?(?P<num>\d{1,3}(?:\.\d{1,3})+)\.?[ \t]+"
                            r"(?=[A-Z\"“(])")
# A single-level number ("19.   Cost and Payment", "10. Confidentiality 10.1 Any ...") opens a clause
# when it starts a line, or, after a sentence end, when its first sub-clause ("10.1") follows soon.
_LINE_NUMBERED = re.compile(r"^[ \t]*(?:(?:Section|SECTION|Article|ARTICLE)[ \t]+)?(?P<num>\d{1,3})\.?[ \t]+(?=[A-Z])", re.M)
_INLINE_TOP = re.compile(r"(?<=[.:;\]][ \t])(?P<num>\d{1,2})\.[ \t]+(?=[A-Z])")
_TOC_LINE = re.compile(r"\.{4,}|\s\d{1,3}\s*$")

# Defined terms.
# A term is quoted in double quotes ("X", “X”) or in single quotes ('X', ‘X’). Quotes pair: inside
# single quotes an apostrophe between two letters ('Licensee's Products', ‘Licensee’s Products’) is
# part of the term, and a closing quote is one that no letter follows; an opening single quote is one
# that no letter precedes (not the apostrophe of "Distributors' Products"). Inside double quotes any
# apostrophe is the term's (“Licensee’s Products”).
_SQ_CHAR = r"(?:[^\"“”'‘’\n]|(?<=\w)['’](?=\w))"
_SQ_OPEN, _SQ_CLOSE = r"(?<!\w)['‘]", r"['’](?!\w)"
_QTERM = (rf"(?:(?P<dq>[\"“])|{_SQ_OPEN})(?P<term>[A-Z0-9](?(dq)[^\"“”\n]|{_SQ_CHAR}){{0,79}}?)[,.]?"
          rf"(?(dq)[\"”]|{_SQ_CLOSE})")
_QTERM_RX = re.compile(_QTERM)
_QUOTED = rf"(?:[\"“][^\"“”\n]{{1,80}}[\"”]|{_SQ_OPEN}{_SQ_CHAR}{{1,80}}{_SQ_CLOSE})"  # another term in a list
_MEANS = re.compile(
    rf"{_QTERM}(?=\s*(?:(?:,|or|and)\s*{_QUOTED}\s*)*\s*(?:\)\s*)?"
    r"(?::|shall\s+mean|means|mean\b|shall\s+have\s+the\s+meaning|has\s+the\s+meaning|have\s+the\s+meaning|"
    r"shall\s+refer\s+to|refers\s+to|shall\s+include|includes|is\s+defined\s+as|shall\s+be\s+defined\s+as))")
_CALLED = re.compile(rf"(?:defined\s+as|referred\s+to\s+(?:herein\s+)?as|hereinafter(?:\s+called)?|"
                     rf"called|known\s+as)\s*,?\s*(?:the\s+|a\s+|an\s+)?{_QTERM}", re.I)
_PAREN = re.compile(r"\(([^()\n]{0,200})\)")
# A parenthetical is a definition when, quoted terms aside, it holds only these words.
_FILLER = re.compile(
    r"^(?:\s|[,;:]|\b(?:the|a|an|each|any|collectively|individually|together|jointly|severally|"
    r"hereinafter|herein|hereafter|referred|to|as|called|and|or|also|being|respectively|with|its|"
    r"their|all|such|both|of|them|which|is|are|shall|be|singularly|separately|sometimes|"
    r"and/or|this|these|in|agreement)\b)*$", re.I)
_COLLECTIVE = re.compile(r"\s*(?:collectively|together|jointly|individually|each|all)\b", re.I)
# A sentence end: not after an abbreviation such as "Corp." / "Inc." / "No." / "U.S." / a single initial.
_SENTENCE_END = re.compile(r"(?<!\bInc)(?<!\bCorp)(?<!\bLtd)(?<!\bCo)(?<!\bNo)(?<!\bSt)(?<!\b[A-Z])"
                           r"[.;!?][\"”'’)]?\s+(?=[A-Z\"“'‘(])")
_DETERMINER = r"(?:the|such|any|each|all|said|no|its|their|other|every|applicable|that|this|these|those)"
_CAP_WORD = r"[A-Z][a-z][\w'’-]*"
# A possessive ending ("Licensee's", "Distributors’"): the phrase is its owner's use.
_POSSESSIVE = re.compile(r"(?:['’]s|(?<=s)['’])$")
_CANDIDATE = re.compile(rf"\b(?:{_DETERMINER}|The)[ \t]+(?P<term>{_CAP_WORD}(?:[ \t]+{_CAP_WORD}){{0,3}})")
# Capitalised for reasons other than being defined: structure words, months, days, common proper nouns.
_NOT_TERMS = frozenset(
    "Section Sections Article Articles Exhibit Exhibits Schedule Schedules Annex Appendix Attachment "
    "Paragraph Clause Part Subsection Agreement Amendment January February March April May June July "
    "August September October November December Monday Tuesday Wednesday Thursday Friday Saturday "
    "Sunday United States State Commonwealth County City Court Courts Republic Kingdom Government "
    "Internal Revenue Securities Exchange Commission Act Code Federal English Company Parties Party".split())


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Place:
    """A char span of the document with its page and line (1-based)."""

    start: int
    end: int
    line: int
    page: int | None

    def to_json(self) -> dict:
        d = {"char_start": self.start, "char_end": self.end, "line": self.line}
        if self.page is not None:
            d["page"] = self.page
        return d


@dataclass
class Anchor:
    """Something a reference can point at: a numbered clause, an article, an exhibit heading."""

    kind: str  # "section" | "article" | "exhibit" | "schedule" | "annex" | "appendix" | "attachment" | "part"
    key: str  # normalised: "4.2", "4.2(b)", "(b)", "4" (for ARTICLE IV), "B"
    label: str  # as the document prints it ("4.2", "ARTICLE IV", "EXHIBIT B")
    title: str  # the heading's first words
    place: Place
    toc: bool = False  # looks like a table-of-contents line


@dataclass
class Reference:
    """One explicit reference and what it resolved to."""

    text: str  # the reference as written, e.g. "Section 4.2(b)"
    kind: str
    key: str
    place: Place
    status: str  # "resolved" | "partial" (an enclosing clause was found) | "unresolved" | "external"
    target: Anchor | None = None
    source: Anchor | None = None  # the clause the reference is written in


@dataclass
class Term:
    term: str
    definition: Place
    definition_text: str  # the defining sentence, shortened
    uses: list[Place] = field(default_factory=list)
    redefined: list[Place] = field(default_factory=list)


@dataclass
class UndefinedTerm:
    term: str
    uses: list[Place]


@dataclass
class RelatedPair:
    a: Place
    b: Place
    a_label: str | None
    b_label: str | None
    similarity: float  # cosine of the two segment vectors
    score: float  # hubness-corrected similarity (CSLS) used for ranking
    distance_chars: int
    distance_pages: int | None
    a_text: str = ""
    b_text: str = ""


@dataclass
class XrefReport:
    path: str
    n_clauses: int
    anchors: list[Anchor]
    references: list[Reference]
    terms: list[Term]
    undefined: list[UndefinedTerm]
    related: list[RelatedPair] | None  # None when not computed (no model asked for)

    @property
    def unused(self) -> list[Term]:
        return [t for t in self.terms if not t.uses]

    def counts(self) -> dict:
        by = {s: sum(r.status == s for r in self.references) for s in ("resolved", "partial", "unresolved",
                                                                         "external")}
        return {"references": len(self.references), **by, "terms": len(self.terms),
                "unused_terms": len(self.unused), "undefined_terms": len(self.undefined),
                "related": None if self.related is None else len(self.related)}


def _place(doc: Document, s: int, e: int) -> Place:
    return Place(s, e, doc.line_of(s), doc.page_of(s))


def _short(s: str, limit: int = 160) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def roman_to_int(s: str) -> int | None:
    s = s.upper()
    if not s or any(c not in _ROMAN_VALUES for c in s):
        return None
    total = 0
    for i, c in enumerate(s):
        v = _ROMAN_VALUES[c]
        total += -v if i + 1 < len(s) and _ROMAN_VALUES[s[i + 1]] > v else v
    return total if total > 0 else None


# ---------------------------------------------------------------------------------------------
# Anchors


def find_anchors(doc: Document, clauses: list[Segment]) -> list[Anchor]:
    """Every place a reference could point at, in text order.

    Numbered clauses and article markers come from the segmenter's labels; exhibit / schedule /
    annex / appendix / attachment / part headings from a line that starts with the word and its key.
    """
    text = doc.text
    out: list[Anchor] = []
    for c in clauses:
        label = c.label or ""
        if c.kind not in ("clause", "heading", "section") or not label:
            continue
        first_line = text[c.start:text.find("\n", c.start, c.end) if "\n" in text[c.start:c.end] else c.end]
        toc = len(first_line) < 200 and bool(_TOC_LINE.search(first_line)) and c.end - c.start < 300
        m = _ARTICLE_LABEL.match(label)
        if m:
            key = m.group("key")
            n = int(key) if key.isdigit() else roman_to_int(key)
            title = _short(first_line[m.end():].strip(" .:-—\t"), 60)
            out.append(Anchor("article", str(n) if n else key.upper(), label, title, _place(doc, c.start, c.end), toc))
            continue
        m = _NUM_LABEL.match(label)
        if m and (m.group("num") or m.group("subs")):
            # the first words after the marker make the title: "4.2 Term." -> "Term"
            rest = re.sub(r"^\s*(?:section|sec\.|§)?\s*[\d.]+(?:\([^)]*\))*[.)]?\s*", "", first_line, flags=re.I)
            title = _short(re.split(r"(?<=\w\w)\.\s|(?<=[\w)])[:;]\s", rest, maxsplit=1)[0], 60)
            out.append(Anchor("section", label, label, title, _place(doc, c.start, c.end), toc))
    seen = {a.place.start for a in out}
    near = sorted(seen)

    have = {a.key for a in out}
    extra = list(_INLINE_ANCHOR.finditer(text))
    extra += [m for m in _LINE_NUMBERED.finditer(text) if m.group("num") not in have]
    extra += [m for m in _INLINE_TOP.finditer(text) if m.group("num") not in have
              and re.search(rf"\b{m.group('num')}\.1\b", text[m.end():m.end() + 400])]
    for m in sorted(extra, key=lambda m: m.start()):
        i = bisect.bisect_left(near, m.start() - 3)
        if i < len(near) and near[i] <= m.end() or m.start() in seen:
            continue  # the segmenter already has it
        end = text.find(". ", m.end(), m.end() + 120)
        title = _short(text[m.end():end if end != -1 else m.end() + 60], 60)
        out.append(Anchor("section", m.group("num"), m.group("num"), title, _place(doc, m.start(), m.end())))
        seen.add(m.start())
    for m in _PART_HEADING.finditer(text):
        kw = m.group("kw").lower()
        rest = m.group("rest").strip()
        # A heading, not a sentence that starts with "Exhibit B shall ...": upper-case word, or a line
        # with little else on it.
        if not (m.group("kw").isupper() or len(rest) <= 60) or rest[:1].islower():
            continue
        s = m.start("kw")
        if s in seen:
            continue
        key = m.group("key")
        kind = _KINDS[kw]
        if kind == "part" and roman_to_int(key):
            key = str(roman_to_int(key))
        toc = bool(_TOC_LINE.search(m.group(0)))
        out.append(Anchor(kind, key.upper(), _short(m.group(0).strip(), 40).split("  ")[0].strip(),
                          _short(rest.strip(" .:-—"), 60), _place(doc, s, m.end()), toc))
    out.sort(key=lambda a: a.place.start)
    return out


# ---------------------------------------------------------------------------------------------
# Explicit references


def _split_item(item: str) -> tuple[str, list[str]]:
    """"4.2(b)(i)" -> ("4.2", ["(b)", "(i)"]); "(c)" -> ("", ["(c)"])."""
    i = item.find("(")
    if i == -1:
        return item, []
    return item[:i], re.findall(r"\([^)]*\)", item[i:])


def find_references(doc: Document) -> list[tuple[int, int, str, str, bool]]:
    """Every explicit reference: (start, end, kind, item, external), lists expanded
    ("Sections 4.2 and 5.1" gives two, each spanning its own number; the first includes the keyword)."""
    text = doc.text
    out = []
    for m in _REF.finditer(text):
        kw = m.group("kw").lower()
        kind = _KINDS.get(kw, "section")
        # A bare letter or roman numeral after "section"/"clause" is rarely a reference ("clause A" is,
        # but "Section I" in a heading list is an article); keep letters only for appended documents
        # and articles / parts, roman numerals for articles / parts / sections.
        items = [(m.start(), m.end("first"), m.group("first"))]
        for im in _ITEM_RX.finditer(text, m.end("first"), m.end("more")):
            items.append((im.start(), im.end(), im.group()))
        after = text[m.end():m.end() + 120]
        external = bool(_EXTERNAL.match(after)) and not re.match(r"\s*(?:of|in|under)\s+this\b", after)
        before = text[max(0, m.start() - 40):m.start()]
        pm = _EXTERNAL_BEFORE.search(before)
        if pm and not (pm.group("caps") and m.group("kw").isupper()):
            external = True  # "17 C.F.R. § 240.24b-2", "FAR Section 12.212", "Title 15, Chapter VII, Part 760"
        line_start = text.rfind("\n", 0, m.start()) + 1
        if kind in _APPENDED + ("part", "article") and not text[line_start:m.start()].strip():
            rest = text[m.end():text.find("\n", m.end()) if "\n" in text[m.end():] else len(text)]
            head = rest.strip()[:40]
            if not head or head[:1] in "-–—:." or head.upper() == head:
                continue  # a heading ("EXHIBIT B", "Exhibit 10.31   PURSUANT TO ..."), not a reference
        first_subs = "(" in m.group("first")
        base = ""
        for s, e, item in items:
            num, subs = _split_item(item)
            if not num and kind != "section" and s == m.start():
                break  # "article(s)", "Schedules (i) ...": a word, not a reference
            if kind == "section" and num and not num[0].isdigit() and not roman_to_int(num):
                continue  # "clause A", "Section Headings": not a numbered reference
            if kind == "section" and num and num.isalpha() and len(num) == 1 and num not in "IVX":
                continue
            if not num and subs and s != m.start():
                if not first_subs:
                    break  # "Sections 3.6 and 4.8 and (ii) the failure ...": a new list item, not a reference
                num = base  # "Sections 4.2(a) and (b)": (b) is under 4.2
            if num:
                base = num
            out.append((s, e, kind, num + "".join(subs), external))
    return out


def _key_variants(kind: str, item: str) -> list[tuple[str, str, bool]]:
    """(anchor kind, anchor key, exact) to try, most specific first; a target found by a key that is
    not exact is the enclosing clause (``partial``)."""
    num, subs = _split_item(item)
    out = []
    if kind in ("section", "article", "part") and num:
        n = num if num[0].isdigit() else (str(roman_to_int(num)) if roman_to_int(num) else num)
        if kind == "section":
            for k in range(len(subs), -1, -1):
                out.append(("section", n + "".join(subs[:k]), k == len(subs)))
            lm = _LETTERED.fullmatch(n)
            if lm:
                # "9D" -> "9(D)" / "9(d)", the letter's case as printed first, then the other
                n, letter = lm.group("num"), lm.group("letter")
                for sub in dict.fromkeys((f"({letter})", f"({letter.lower()})", f"({letter.upper()})")):
                    for k in range(len(subs), -1, -1):
                        out.append(("section", n + sub + "".join(subs[:k]), k == len(subs)))
            out.append(("article", num if lm else n, not subs))
            if lm:
                out.append(("section", n, False))
            # "Section 4.2.1" in a document numbered only to 4.2: point at the enclosing clause
            parts = n.split(".")
            for k in range(len(parts) - 1, 0, -1):
                out.append(("section", ".".join(parts[:k]), False))
        elif kind == "article":
            out.append(("article", n, not subs))
            out.append(("section", n, not subs))
        else:
            out.append(("part", n, not subs))
    elif kind in _APPENDED or kind == "part":
        out.append((kind, num.upper(), not subs))
    return out


def _choose(cands: list[Anchor], ref_start: int, direction: str | None, region_of) -> Anchor:
    live = [a for a in cands if not a.toc] or cands
    if direction == "above":
        before = [a for a in live if a.place.start < ref_start]
        if before:
            return before[-1]
    if direction == "below":
        after = [a for a in live if a.place.start > ref_start]
        if after:
            return after[0]
    # Numbering often restarts inside an exhibit: prefer a target in the same part of the document.
    same = [a for a in live if region_of(a.place.start) == region_of(ref_start)]
    return (same or live)[0]


_INLINE_WINDOW = 4000  # chars searched for an inline enumeration item, about a page


def _inline_item(doc: Document, sub: str, pos: int, direction: str | None, taken: set[int]) -> Anchor | None:
    """"clauses (iii) through (vi) above": the nearest "(iii)" written as an item of an inline list
    (not itself part of a reference), above or below as the reference says, within about a page."""
    text = doc.text
    rx = re.compile(r"(?<![\w)])" + re.escape(sub) + r"(?=\s)")
    lo, hi = max(0, pos - _INLINE_WINDOW), min(len(text), pos + _INLINE_WINDOW)
    hits = []
    for m in rx.finditer(text, lo, hi):
        if m.start() in taken:
            continue  # part of a reference itself ("clauses (i) to (vi)")
        hits.append(m)
    if direction == "above":
        hits = [m for m in hits if m.start() < pos]
    elif direction == "below":
        hits = [m for m in hits if m.start() > pos]
    if not hits:
        return None
    m = min(hits, key=lambda m: abs(m.start() - pos))
    return Anchor("item", sub, sub, _short(text[m.end():m.end() + 60], 50), _place(doc, m.start(), m.end()))


def resolve_references(doc: Document, anchors: list[Anchor]) -> list[Reference]:
    """Each explicit reference resolved to an anchor, or marked unresolved / external."""
    text = doc.text
    index: dict[tuple[str, str], list[Anchor]] = {}
    for a in anchors:
        index.setdefault((a.kind, a.key), []).append(a)
    numbered = [a for a in anchors if a.kind == "section"]
    regions = [a.place.start for a in anchors if a.kind in _APPENDED and not a.toc]

    def region_of(pos: int) -> int:
        return sum(1 for r in regions if r <= pos)

    def enclosing_number(pos: int) -> str | None:
        """The clause number in force at ``pos`` ("12.3" for a reference inside 12.3(b))."""
        best = None
        for a in numbered:
            if a.place.start > pos:
                break
            num, _ = _split_item(a.key)
            if num:
                best = num
        return best

    # a clause's own heading ("Section 8.2 It is expressly agreed ...") is not a reference to it
    heads = {a.place.start for a in anchors}
    found = [r for r in find_references(doc) if r[0] not in heads]
    taken = {s for s, _, _, _, _ in found} | {e - len(item[item.find("("):]) for s, e, _, item, _ in found if "(" in item}
    structural = [a for a in anchors if a.kind != "item" and not a.toc]
    starts = [a.place.start for a in structural]
    out = []
    for s, e, kind, item, external in found:
        written = text[s:e]
        place = _place(doc, s, e)
        i = bisect.bisect_right(starts, s) - 1
        source = structural[i] if i >= 0 else None
        if external:
            out.append(Reference(written, kind, item, place, "external", source=source))
            continue
        dm = _DIRECTION.match(text, e)
        direction = dm.group(1).lower() if dm and dm.group(1).lower() in ("above", "below") else None
        num, subs = _split_item(item)
        target, status = None, "unresolved"
        if not num and subs and kind == "section":
            # "paragraph (c) above": an item of the clause we are in, else the nearest such item
            parent = enclosing_number(s)
            keys = ([parent + "".join(subs)] if parent else []) + ["".join(subs)]
            for k in keys:
                cands = index.get(("section", k))
                if cands:
                    target, status = _choose(cands, s, direction or "nearest", region_of), "resolved"
                    break
            if target is None:
                target = _inline_item(doc, subs[0], s, direction, taken)
                status = "resolved" if target is not None else "unresolved"
        else:
            for k_kind, k_key, exact in _key_variants(kind, item):
                cands = index.get((k_kind, k_key))
                if cands:
                    target = _choose(cands, s, direction, region_of)
                    status = "resolved" if exact else "partial"
                    break
        out.append(Reference(written, kind, item, place, status, target, source))
    return out


# ---------------------------------------------------------------------------------------------
# Defined terms


def find_definitions(doc: Document) -> list[tuple[str, int, int, int]]:
    """(term, quote start, quote end, sentence start) for every definition, in text order."""
    text = doc.text
    found: dict[int, tuple[str, int, int]] = {}

    def add(m):
        t = " ".join(m.group("term").split()).rstrip(",.")
        if len(t) >= 2 and not t.isdigit():
            found.setdefault(m.start(), (t, m.start(), m.end()))

    for m in _MEANS.finditer(text):
        add(m)
    for m in _CALLED.finditer(text):
        add(m)
    for p in _PAREN.finditer(text):
        inner = p.group(1)
        quoted = list(_QTERM_RX.finditer(inner))
        if not quoted:
            continue
        rest = _QTERM_RX.sub(" ", inner)
        # "(collectively, together with A, B and C, the "Property")": a list, then the name it is given
        listing = (_COLLECTIVE.match(inner) is not None and inner.rstrip().endswith(quoted[-1].group(0))
                   and len(quoted) == 1)
        if listing:
            quoted = quoted[-1:]
        if listing or _FILLER.match(rest):
            for q in quoted:
                t = " ".join(q.group("term").split()).rstrip(",.")
                if len(t) >= 2 and not t.isdigit():
                    found.setdefault(p.start(1) + q.start(), (t, p.start(1) + q.start(), p.start(1) + q.end()))
    out = []
    for s in sorted(found):
        t, qs, qe = found[s]
        ends = [m.end() for m in _SENTENCE_END.finditer(text, max(0, qs - 400), qs)]
        sent = max(ends[-1] if ends else 0, text.rfind("\n\n", 0, qs) + 2)
        out.append((t, qs, qe, sent if qs - sent < 400 else qs))
    return out


def _variants(term: str) -> list[str]:
    out = [term]
    if term.endswith("y") and not term.endswith(("ay", "ey", "oy")):
        out.append(term[:-1] + "ies")
    elif term.endswith(("s", "x", "ch", "sh")):
        out.append(term + "es")
    else:
        out.append(term + "s")
    if term.endswith("(s)"):
        out.append(term[:-3])
        out.append(term[:-3] + "s")
    return out


def defined_terms(doc: Document) -> tuple[list[Term], list[UndefinedTerm]]:
    """Defined terms with their definition and uses; capitalised phrases used like defined terms but
    never defined (after a determiner, at least twice, not a structure word or common proper noun)."""
    text = doc.text
    defs = find_definitions(doc)
    terms: dict[str, Term] = {}
    def_spans = []
    for t, qs, qe, sent in defs:
        def_spans.append((qs, qe))
        end = text.find(". ", qe)
        end = len(text) if end == -1 else end + 1
        if t in terms:
            terms[t].redefined.append(_place(doc, qs, qe))
            continue
        terms[t] = Term(t, _place(doc, qs, qe), _short(text[sent:min(end, sent + 400)], 200))
    # Uses: one pass with every variant, longest first, so "Confidential Information" is not also
    # counted as a use of "Information".
    owner = {}
    for t in terms:
        for v in _variants(t):
            owner.setdefault(v, t)
    if owner:
        alts = sorted(owner, key=len, reverse=True)
        rx = re.compile(r"(?<![\w\-])(?:" + "|".join(re.escape(v) for v in alts) + r")(?![\w\-])")
        def_starts = sorted(def_spans)

        for m in rx.finditer(text):
            i = bisect.bisect_right(def_starts, (m.start(), 1 << 62)) - 1
            if i >= 0 and def_starts[i][0] <= m.start() < def_starts[i][1]:
                continue  # the definition itself
            terms[owner[m.group()]].uses.append(_place(doc, m.start(), m.end()))
    known = set(owner)
    known_words = {w for t in terms for w in t.split()}
    cands: dict[str, list[Place]] = {}
    for m in _CANDIDATE.finditer(text):
        t = m.group("term")
        words = t.split()
        # "the Licensee's Affiliates" is a use of "Licensee", not a term "Licensee's" or
        # "Licensee's Affiliates": the phrase ends at its first possessive, which is dropped
        for i, w in enumerate(words):
            if _POSSESSIVE.search(w):
                words = words[:i] + [_POSSESSIVE.sub("", w)]
                break
        # trim trailing structure words: "the Company Section" -> "the Company"
        while words and words[-1] in _NOT_TERMS:
            words.pop()
        if not words:
            continue
        t = " ".join(words)
        if t in known or any(w in _NOT_TERMS for w in words):
            continue
        # a longer phrase that starts with a defined term ("Licensed Product Sales") is that term's use
        if any(t.startswith(k + " ") for k in known) or (len(words) == 1 and t in known_words):
            continue
        cands.setdefault(t, []).append(_place(doc, m.start("term"), m.start("term") + len(t)))
    undefined = [UndefinedTerm(t, ps) for t, ps in cands.items() if len(ps) >= 2]
    undefined.sort(key=lambda u: (-len(u.uses), u.term))
    return sorted(terms.values(), key=lambda t: t.definition.start), undefined


# ---------------------------------------------------------------------------------------------
# Related clauses


def _shingles(s: str, n: int = 3) -> set:
    w = re.findall(r"\w+", s.lower())
    return {tuple(w[i:i + n]) for i in range(max(len(w) - n + 1, 1))}


def related_clauses(doc: Document, spans: list[tuple[int, int]], labels: list[str | None],
                    vectors: np.ndarray, *, top: int = 15, min_gap: int = 2000, min_similarity: float = 0.5,
                    near_duplicate: float = 0.5, min_words: int = 15, per_segment: int = 2,
                    hub_k: int = 10) -> list[RelatedPair]:
    """Pairs of segments that say related things far apart in the text.

    Ranked by CSLS (Conneau et al., 2018): ``2 cos(a, b) - r(a) - r(b)``, ``r(x)`` the mean cosine of
    x to its ``hub_k`` nearest segments, so a boilerplate clause that resembles everything ranks low.
    A pair must be at least ``min_gap`` characters apart and have cosine >= ``min_similarity``;
    near-duplicates (word-trigram Jaccard >= ``near_duplicate``) and segments shorter than
    ``min_words`` words (headings, signature lines) are skipped; each segment joins at most
    ``per_segment`` pairs.
    """
    S = len(spans)
    if S < 2:
        return []
    text = doc.text
    V = np.asarray(vectors, dtype=np.float32)
    sim = V @ V.T  # (S, S)
    np.fill_diagonal(sim, -np.inf)
    k = max(1, min(hub_k, S - 1))
    r = np.sort(sim, axis=1)[:, -k:].mean(axis=1)  # (S,) hubness of each segment
    csls = 2 * sim - r[:, None] - r[None, :]
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    gap = np.maximum(starts[None, :] - ends[:, None], starts[:, None] - ends[None, :])  # (S, S) chars between
    ok_len = np.array([len(text[s:e].split()) >= min_words for s, e in spans])
    mask = (np.triu(np.ones((S, S), dtype=bool), 1) & (gap >= min_gap) & (sim >= min_similarity)
            & ok_len[:, None] & ok_len[None, :])
    ii, jj = np.nonzero(mask)
    order = np.lexsort((jj, ii, -csls[ii, jj]))  # best first; ties by position (deterministic)
    used = np.zeros(S, dtype=int)
    shingles: dict[int, set] = {}
    out = []
    for o in order:
        if len(out) >= top:  # checked first: top = 0 asks for none
            break
        i, j = int(ii[o]), int(jj[o])
        if used[i] >= per_segment or used[j] >= per_segment:
            continue
        a = shingles.setdefault(i, _shingles(text[spans[i][0]:spans[i][1]]))
        b = shingles.setdefault(j, _shingles(text[spans[j][0]:spans[j][1]]))
        if len(a & b) / max(len(a | b), 1) >= near_duplicate:
            continue
        pa, pb = _place(doc, *spans[i]), _place(doc, *spans[j])
        out.append(RelatedPair(pa, pb, labels[i], labels[j], round(float(sim[i, j]), 4),
                               round(float(csls[i, j]), 4), int(gap[i, j]),
                               None if pa.page is None else abs(pb.page - pa.page),
                               _short(text[spans[i][0]:spans[i][1]], 200), _short(text[spans[j][0]:spans[j][1]], 200)))
        used[i] += 1
        used[j] += 1
    return out


# ---------------------------------------------------------------------------------------------
# The task


def xref(doc: Document, *, engine=None, related: bool = True, top: int = 15, min_gap: int = 2000,
         min_similarity: float = 0.5) -> XrefReport:
    """The clause graph of ``doc``. ``engine`` (a ``longdoc.tasks.ask.Engine``) supplies segment
    vectors for related clauses; with ``related=False`` no model is loaded."""
    from longdoc.segment import clauses

    cl = clauses(doc)
    anchors = find_anchors(doc, cl)
    refs = resolve_references(doc, anchors)
    terms, undefined = defined_terms(doc)
    pairs = None
    if related:
        if engine is None:
            from longdoc.tasks.ask import Engine

            engine = Engine()
        p = engine.passages(doc)
        pairs = related_clauses(doc, p.spans, p.labels, p.vectors, top=top, min_gap=min_gap,
                                min_similarity=min_similarity)
    return XrefReport(doc.path, len(cl), anchors, refs, terms, undefined, pairs)
