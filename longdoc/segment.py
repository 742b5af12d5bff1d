"""Segmentation: cut a Document into the passages a reviewer would cite.

``segment(doc)`` returns ``Segment``s in text order. Guarantees, whatever the input:

- every non-whitespace character of ``doc.text`` lies in exactly one segment (nothing is dropped);
  segments start and end on non-whitespace, and only whitespace lies between them;
- a cut never falls inside a word (a run of non-whitespace), except inside a run longer than
  ``max_chars`` (base64, hex dumps), which is cut every ``max_chars`` characters;
- a segment is at most ``max_chars`` long, except a code unit that has no line break to cut at;
- spans are exact char offsets into ``doc.text``.

How the text is cut, by ``doc.kind``:

- prose ("text", "pdf"): blocks are paragraphs (blank lines, page breaks, and runs of 3+ spaces, which
  is how many EDGAR contracts separate paragraphs) and lines that start with a clause marker ("12.3",
  "12.3(b)", "ARTICLE IV", "Section 5.", "(b)", "B.") or are headings (short, upper case). The marker
  becomes the label; "(b)" under clause "12.3" is labelled "12.3(b)".
- "markdown": the same, with ``#`` / underlined headings (label: the heading text), list items, and
  fenced code kept whole.
- "code": functions, classes and methods from a tree-sitter grammar when its package is installed
  (label: the qualified name, e.g. ``Parser.parse``), else blocks of lines split at blank lines.

Then blocks longer than ``max_chars`` are split at sentence ends (then ``;``, ``,``, then any space;
for code at blank lines, then line ends) into near-equal pieces that keep the label, and blocks
shorter than ``min_chars`` are merged with the next block (or, at the end of a section, the previous
one) while the result stays within ``max_chars``. A heading (or a run of them) joins the first block
of text after it; the segment is labelled by that block's clause number when it has one, else by
the heading.

``clauses(doc)`` gives the structural blocks before any length limit: one per numbered clause,
heading, paragraph or code unit (what cross-references resolve to).
"""
from __future__ import annotations

import bisect
import functools
import importlib
import itertools
import re
from dataclasses import dataclass

from .sources.document import Document, Segment

# Defaults measured on the CUAD dev contracts (`python -m longdoc.eval.segments`): with 800/200,
# 89.8% of the 2,284 gold clause spans lie inside a single segment and 98.1% have at least half their
# characters in one, with segments of mean 429 chars (p90 708), so a returned passage stays well
# under the 1,000-char budget and is ~100-200 model tokens. Fixed 400-char windows of about the same
# mean length hold only 50.8% of gold spans whole. Smaller caps (400/100: 73.1%) cut clauses apart;
# larger ones (1500/300: 94.7%, mean 617) dilute a clause among its neighbours. The lead tunes these
# on retrieval itself; they are parameters everywhere.
DEFAULT_MAX_CHARS = 800
DEFAULT_MIN_CHARS = 200

__all__ = ["segment", "clauses", "blank_text", "DEFAULT_MAX_CHARS", "DEFAULT_MIN_CHARS"]


@dataclass
class _Block:
    start: int
    end: int
    kind: str
    label: str | None = None
    heading: bool = False  # a heading line: absorbs the block after it
    hard: bool = False  # starts a section or code unit: never absorbed into the block before it
    atomic: bool = False  # fenced code in Markdown: split only at line ends


