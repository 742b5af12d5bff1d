"""Docstring -> function retrieval on a real package, and the cost of keeping its index up to date.

    python -m longdoc.eval.code_search [--package click] [--limit N] [--json]

The package's source (from site-packages) is copied with every function docstring removed; the
copy is indexed with `longdoc index`; each removed docstring's first paragraph is a query whose
answer is its function. A hit is a returned segment of the right file overlapping the function's
lines. Every system ranks the same segments (those stored in the index):

* BM25: bm25s over the segment texts, English-stemmed (``longdoc.tasks.retrieve.lexical_scores``);
* MiniLM chunks: all-MiniLM-L6-v2 over each segment alone (``Encoder.embed_texts``), cosine;
* MiniLM chunks + BM25: those two fused by reciprocal rank (what a non-contextual index would do);
* longdoc: ``longdoc.index.search``: the in-context vectors (each file encoded whole with the long-
  context encoder, mean-pooled per segment), the segment-alone vectors and FTS5 BM25 over text and
  labels, fused by reciprocal rank; and each of its parts alone or in pairs (ablations).

Also measured: full index time and tokens/s, re-index time of an unchanged tree and after one changed
file (in process, and as a `longdoc index` command including Python start-up), query latency, and
database size. Figures go to docs/index.md.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

K_MAX = 10


@dataclass
class Query:
    text: str
    path: str  # relative to the copied package root
    name: str  # qualified name, e.g. "Context.invoke"
    lines: list[tuple[int, int]]  # line ranges of the function in the stripped file (overloads: several)


def _qualified_defs(tree: ast.AST):
    """(qualified name, node) of every function and method, depth first."""
    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    yield name, child
                yield from visit(child, name + ".")
            else:
                yield from visit(child, prefix)
    yield from visit(tree, "")


def strip_docstrings(source: str) -> tuple[str, dict[str, str]]:
    """The source with function/method docstrings removed (a bare ``pass`` keeps bodies valid), and
    {qualified name: docstring}. One-line ``def f(): "doc"`` forms are left alone."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    cuts, docs = [], {}
    for name, node in _qualified_defs(tree):
        first = node.body[0]
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            continue
        if first.lineno == node.lineno:  # def f(): "doc" on one line
            continue
        docs.setdefault(name, first.value.value)
        indent = lines[first.lineno - 1][: first.col_offset]
        cuts.append((first.lineno, first.end_lineno, indent if len(node.body) == 1 else None))
    for start, end, pass_indent in sorted(cuts, reverse=True):
        lines[start - 1:end] = [f"{pass_indent}pass\n"] if pass_indent is not None else []
    return "".join(lines), docs


def make_corpus(package: str, out: Path, min_words: int = 4) -> list[Query]:
    """Copy ``package`` without docstrings into ``out``; the queries and where their answers are."""
    mod = importlib.import_module(package)
    src = Path(mod.__file__).parent
    queries = []
    for f in sorted(src.rglob("*.py")):
        rel = f.relative_to(src).as_posix()
        if "__pycache__" in rel:
            continue
        text = f.read_text(encoding="utf-8")
        stripped, docs = strip_docstrings(text)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(stripped, encoding="utf-8")
        spans: dict[str, list[tuple[int, int]]] = {}
        for name, node in _qualified_defs(ast.parse(stripped)):
            spans.setdefault(name, []).append((node.lineno, node.end_lineno))
        for name, doc in docs.items():
            para = inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ").strip()
            if len(para.split()) < min_words or name not in spans:
                continue
            queries.append(Query(para[:500], rel, name, spans[name]))
    # An mtime well in the past, as in a real checkout (files written this second are re-hashed).
    old = time.time() - 3600
    for p in out.rglob("*"):
        os.utime(p, (old, old))
    return queries


def first_hit(ranked, seg_meta, q: Query) -> int | None:
    """1-based rank of the first segment of q's file overlapping one of q's line ranges."""
    for r, sid in enumerate(ranked[:K_MAX], 1):
        path, l0, l1 = seg_meta[sid]
        if path == q.path and any(l0 <= b and a <= l1 for a, b in q.lines):
            return r
    return None


def metrics(ranks: list[int | None]) -> dict:
    n = len(ranks)
    return {
        "R@1": sum(1 for r in ranks if r and r <= 1) / n,
        "R@5": sum(1 for r in ranks if r and r <= 5) / n,
        "R@10": sum(1 for r in ranks if r and r <= 10) / n,
        "MRR@10": sum(1.0 / r for r in ranks if r) / n,
    }


