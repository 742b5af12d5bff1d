"""`longdoc xref` on the CUAD dev contracts.

    python -m longdoc.eval.xref [--data ../shared/data/cuad]             # scores against the checked sample
    python -m longdoc.eval.xref --worksheet N [--seed S] > sheet.tsv    # a new sample to check by hand
    python -m longdoc.eval.xref --related [--limit N]                   # CUAD groups vs related clauses
    python -m longdoc.eval.xref --totals                                # counts summed over the dev texts

**Reference resolution** is measured on a hand-checked sample (``xref_checked.tsv`` beside this
file). The sample is drawn independently of the resolver: every occurrence of a reference keyword
(section, article, clause, paragraph, schedule, exhibit, annex, appendix, attachment, §) followed by
a number, letter or "(", across all dev contracts, then a seeded random choice. For each, a person
read the context and the document and recorded what it is: ``present`` (a reference to a part of this
document that is in the text; the gold column gives the line of the target heading), ``absent`` (a
reference to a part of this document not in the text, e.g. an exhibit not filed), ``external`` (a
provision of another instrument or law) or ``none`` (not a cross-reference). Scores: detection recall
(references of any kind found), resolution precision (resolved references pointing at the gold line)
and resolution recall (``present`` references resolved to the gold line); ``absent`` references should
be unresolved. If the resolver's output for a row changed since it was checked, nothing needs
re-checking: the gold is the document, not the resolver's old answer.

**Related clauses** have no gold. CUAD's ``group`` field pairs related categories in one contract
(Cap on Liability with Uncapped Liability, License Grant with Non-Transferable License, ...): a weak,
expert-derived signal. For every contract, segments that overlap a gold span of a grouped category
become nodes; a pair of such segments from two different categories of one group, at least
``--min-gap`` characters apart, is a positive; every other pair of segments that far apart is a
negative. Reported: ROC AUC and recall among the top 1% of far pairs of the pair score, for longdoc's
segment vectors (cosine and the hubness-corrected CSLS that ``xref`` ranks by), against BM25 and
MiniLM over each segment alone.
"""
from __future__ import annotations

import argparse
import csv
import random
import re
import sys
from pathlib import Path

import numpy as np

from longdoc.eval.cuad import default_data_dir
from longdoc.sources.document import Document

CHECKED = Path(__file__).resolve().parent / "xref_checked.tsv"
_MENTION = re.compile(r"(?i:\b(?:sections?|articles?|clauses?|paragraphs?|subsections?|schedules?|exhibits?|"
                      r"annex(?:es)?|appendix|appendices|attachments?)\b)[ \t]*(?=[\dA-Z(])|§")


def _docs(data: Path) -> list[Path]:
    return sorted((data / "txt").glob("*.txt"))


def worksheet(data: Path, n: int, seed: int) -> None:
    from longdoc.tasks.xref import xref

    mentions = []
    for p in _docs(data):
        text = p.read_text(encoding="utf-8")
        mentions += [(p.name, m.start()) for m in _MENTION.finditer(text)]
    random.Random(seed).shuffle(mentions)
    w = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    w.writerow(["doc", "offset", "gold", "gold_line", "context", "system_status", "system_target"])
    cache = {}
    for name, off in mentions[:n]:
        if name not in cache:
            text = (data / "txt" / name).read_text(encoding="utf-8")
            doc = Document(name, text, "text")
            cache[name] = (doc, xref(doc, related=False))
        doc, rep = cache[name]
        ref = _at(rep, off)
        ctx = " ".join(doc.text[max(0, off - 90):off + 90].split())
        tgt = f"{ref.target.label} line {ref.target.place.line}: {ref.target.title}" if ref and ref.target else ""
        w.writerow([name, off, "", "", ctx, ref.status if ref else "not-detected", tgt])


def _at(report, off: int):
    """The reference the resolver found at a mention's offset (the keyword starts it)."""
    for r in report.references:
        if r.place.start <= off < r.place.end or r.place.start == off:
            return r
    return None


def score_checked(data: Path) -> int:
    from longdoc.tasks.xref import xref

    with open(CHECKED, encoding="utf-8") as f:
        rows = list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))
    rows = [r for r in rows if r["gold"] in ("present", "absent", "external", "none")]
    cache = {}
    n = {"present": 0, "absent": 0, "external": 0, "none": 0}
    detected = refs = resolved = resolved_ok = present_ok = absent_unres = false_refs = 0
    for r in rows:
        name, off, gold = r["doc"], int(r["offset"]), r["gold"]
        if name not in cache:
            doc = Document(name, (data / "txt" / name).read_text(encoding="utf-8"), "text")
            cache[name] = xref(doc, related=False)
        ref = _at(cache[name], off)
        n[gold] += 1
        if gold != "none":
            refs += 1
            detected += ref is not None
        elif ref is not None:
            false_refs += 1
        if ref is not None and ref.target is not None:
            resolved += 1
            ok = gold == "present" and str(ref.target.place.line) in r["gold_line"].split("|")
            resolved_ok += ok
            present_ok += ok
        if gold == "absent" and (ref is None or ref.target is None):
            absent_unres += 1
    print(f"# xref reference resolution on {len(rows)} hand-checked mentions ({CHECKED.name})\n")
    print(f"mentions: {n['present']} present-target, {n['absent']} absent-target, {n['external']} external, "
          f"{n['none']} not a reference\n")
    print("| measure | value |\n| --- | --- |")
    print(f"| detection recall (any reference found) | {detected}/{refs} = {detected / max(refs, 1):.3f} |")
    print(f"| resolution precision (target = gold line) | {resolved_ok}/{resolved} = {resolved_ok / max(resolved, 1):.3f} |")
    print(f"| resolution recall (present-target references) | {present_ok}/{n['present']} = "
          f"{present_ok / max(n['present'], 1):.3f} |")
    print(f"| absent targets left unresolved | {absent_unres}/{n['absent']} |")
    print(f"| non-references reported as references | {false_refs}/{n['none']} |")
    return 0