def segment(doc: Document, *, max_chars: int = DEFAULT_MAX_CHARS,
            min_chars: int = DEFAULT_MIN_CHARS) -> list[Segment]:
    """Passages of ``doc`` with char spans, kinds and labels (see the module docstring)."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    min_chars = max(0, min(min_chars, max_chars))
    text = doc.text
    blocks = _blocks(doc)
    pieces: list[_Block] = []
    for b in blocks:
        if b.end - b.start <= max_chars:
            pieces.append(b)
            continue
        code = doc.kind == "code" or b.atomic
        for i, (s, e) in enumerate(_split(text, b.start, b.end, max_chars, code=code)):
            # only the first piece opens the section or unit
            pieces.append(_Block(s, e, b.kind, b.label, atomic=b.atomic, hard=b.hard and i == 0))
    merged = _merge(pieces, max_chars, min_chars, code=doc.kind == "code", text=text)
    return [Segment(b.start, b.end, b.kind, b.label) for b in merged]


def clauses(doc: Document) -> list[Segment]:
    """Structural blocks with no length limits: numbered clauses, headings, paragraphs, code units."""
    return [Segment(b.start, b.end, b.kind, b.label) for b in _blocks(doc)]


def _blocks(doc: Document) -> list[_Block]:
    if doc.kind == "code":
        return _code_blocks(doc.text, doc.language)
    return _prose_blocks(doc.text, markdown=doc.kind == "markdown")


# ---------------------------------------------------------------------------------------------
# Prose: paragraphs, clause markers and headings

# A paragraph break: a blank line (spaces allowed on it), a page break, or (prose only) 3+ spaces
# between two words on a line, which is how many EDGAR contracts separate paragraphs.
_BREAK_MD = r"[ \t\r\v\u00a0]*(?:\n[ \t\r\v\u00a0]*){2,}|[ \t\r\v\u00a0]*\f\s*"
_BREAK = {True: re.compile(_BREAK_MD), False: re.compile(_BREAK_MD + r"|(?<=\S)[ \t\u00a0]{3,}(?=\S)")}

_ROMAN = r"(?:[IVXLC]{1,7}|[ivxlc]{1,7})"
_NUM = r"\d{1,3}(?:\.\d{1,3})*"
# Markers at the start of a line; group "label" is what we keep. Order matters: first match wins.
_MARKERS = [
    # ARTICLE IV / Article 5 / SECTION 5.1 / Section 5. / § 5
    ("article", re.compile(rf"(?P<label>(?:ARTICLE|Article|ARTICLES)\s+(?:{_NUM}|{_ROMAN}|[A-Z])\b)\.?")),
    ("section", re.compile(rf"(?:SECTION|Section|Sec\.|§§?)\s*(?P<label>{_NUM}(?:\([a-zA-Z0-9]{{1,4}}\))*)"
                           r"\.?(?=[ \t:.\-–—]*(?:[A-Z(\"“]|$))")),
    # 12.3 / 12.3. / 12.3(b) / 12) / 1. followed by a capital, quote or bracket (not "1.5 million")
    ("clause", re.compile(rf"(?P<label>{_NUM}(?:\([a-zA-Z0-9]{{1,4}}\))*)(?:\.|\))?[ \t\u00a0]+(?=[A-Z\"“'‘(\[])")),
    # (b) / (iv) / (A) / (12)
    ("sub", re.compile(r"(?P<label>\((?:[a-z]{1,2}|[A-Z]{1,2}|[ivxlc]{1,7}|\d{1,2})\))(?=\s)")),
    # b) / B. / iv. / IV. followed by text
    ("sub", re.compile(rf"(?P<label>(?:[A-Za-z]|{_ROMAN}))[.)][ \t\u00a0]+(?=[A-Z\"“(]|[a-z]\w+)")),
]
_MD_HEADING = re.compile(r"#{1,6}[ \t]+(?P<label>[^\n]*?)[ \t#]*$", re.M)
_MD_LIST = re.compile(r"(?:[-*+]|\d{1,3}[.)])[ \t]+")
_SETEXT = re.compile(r"[ \t]*(?:=+|-+)[ \t]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```+|~~~+)[^\n]*\n.*?(?:^[ \t]{0,3}\1[ \t]*$|\Z)", re.M | re.S)


def _is_heading_line(line: str) -> bool:
    """Short, upper case (every cased letter), no sentence end: "RECITALS", "7. TERM AND TERMINATION"."""
    s = line.strip()
    if not 3 <= len(s) <= 100 or not s.isupper() or s.endswith((",", ";")):
        return False
    return sum(map(str.isalpha, s)) >= 3 and not (s.endswith(".") and len(s) > 60)


def _line_starts_block(line: str, markdown: bool, heading: bool) -> bool:
    s = line.lstrip(" \t")
    if not s:
        return False
    if heading:
        return True
    if markdown and (s.startswith("#") and _MD_HEADING.match(s) or _MD_LIST.match(s)):
        return True
    return any(rx.match(s) for _, rx in _MARKERS)


def _blank(c: str) -> bool:
    """Whitespace for segmentation: str.isspace() plus the byte order mark U+FEFF."""
    return c.isspace() or c == "\ufeff"


def blank_text(text: str) -> bool:
    """True when ``text`` holds nothing but what ``_blank`` calls whitespace: no segment to make."""
    return not text.replace("\ufeff", "").strip()


def _trim(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and _blank(text[s]):
        s += 1
    while e > s and _blank(text[e - 1]):
        e -= 1
    return s, e


def _raw_spans(text: str, markdown: bool) -> list[tuple[int, int, bool]]:
    """(start, end, atomic) spans separated by paragraph breaks and marker/heading line starts."""
    regions: list[tuple[int, int, bool]] = []  # (start, end, is_fence)
    pos = 0
    if markdown:
        for m in _FENCE.finditer(text):
            regions.append((pos, m.start(), False))
            regions.append((m.start(), m.end(), True))
            pos = m.end()
    regions.append((pos, len(text), False))
    out: list[tuple[int, int, bool]] = []
    for rs, re_, fence in regions:
        if fence:
            s, e = _trim(text, rs, re_)
            if s < e:
                out.append((s, e, True))
            continue
        cuts = [rs]
        for m in _BREAK[markdown].finditer(text, rs, re_):
            cuts.append(m.start())
            cuts.append(m.end())
        cuts.append(re_)
        for s0, e0 in zip(cuts[0::2], cuts[1::2]):
            # Inside a paragraph, a line that opens a clause or is a heading starts a new block, and
            # so does the line after a heading.
            s = s0
            prev_heading = False
            line_start = s0
            while line_start < e0:
                nl = text.find("\n", line_start, e0)
                line_end = e0 if nl == -1 else nl
                line = text[line_start:line_end]
                setext = markdown and line_start > s and _SETEXT.match(line) is not None
                is_head = (_is_heading_line(line) or setext
                           or (markdown and bool(_MD_HEADING.match(line.lstrip()))))
                if line_start > s and not setext and (prev_heading
                                                      or _line_starts_block(line, markdown, is_head)):
                    out.append((s, line_start, False))
                    s = line_start
                prev_heading = is_head
                if nl == -1:
                    break
                line_start = nl + 1
            out.append((s, e0, False))
    spans = []
    for s, e, atomic in out:
        s, e = _trim(text, s, e)
        if s < e:
            spans.append((s, e, atomic))
    return spans


def _prose_blocks(text: str, markdown: bool) -> list[_Block]:
    blocks: list[_Block] = []
    number: str | None = None  # the last numbered clause seen, to qualify "(b)" as "12.3(b)"
    heading_label: str | None = None  # Markdown: the section a paragraph is under
    for s, e, atomic in _raw_spans(text, markdown):
        if atomic:
            blocks.append(_Block(s, e, "code", heading_label, atomic=True))
            continue
        first_line = text[s:text.find("\n", s, e) if "\n" in text[s:e] else e]
        kind, label, heading = "paragraph", None, False
        md = _MD_HEADING.match(first_line) if markdown else None
        nxt = text.find("\n", s, e)
        setext = markdown and nxt != -1 and _SETEXT.match(text[nxt + 1:text.find("\n", nxt + 1, e) if text.find("\n", nxt + 1, e) != -1 else e])
        if md or setext:
            label = _norm(md.group("label") if md else first_line)
            kind, heading, heading_label = "heading", True, label
            number = None
        else:
            for mkind, rx in _MARKERS:
                m = rx.match(first_line)
                if m:
                    lab = _norm(m.group("label"))
                    if mkind in ("clause", "section"):
                        number = re.sub(r"\(.*", "", lab)
                    elif mkind == "sub" and number:
                        lab = number + lab if lab.startswith("(") else f"{number}({lab})"
                    kind, label = "clause", lab
                    heading = mkind == "article" or _is_heading_line(first_line)
                    if mkind == "article":
                        number = None
                    break
            else:
                if _is_heading_line(first_line) and e - s <= 100:
                    kind, label, heading = "heading", _norm(first_line), True
                    number = None
            if markdown and label is None:
                label = heading_label
        blocks.append(_Block(s, e, kind, label, heading=heading, hard=heading and kind == "heading"))
    return blocks


def _norm(s: str, limit: int = 80) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------
# Length limits: splitting long blocks, merging short ones

_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=[\s\ufeff])")
_CLAUSE_END = re.compile(r"[;:][\"'”’)\]]*(?=[\s\ufeff])")
_COMMA = re.compile(r",(?=[\s\ufeff])")


def _split(text: str, start: int, end: int, max_chars: int, *, code: bool) -> list[tuple[int, int]]:
    """Cut ``text[start:end]`` into near-equal pieces of at most ``max_chars`` at natural boundaries."""
    pieces = []
    s = start
    while end - s > max_chars:
        n_left = -(-(end - s) // max_chars)  # pieces still needed (ceil)
        target = s + (end - s) // n_left
        hi = s + max_chars  # the end of this piece is at most hi
        cut = _best_cut(text, s + max(1, (target - s) // 2), target, hi, code)
        if cut is None:  # nothing near the target: the last boundary of any kind in the window
            cut = _best_cut(text, s + 1, hi, hi, code)
        if cut is None:  # one "word" longer than max_chars: cut it (no real word is this long)
            cut = hi
        e = cut
        while e > s and _blank(text[e - 1]):
            e -= 1
        pieces.append((s, e))
        s = cut
        while s < end and _blank(text[s]):
            s += 1
    if s < end:
        pieces.append((s, end))
    return pieces


_WORD_END = re.compile(r"[^\s\ufeff](?=[\s\ufeff])")  # U+FEFF counts as a space, as in _blank
_PROSE_CUTS = (_SENTENCE_END, _CLAUSE_END, _COMMA, _WORD_END)
_CODE_CUTS = (re.compile(r"(?=\n[ \t\r\f\v]*\n)"), re.compile(r"(?=\n)"), _WORD_END)


def _best_cut(text: str, lo: int, target: int, hi: int, code: bool) -> int | None:
    """The end of a piece in [lo, hi], just before whitespace, nearest ``target`` among the
    strongest kind of boundary present (sentence > ; or : > , > any space; for code: blank line >
    line end > any space)."""
    base = max(lo - 1, 0)  # one character of context: a boundary at lo ends with the character before it
    window = text[base:hi + 1]
    for rx in _CODE_CUTS if code else _PROSE_CUTS:
        cands = [base + m.end() for m in rx.finditer(window)]
        cands = [c for c in cands if lo <= c <= hi and c < len(text) and _blank(text[c])]
        if cands:
            return min(cands, key=lambda c: abs(c - target))
    return None


def _merge(blocks: list[_Block], max_chars: int, min_chars: int, *, code: bool, text: str = "") -> list[_Block]:
    def size(b):
        return b.end - b.start

    out: list[_Block] = []
    for b in blocks:
        if out:
            last = out[-1]
            # A short block that ends its page (a footer, a page number) does not absorb the next
            # page's text: the passage would be cited at the footer's page. A heading still does.
            page_end = not last.heading and "\f" in text[last.end:b.start]
            if (b.end - last.start <= max_chars and not b.atomic and not last.atomic and not page_end
                    and (last.heading or (size(last) < min_chars and not b.hard))):
                if last.heading:  # headings join their body, labelled by the most specific number
                    out[-1] = _Block(last.start, b.end, _merged_kind(last, b), b.label or last.label,
                                     hard=last.hard, heading=b.heading)
                else:
                    out[-1] = _Block(last.start, b.end, last.kind, last.label or b.label, hard=last.hard)
                continue
        out.append(b)
    # A short block left at the end of a section (followed by a heading, a code unit, or the end)
    # joins the block before it.
    final: list[_Block] = []
    for b in out:
        if final and size(b) < min_chars and not b.hard and not b.atomic:
            last = final[-1]
            if b.end - last.start <= max_chars and not last.atomic:
                final[-1] = _Block(last.start, b.end, last.kind, last.label or b.label, hard=last.hard)
                continue
        final.append(b)
    return final


def _merged_kind(heading: _Block, body: _Block) -> str:
    if body.kind in ("clause", "code"):
        return body.kind
    return "section" if heading.kind in ("heading", "section") else heading.kind


# ---------------------------------------------------------------------------------------------
# Code: tree-sitter units (functions, classes, methods), else blocks of lines

@functools.lru_cache(maxsize=None)
def _parser(language: str | None):
    """A tree-sitter Parser for ``language`` from its grammar package, or None when not installed."""
    if not language:
        return None
    try:
        import tree_sitter
    except ImportError:
        return None
    module_name, attr = {
        "typescript": ("tree_sitter_typescript", "language_typescript"),
        "tsx": ("tree_sitter_typescript", "language_tsx"),
        "php": ("tree_sitter_php", "language_php"),
    }.get(language, (f"tree_sitter_{language}", "language"))
    try:
        mod = importlib.import_module(module_name)
        return tree_sitter.Parser(tree_sitter.Language(getattr(mod, attr)()))
    except Exception:  # missing package, ABI mismatch: fall back to lines
        return None


_DEF_SUFFIXES = ("_definition", "_declaration", "_item", "_specifier")
_DEF_EXACT = {"method", "singleton_method", "function", "class", "module",  # Ruby and similar
              "type_declaration"}  # Go
_CONTAINER_WORDS = ("class", "interface", "struct", "impl", "trait", "namespace", "module", "mod_",
                    "enum", "object", "record", "protocol", "extension")
_FUNCTION_WORDS = ("function", "method", "constructor")
_WRAPPERS = {"decorated_definition", "export_statement", "template_declaration",
             "lexical_declaration", "variable_declaration", "ambient_declaration"}
_FUNCTION_VALUES = {"arrow_function", "function_expression", "function", "generator_function",
                    "class"}


def _unit_kind(node) -> str | None:
    t = node.type
    if t in _DEF_EXACT:
        return "function" if t in ("method", "singleton_method", "function") else "class"
    if not t.endswith(_DEF_SUFFIXES):
        return None
    if any(w in t for w in _FUNCTION_WORDS) and "call" not in t and "type" not in t:
        return "function"
    if any(w in t for w in _CONTAINER_WORDS):
        # `struct foo *p;` names a struct without defining it: only a body makes it a unit
        if t.endswith("_specifier") and node.child_by_field_name("body") is None:
            return None
        return "class"
    return None


def _name(node, src: bytes) -> str | None:
    n = node.child_by_field_name("name")
    if n is None and node.type == "impl_item":
        n = node.child_by_field_name("type")
    if n is None and node.type == "type_declaration":  # Go: type T struct{...}
        spec = next((c for c in node.named_children if c.type in ("type_spec", "type_alias")), None)
        n = spec.child_by_field_name("name") if spec is not None else None
    if n is None:  # C/C++: the name sits inside nested declarators
        d = node.child_by_field_name("declarator")
        while d is not None and d.type not in ("identifier", "field_identifier", "qualified_identifier",
                                               "destructor_name", "operator_name"):
            d = d.child_by_field_name("declarator") or (d.named_children[0] if d.named_children else None)
        n = d
    if n is None:
        return None
    name = src[n.start_byte:n.end_byte].decode("utf-8", "replace")
    if node.type == "method_declaration":  # Go: func (s *T) M() -> T.M
        recv = node.child_by_field_name("receiver")
        if recv is not None:
            types = [c for c in _walk(recv) if c.type == "type_identifier"]
            if types:
                name = src[types[0].start_byte:types[0].end_byte].decode("utf-8", "replace") + "." + name
    return " ".join(name.split())


def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def _value_function(node):
    """`const f = () => ...`: the declarator's name node when its value is a function or class."""
    for d in node.named_children:
        if d.type == "variable_declarator":
            v = d.child_by_field_name("value")
            if v is not None and v.type in _FUNCTION_VALUES:
                return d.child_by_field_name("name"), ("class" if v.type == "class" else "function")
    return None, None


