"""Rendering of `longdoc xref` reports: a Rich tree for people, tab-separated lines for pipes, JSON for
programs, and Graphviz DOT for the clause graph. Tasks return data; only this module prints it."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from longdoc.render import dumps, shown_path
from longdoc.tasks.xref import Anchor, Place, RelatedPair, XrefReport

# ---------------------------------------------------------------------------------------------
# JSON


def _anchor_json(a: Anchor | None) -> dict | None:
    if a is None:
        return None
    return {"kind": a.kind, "key": a.key, "label": a.label, "title": a.title, **a.place.to_json()}


def _pair_json(p: RelatedPair) -> dict:
    d = {"a": {**p.a.to_json(), "label": p.a_label, "text": p.a_text},
         "b": {**p.b.to_json(), "label": p.b_label, "text": p.b_text},
         "similarity": p.similarity, "score": p.score, "distance_chars": p.distance_chars}
    if p.distance_pages is not None:
        d["distance_pages"] = p.distance_pages
    return d


def report_dict(r: XrefReport) -> dict:
    """The JSON contract of `longdoc xref --json` (one object per file)."""
    return {
        "path": r.path,
        "counts": r.counts(),
        "references": [
            {"text": x.text, "kind": x.kind, "key": x.key, **x.place.to_json(), "status": x.status,
             "target": _anchor_json(x.target), "in": _anchor_json(x.source)}
            for x in r.references
        ],
        "terms": [
            {"term": t.term, "definition": {**t.definition.to_json(), "text": t.definition_text},
             "uses": [u.to_json() for u in t.uses], "n_uses": len(t.uses),
             **({"redefined": [p.to_json() for p in t.redefined]} if t.redefined else {})}
            for t in r.terms
        ],
        "undefined_terms": [{"term": u.term, "uses": [p.to_json() for p in u.uses]} for u in r.undefined],
        "unused_terms": [t.term for t in r.unused],
        "related": None if r.related is None else [_pair_json(p) for p in r.related],
    }


def xref_json(reports: list[XrefReport], out=None) -> None:
    out = out or sys.stdout
    out.write(dumps([report_dict(r) for r in reports], indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# People and pipes


def _loc(p: Place) -> str:
    return f"{p.line}" + (f" p.{p.page}" if p.page is not None else "")


def _target(a: Anchor) -> str:
    title = f" {a.title}" if a.title else ""
    return f"{a.label}{title}"


def xref_rich(r: XrefReport, out: Console, max_uses: int = 8) -> None:
    c = r.counts()
    tree = Tree(Text(shown_path(r.path), style="longdoc.path"))
    refs = tree.add(Text.assemble(("references ", "bold"), (
        f"{c['references']}: {c['resolved']} resolved, {c['partial']} to an enclosing clause, "
        f"{c['unresolved']} unresolved, {c['external']} to other instruments", "longdoc.dim")))
    for x in r.references:
        line = Text.assemble((f"{_loc(x.place):>9}  ", "longdoc.loc"), (x.text.replace("\n", " "), "longdoc.label"))
        if x.target is not None:
            line.append("  →  ")
            line.append(f"{_target(x.target)}", "")
            line.append(f"  ({_loc(x.target.place)})", "longdoc.loc")
            if x.status == "partial":
                line.append("  partial", "longdoc.dim")
        elif x.status == "external":
            line.append("  other instrument", "longdoc.dim")
        else:
            line.append("  unresolved", "longdoc.match")
        refs.add(line)
    terms = tree.add(Text.assemble(("defined terms ", "bold"), (f"{c['terms']}", "longdoc.dim")))
    for t in r.terms:
        uses = ", ".join(_loc(u) for u in t.uses[:max_uses]) + (" …" if len(t.uses) > max_uses else "")
        terms.add(Text.assemble((f'"{t.term}"', "longdoc.label"), ("  defined ", "longdoc.dim"),
                                (_loc(t.definition), "longdoc.loc"),
                                (f"  {len(t.uses)} uses", "longdoc.score"),
                                (f"  {uses}" if uses else "  never used", "longdoc.dim")))
    if r.undefined:
        und = tree.add(Text.assemble(("used but not defined ", "bold"), (f"{c['undefined_terms']}", "longdoc.dim")))
        for u in r.undefined:
            und.add(Text.assemble((u.term, "longdoc.label"), (f"  {len(u.uses)} uses, first ", "longdoc.dim"),
                                  (_loc(u.uses[0]), "longdoc.loc")))
    if r.related is not None:
        rel = tree.add(Text.assemble(("related clauses far apart ", "bold"), (f"{len(r.related)}", "longdoc.dim")))
        for p in r.related:
            dist = f"{p.distance_pages} pages" if p.distance_pages is not None else f"{p.distance_chars:,} chars"
            node = rel.add(Text.assemble((f"{p.similarity:.3f}", "longdoc.score"), (f"  {dist} apart", "longdoc.dim")))
            for place, label, text in ((p.a, p.a_label, p.a_text), (p.b, p.b_label, p.b_text)):
                node.add(Text.assemble((f"{_loc(place):>9}  ", "longdoc.loc"), (f"{label or ''} ", "longdoc.label"),
                                       (text[:120], "")))
    out.print(tree)


def xref_plain(r: XrefReport, out=None) -> None:
    """Tab-separated, one finding per line: ``path:line<TAB>what<TAB>...``."""
    out = out or sys.stdout
    path = shown_path(r.path)
    for x in r.references:
        tgt = f"{x.target.label}\t{path}:{x.target.place.line}" if x.target else "-\t-"
        out.write(f"{path}:{x.place.line}\tref\t{x.text.replace(chr(10), ' ')}\t{x.status}\t{tgt}\n")
    for t in r.terms:
        out.write(f"{path}:{t.definition.line}\tterm\t{t.term}\t{len(t.uses)} uses\n")
    for u in r.undefined:
        out.write(f"{path}:{u.uses[0].line}\tundefined\t{u.term}\t{len(u.uses)} uses\n")
    for p in r.related or []:
        out.write(f"{path}:{p.a.line}\trelated\t{path}:{p.b.line}\t{p.similarity:.3f}\t{p.distance_chars}\n")


# ---------------------------------------------------------------------------------------------
# Graphviz


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def xref_dot(reports: list[XrefReport], out=None) -> None:
    """One ``digraph`` per file: clauses as boxes, references as solid arrows (red dashed when
    unresolved), defining clauses -> term notes, related clauses as dotted undirected edges."""
    out = out or sys.stdout
    for r in reports:
        nodes: dict[str, str] = {}
        edges: list[str] = []

        def node(a: Anchor) -> str:
            nid = f"c{a.place.start}"
            nodes.setdefault(nid, f"{nid} [label={_q(_target(a)[:48] + chr(10) + 'line ' + str(a.place.line))}]")
            return nid

        for x in r.references:
            src = node(x.source) if x.source is not None else "document"
            if src == "document":
                nodes.setdefault("document", 'document [label="(before the first clause)"]')
            if x.target is not None:
                edges.append(f"{src} -> {node(x.target)} [label={_q(x.text)}]")
            elif x.status == "unresolved":
                nid = f"u{x.place.start}"
                nodes[nid] = f"{nid} [label={_q(x.text)}, shape=plaintext, fontcolor=red]"
                edges.append(f"{src} -> {nid} [style=dashed, color=red]")
        for t in r.terms:
            tid = f"t{t.definition.start}"
            nodes[tid] = f"{tid} [label={_q(t.term + chr(10) + str(len(t.uses)) + ' uses')}, shape=note]"
            owner = [x for x in r.anchors if x.place.start <= t.definition.start and x.kind != "item"]
            if owner:
                edges.append(f"{node(owner[-1])} -> {tid} [arrowhead=none, color=gray]")
        for p in r.related or []:
            ids = []
            for place, label in ((p.a, p.a_label), (p.b, p.b_label)):
                nid = f"s{place.start}"
                nodes.setdefault(nid, f"{nid} [label={_q((label or '')[:40] + chr(10) + 'line ' + str(place.line))}, "
                                      f"shape=ellipse]")
                ids.append(nid)
            edges.append(f"{ids[0]} -> {ids[1]} [dir=none, style=dotted, color=blue, label={_q(f'{p.similarity:.2f}')}]")
        out.write(f"digraph {_q(shown_path(r.path))} {{\n  node [shape=box, fontsize=10];\n  edge [fontsize=8];\n")
        for n in nodes.values():
            out.write(f"  {n};\n")
        for e in edges:
            out.write(f"  {e};\n")
        out.write("}\n")