def _cli(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "longdoc", *args], env=env, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"longdoc {' '.join(args)}: {r.stderr.strip()}")
    return time.perf_counter() - t


def run(package: str, limit: int | None, model: str | None) -> dict:
    from longdoc.index import build, search
    from longdoc.index.locate import db_path
    from longdoc.index.manage import db_size
    from longdoc.index.search import LEXICAL_DEPTH, fts_query
    from longdoc.index.store import Store
    from longdoc.model import load_encoder
    from longdoc.tasks import retrieve

    work = Path(tempfile.mkdtemp(prefix="longdoc-code-search-"))
    try:
        root = work / package
        queries = make_corpus(package, root)
        if limit:
            queries = queries[:limit]
        index_dir = root / ".longdoc"  # in-tree, so `longdoc ask ROOT` finds it without flags
        n_lines = sum(len(p.read_text().splitlines()) for p in root.rglob("*.py"))

        t = time.perf_counter()
        enc = load_encoder(model)
        t_load = time.perf_counter() - t

        rep = build(root, encoder=enc, index_dir=index_dir)
        t_index, tokens = rep.seconds, rep.tokens
        t_nochange = build(root, encoder=enc, index_dir=index_dir).seconds
        victim = max(root.rglob("*.py"), key=lambda p: p.stat().st_size)
        with open(victim, "a", encoding="utf-8") as f:
            f.write("\n\ndef _eval_added(x):\n    return x + 1\n")
        rep1 = build(root, encoder=enc, index_dir=index_dir)
        assert rep1.encoded == [victim.relative_to(root).as_posix()], rep1.encoded
        t_onechange = rep1.seconds

        env = dict(os.environ, LONGDOC_HOME=str(work / "home"))
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
        t_cli_nochange = _cli(["index", str(root), "--index", str(index_dir), "-q"], env)

        db = db_path(root, index_dir)
        with Store(db, readonly=True) as store:
            ids, vecs = store.vectors()
            local = store.vectors(column="local")[1]
            meta = store.segments(list(map(int, ids)))
            qtexts = [q.text for q in queries]
            col = {int(i): j for j, i in enumerate(ids)}
            fts = np.zeros((len(qtexts), len(ids)), dtype=np.float32)
            for qi, q in enumerate(qtexts):
                fq = fts_query(q)
                for sid, score in (store.lexical(fq, LEXICAL_DEPTH) if fq else []):
                    fts[qi, col[sid]] = score
        seg_meta = {sid: (s.path, s.line_start, s.line_end) for sid, s in meta.items()}
        texts = [meta[int(i)].text for i in ids]

        # The systems, all over the same segments ------------------------------------------------
        results = {}
        qv = enc.embed_texts(qtexts).float().numpy()

        def ranked(scores):
            return [[int(ids[j]) for j in row] for row in retrieve.top_k(scores, K_MAX)]

        ctx = retrieve.dense_scores(vecs, qv)
        chunk = retrieve.dense_scores(local, qv)  # = Encoder.embed_texts of each segment alone
        bm25 = retrieve.lexical_scores(texts, qtexts)
        systems = {
            "BM25 (bm25s, same segments)": bm25,
            "MiniLM chunks (segment alone)": chunk,
            "MiniLM chunks + BM25 (bm25s), RRF": retrieve.rank_fusion(chunk, bm25),
            "ablation: longdoc in-context vectors alone": ctx,
            "ablation: FTS5 BM25 over text + labels alone": fts,
            "ablation: MiniLM chunks + FTS5, RRF": retrieve.rank_fusion(chunk, fts),
            "ablation: in-context + FTS5, RRF": retrieve.rank_fusion(ctx, fts),
            **{f"ablation: in-context (weight {w}) + chunks + FTS5, RRF":
               retrieve.rank_fusion(ctx, chunk, fts, weights=[w, 1.0, 1.0]) for w in (0.25, 0.5)},
        }
        for name, scores in systems.items():
            results[name] = [first_hit(r, seg_meta, q) for r, q in zip(ranked(scores), queries)]
        t = time.perf_counter()
        answers = search(root, qtexts, k=K_MAX, threshold=-2.0, encoder=enc, index_dir=index_dir, update=False)
        t_batch = time.perf_counter() - t
        id_of = {(s.path, s.char_start): sid for sid, s in meta.items()}
        results["longdoc: in-context (0.25) + chunks + FTS5, RRF (`longdoc ask DIR`)"] = [
            first_hit([id_of[(h.path, h.char_start)] for h in a.results], seg_meta, q)
            for a, q in zip(answers, queries)]

        # Query latency: one question at a time, as `longdoc ask DIR` runs it (refresh check included)
        lat_update, lat_noupdate = [], []
        for q in qtexts[:20]:
            t = time.perf_counter()
            search(root, [q], k=5, encoder=enc, index_dir=index_dir, update=True, notify=None)
            lat_update.append(time.perf_counter() - t)
            t = time.perf_counter()
            search(root, [q], k=5, encoder=enc, index_dir=index_dir, update=False, notify=None)
            lat_noupdate.append(time.perf_counter() - t)
        if model:
            env["LONGDOC_MODEL"] = model
        # The first command checks the model fingerprint (this index was built in process, with the
        # encoder passed in, so no model key was recorded) and records the key; each later new
        # question is the everyday case: Python start-up, refresh, numpy question vector, search.
        t_cli_ask_first = _cli(["ask", str(root), qtexts[0], "--json"], env)
        t_cli_ask = statistics.median([_cli(["ask", str(root), q, "--json"], env)
                                       for q in (qtexts[1:6] or qtexts[:1])])

        return {
            "package": package,
            "files": rep.files,
            "lines": n_lines,
            "segments": len(ids),
            "queries": len(queries),
            "model": getattr(enc, "name", None),
            "window": getattr(getattr(enc, "cfg", None), "windows", [None])[0],
            "systems": {name: metrics(r) for name, r in results.items()},
            "model_load_s": t_load,
            "index_s": t_index,
            "tokens": tokens,
            "tokens_per_s": tokens / t_index if t_index else None,
            "reindex_nochange_s": t_nochange,
            "reindex_nochange_cli_s": t_cli_nochange,
            "reindex_one_file_s": t_onechange,
            "query_ms_median": 1000 * statistics.median(lat_noupdate),
            "query_with_refresh_ms_median": 1000 * statistics.median(lat_update),
            "batch_query_ms_per_question": 1000 * t_batch / max(len(queries), 1),
            "db_bytes": db_size(db),
            "cli_ask_first_s": t_cli_ask_first,
            "cli_ask_s": t_cli_ask,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def table(res: dict) -> str:
    out = [f"Docstring -> function retrieval on `{res['package']}` ({res['files']} files, {res['lines']:,} lines, "
           f"{res['segments']:,} segments, {res['queries']} queries; model {res['model']}, window {res['window']})",
           "", "| system | R@1 | R@5 | R@10 | MRR@10 |", "| --- | --- | --- | --- | --- |"]
    for name, m in res["systems"].items():
        out.append(f"| {name} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} | {m['MRR@10']:.3f} |")
    out += ["", "| cost | value |", "| --- | --- |",
            f"| model load | {res['model_load_s']:.1f} s |",
            f"| full index (CPU) | {res['index_s']:.1f} s, {res['tokens']:,} tokens, {res['tokens_per_s']:,.0f} tokens/s |",
            f"| re-index, no change (in process) | {res['reindex_nochange_s']:.2f} s |",
            f"| re-index, no change (`longdoc index` command) | {res['reindex_nochange_cli_s']:.2f} s |",
            f"| re-index, one changed file | {res['reindex_one_file_s']:.2f} s |",
            f"| query, one question (warm) | {res['query_ms_median']:.0f} ms |",
            f"| query incl. freshness check (warm) | {res['query_with_refresh_ms_median']:.0f} ms |",
            f"| `longdoc ask DIR` command, a new question (median of 5) | {res['cli_ask_s']:.2f} s |",
            f"| `longdoc ask DIR` command, first after an in-process index (loads torch) | {res['cli_ask_first_s']:.1f} s |",
            f"| database size | {res['db_bytes'] / 2**20:.1f} MiB |"]
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", default="click", help="an installed pure-Python package (default click)")
    ap.add_argument("--limit", type=int, help="use only the first N queries")
    ap.add_argument("--model", help="local model folder (default: the bundled MiniLM)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    res = run(args.package, args.limit, args.model)
    print(json.dumps(res, indent=2) if args.json else table(res))


if __name__ == "__main__":
    main()