def _code_units(src: bytes, language: str) -> list[tuple[int, int, str, str]] | None:
    """(start_byte, end_byte, kind, qualified name) of definitions, innermost last; None if no parser."""
    parser = _parser(language)
    if parser is None:
        return None
    tree = parser.parse(src)
    units: list[tuple[int, int, str, str]] = []

    def visit(node, prefix: str, wrapper, depth: int):
        for child in node.named_children:
            kind = _unit_kind(child)
            name = None
            if kind is None and child.type in ("lexical_declaration", "variable_declaration"):
                n, kind = _value_function(child)
                if n is not None:
                    name = src[n.start_byte:n.end_byte].decode("utf-8", "replace")
            if kind is not None:
                name = name or _name(child, src) or child.type
                qual = f"{prefix}.{name}" if prefix else name
                outer = wrapper or child  # decorators, `export`, `template<...>` belong to the unit
                units.append((_leading_comments(outer, src), outer.end_byte, kind, qual))
                if kind == "class":
                    visit(child, qual, None, 0)
            elif child.type in _WRAPPERS:
                visit(child, prefix, wrapper or child, depth)
            elif depth < 2 and child.named_child_count and "comment" not in child.type:
                # bodies: class_body, declaration_list, block, ... (not deep into expressions)
                visit(child, prefix, None, depth + 1)

    visit(tree.root_node, "", None, 0)
    return units