def totals(data: Path) -> int:
    """What ``xref --no-related`` reports, summed over every dev text: references by status, defined
    terms, terms defined but unused, phrases used but never defined."""
    import time

    from longdoc.tasks.xref import xref

    t0, docs, sums = time.perf_counter(), _docs(data), {}
    for p in docs:
        counts = xref(Document(p.name, p.read_text(encoding="utf-8"), "text"), related=False).counts()
        for k, v in counts.items():
            if v is not None:
                sums[k] = sums.get(k, 0) + v
    print(f"# xref --no-related on {len(docs)} dev texts, {time.perf_counter() - t0:.1f} s\n")
    print("| count | value |\n| --- | --- |")
    for k, v in sums.items():
        print(f"| {k.replace('_', ' ')} | {v:,} |")
    return 0


def related_eval(data: Path, limit: int | None, min_gap: int, model: str | None = None) -> int:
    import json

    from longdoc.tasks import retrieve
    from longdoc.tasks.ask import Engine

    groups: dict[str, dict[str, list]] = {}
    grp_of = {}
    with open(data / "labels.dev.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["group"] != "-" and not r["is_impossible"]:
                groups.setdefault(r["doc"], {}).setdefault(r["category"], []).extend(
                    (s["start"], s["end"]) for s in r["spans"])
                grp_of[r["category"]] = r["group"]
    engine = Engine(model=model)
    scores = {"longdoc cosine": [], "longdoc CSLS": [], "MiniLM per segment": [], "BM25 per segment": []}
    labels = []
    docs = sorted(groups)[:limit] if limit else sorted(groups)
    for d in docs:
        text = (data / d).read_text(encoding="utf-8")
        doc = Document(d, text, "text")
        p = engine.passages(doc)
        S = len(p.spans)
        cats = [set() for _ in range(S)]
        for c, spans in groups[d].items():
            for a, b in spans:
                for i, (s, e) in enumerate(p.spans):
                    if min(b, e) - max(a, s) > 0.5 * min(b - a, e - s):
                        cats[i].add(c)
        starts = np.array([s for s, _ in p.spans])
        ends = np.array([e for _, e in p.spans])
        gap = np.maximum(starts[None, :] - ends[:, None], starts[:, None] - ends[None, :])
        iu = np.triu_indices(S, 1)
        far = gap[iu] >= min_gap
        pos = np.array([any(grp_of[a] == grp_of[b] and a != b for a in cats[i] for b in cats[j])
                        for i, j in zip(*iu)])
        if not pos[far].any():
            continue
        V = p.vectors
        sim = V @ V.T
        np.fill_diagonal(sim, -np.inf)
        k = min(10, S - 1)
        r = np.sort(sim, 1)[:, -k:].mean(1)
        csls = 2 * sim - r[:, None] - r[None, :]
        mini = engine.encoder.embed_texts(p.texts).float().numpy()
        lex = retrieve.lexical_scores(p.texts, p.texts)
        lex = (lex + lex.T) / 2
        for name, M in (("longdoc cosine", sim), ("longdoc CSLS", csls), ("MiniLM per segment", mini @ mini.T),
                        ("BM25 per segment", lex)):
            scores[name].append(M[iu][far])
        labels.append(pos[far])
    y = np.concatenate(labels)
    print(f"# related clauses vs CUAD group pairs: {len(labels)} contracts, {int(y.sum())} positive pairs of "
          f"{len(y)} pairs >= {min_gap} chars apart\n")
    print("| pair score | ROC AUC | recall in top 1% | precision in top 1% |\n| --- | --- | --- | --- |")
    for name, parts in scores.items():
        s = np.concatenate(parts)
        order = np.argsort(-s, kind="stable")
        ranks = np.empty(len(s))
        ranks[order] = np.arange(len(s))
        npos, nneg = y.sum(), (~y).sum()
        auc = 1 - (ranks[y].sum() - npos * (npos - 1) / 2) / (npos * nneg)
        top = order[: max(1, len(s) // 100)]
        print(f"| {name} | {auc:.3f} | {y[top].sum() / npos:.3f} | {y[top].mean():.3f} |")
    print(f"| random | 0.500 | 0.010 | {y.mean():.3f} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--worksheet", type=int, default=None, metavar="N")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--related", action="store_true")
    ap.add_argument("--totals", action="store_true")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--min-gap", type=int, default=2000)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    if args.worksheet:
        worksheet(args.data, args.worksheet, args.seed)
        return 0
    if args.related:
        return related_eval(args.data, args.limit, args.min_gap, args.model)
    if args.totals:
        return totals(args.data)
    return score_checked(args.data)


if __name__ == "__main__":
    sys.exit(main())