def _leading_comments(node, src: bytes) -> int:
    """Extend a unit back over the comments right above it (doc comments), stopping at a blank line."""
    prev = node.prev_named_sibling
    s = node.start_byte
    while prev is not None and "comment" in prev.type:
        gap = src[prev.end_byte:s]
        if gap.count(b"\n") > 1 or gap.strip():
            break
        s = prev.start_byte
        prev = prev.prev_named_sibling
    return s


def _code_blocks(text: str, language: str | None) -> list[_Block]:
    src = text.encode("utf-8", "surrogatepass")
    units = _code_units(src, language) if language else None
    if not units:
        return _line_blocks(text, 0, len(text), None)
    if len(src) == len(text):
        to_char = lambda b: b  # noqa: E731  (ASCII: bytes are chars)
    else:
        byte_at = list(itertools.accumulate((len(c.encode("utf-8", "surrogatepass")) for c in text),
                                            initial=0))
        to_char = lambda b: bisect.bisect_left(byte_at, b)  # noqa: E731
    # Units nest (methods in classes). Paint each char with the innermost unit covering it, then
    # cut where the owner changes: a class keeps its header and the text between its methods.
    spans = sorted((_snap(text, to_char(s), to_char(e)) + (k, q) for s, e, k, q in units),
                   key=lambda u: (u[0], -u[1]))
    # Snapping may make a span poke out of its parent ("}" + ";" after a method): clamp it back in,
    # so the spans stay nested or disjoint.
    stack: list[int] = []  # ends of the open ancestors
    for i, (s, e, k, q) in enumerate(spans):
        while stack and stack[-1] <= s:
            stack.pop()
        if stack and e > stack[-1]:
            e = stack[-1]
            spans[i] = (s, e, k, q)
        stack.append(e)
    blocks: list[_Block] = []
    _emit(text, 0, len(text), spans, None, None, blocks)
    return blocks


def _snap(text: str, s: int, e: int) -> tuple[int, int]:
    """Widen a unit to whole whitespace-separated runs, so "};" or "}," is never cut in two."""
    while s > 0 and not _blank(text[s - 1]):
        s -= 1
    while e < len(text) and not _blank(text[e]):
        e += 1
    return s, e


def _emit(text, start, end, spans, kind, label, out):
    """Partition text[start:end] into blocks: child units as given, the rest under (kind, label)."""
    pos = start
    i = 0
    while i < len(spans):
        s, e, k, q = spans[i]
        # children of this unit: following spans nested inside it
        j = i + 1
        while j < len(spans) and spans[j][0] < e:
            j += 1
        if s > pos:
            _rest(text, pos, s, kind, label, out)
        first = len(out)
        _emit(text, s, e, spans[i + 1:j], k, q, out)
        if len(out) > first:
            out[first].hard = True  # a unit starts here: never absorbed into the code before it
        pos = max(pos, e)
        i = j
    if pos < end:
        _rest(text, pos, end, kind, label, out)


def _rest(text, s, e, kind, label, out):
    if kind is None:
        out.extend(_line_blocks(text, s, e, None))
        return
    s, e = _trim(text, s, e)
    if s < e:
        out.append(_Block(s, e, kind, label))


_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def _line_blocks(text: str, start: int, end: int, label: str | None) -> list[_Block]:
    """Code outside any unit (or with no grammar): blocks of lines separated by blank lines."""
    blocks = []
    pos = start
    for m in _BLANK_LINES.finditer(text, start, end):
        s, e = _trim(text, pos, m.start())
        if s < e:
            blocks.append(_Block(s, e, "lines", label))
        pos = m.end()
    s, e = _trim(text, pos, end)
    if s < e:
        blocks.append(_Block(s, e, "lines", label))
    return blocks


def word_windows(text: str, size: int = 120, overlap: int = 30) -> list[tuple[int, int]]:
    """Char spans of fixed passages of at most ``size`` words, consecutive ones sharing ``overlap``
    words: the usual chunking of retrieval baselines, and a second, structure-blind view of a document
    that the ranker uses beside the segments."""
    words = [m.span() for m in re.finditer(r"\S+", text)]
    spans, step = [], size - overlap
    for i in range(0, len(words), step):
        chunk = words[i : i + size]
        spans.append((chunk[0][0], chunk[-1][1]))
        if i + size >= len(words):
            break
    return spans
