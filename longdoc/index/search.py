"""Questions over an indexed tree: three rankings of the stored segments fused by reciprocal rank (the
fusion ``ask`` uses): cosine to the in-context vectors, cosine to the segment-alone vectors, and BM25
over the stored text and labels (SQLite FTS5, porter-stemmed; identifiers split at ``_``).

The reported score is the dense cosine (as for ``ask``), so ``--threshold`` means the same thing on
a file and on a tree. Paths in results are relative to the indexed root; a stored path that would
leave the root (absolute, or with ``..``) is never returned.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np

from ..errors import LongdocError
from ..results import Answer, Hit
from ..sources.text import without_surrogates
from . import locate
from .indexer import LazyEncoder, build, model_mismatch
from .store import IndexNotWritable, Store

# Candidates taken from the lexical side per question; beyond this depth a passage's reciprocal
# rank (1/(60+r)) is under a fifth of the best one's and cannot lift it into a top 10.
LEXICAL_DEPTH = 300
# Reciprocal-rank fusion weights of (in-context cosine, segment-alone cosine, FTS5 BM25), chosen on the
# docstring -> function check (python -m longdoc.eval.code_search; docs/index.md): at full weight the
# in-context ranking (window 128) pulled Recall@5 down to 0.616, at 0.25 it gave 0.692; no held-out set.
FUSION_WEIGHTS = (0.25, 1.0, 1.0)
# Default cut on the reported score (the in-context cosine): keep everything ranked.
DEFAULT_THRESHOLD = -1.0
_STOPWORDS = frozenset("""a an and are as at be by for from has have if in into is it its of on or
that the their then there these this to was were will with which what when where who how do does
return returns""".split())


def fts_query(question: str) -> str | None:
    """An FTS5 query matching any content word of the question (each quoted: no FTS5 syntax leaks)."""
    words, seen = [], set()
    for w in re.findall(r"\w+", question.lower()):
        if len(w) < 2 or w in _STOPWORDS or w in seen:
            continue
        seen.add(w)
        words.append(f'"{w}"')
    return " OR ".join(words) if words else None


def _safe_rel(path: str) -> bool:
    p = PurePosixPath(path)
    return not p.is_absolute() and ".." not in p.parts and "\\" not in path


def _file_filter(store: Store, lang: Sequence[str] | None, glob: Sequence[str] | None) -> list[int] | None:
    """File ids allowed by ``--lang`` (language or kind) and ``--glob`` (gitignore syntax), or None."""
    if not lang and not glob:
        return None
    import pathspec

    try:
        spec = pathspec.GitIgnoreSpec.from_lines(glob) if glob else None
    except Exception as e:  # pathspec's own error types for a malformed pattern ("[")
        raise LongdocError(f"--glob: not a valid pattern ({e})") from None
    langs = {x.lower() for x in lang} if lang else None
    ids, known, globbed = [], set(), 0
    for fid, path, language, kind in store.conn.execute("SELECT id, path, language, kind FROM files"):
        known.update(x.lower() for x in (language, kind) if x)
        matched = spec is None or spec.match_file(path)
        globbed += matched
        if langs is not None and (language or "").lower() not in langs and (kind or "").lower() not in langs:
            continue
        if matched:
            ids.append(fid)
    if spec is not None and not globbed:
        raise LongdocError(f"--glob {' '.join(glob)}: no indexed file matches")
    if langs is not None and not langs & known:  # a typo would otherwise read as "nothing found"
        raise LongdocError(f"--lang {', '.join(sorted(langs))}: no indexed file has it (the index holds: "
                           f"{', '.join(sorted(known)) or 'nothing'})")
    return ids


def _holds_no_file(db: Path) -> bool:
    try:
        with Store(db, readonly=True) as store:
            return store.counts()["files"] == 0
    except LongdocError:  # not readable yet (being created): nothing to search either
        return True


def _stderr(msg: str) -> None:
    print(f"longdoc: {msg}", file=sys.stderr, flush=True)


def _stderr_warning(msg: str) -> None:
    print(f"longdoc: warning: {msg}", file=sys.stderr, flush=True)


def search(
    root: str | Path,
    questions: Sequence[str],
    *,
    k: int = 5,
    threshold: float | None = None,
    model: str | None = None,
    window: int | None = None,
    lang: Sequence[str] | None = None,
    glob: Sequence[str] | None = None,
    index_dir: str | Path | None = None,
    encoder=None,
    update: bool = True,
    notify: Callable[[str], None] | None = _stderr,
    warn: Callable[[str], None] | None = _stderr_warning,
) -> list[Answer]:
    """The ``k`` best passages of the indexed tree ``root`` for each question.

    With ``update`` (the default) the index is brought up to date first: created when missing (with
    a message, since the first run encodes everything), else refreshed for changed and deleted files
    (a stat per file; nothing is encoded when nothing changed). If another process is indexing the
    root, or the index cannot be written (a read-only mount), the refresh is skipped and the last
    committed state is searched.
    ``notify`` gets notes on what is done first (indexing, refreshing, waiting for another process),
    ``warn`` why the results may be out of date (the refresh was skipped) and the loader's warnings
    about the files it reads ("<path>: <warning>"); None drops them (`ask --quiet` drops the notes only).
    ``encoder`` (tests, evaluation) replaces the model named by ``model``.
    """
    from longdoc.tasks import retrieve

    # the loader's warnings about files read while the index is brought up to date, as `index` says them
    file_warn = (lambda rel, message: warn(f"{rel}: {message}")) if warn else None
    questions = [without_surrogates(q).strip() for q in questions]  # also for callers other than the CLI
    if not questions or any(not q for q in questions):
        raise LongdocError("empty question")
    root = Path(root).resolve()
    if not root.is_dir():
        raise LongdocError(f"{root}: not a directory")
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    db = locate.db_path(root, index_dir)

    engine = None
    if encoder is None:
        from longdoc.tasks.ask import Engine

        engine = Engine(model=model, window=window)
        lazy = LazyEncoder(factory=lambda: engine.encoder)
    else:
        lazy = LazyEncoder(encoder)

    if not db.exists():
        if not update:
            raise LongdocError(f"{root} is not indexed: run `longdoc index {root}`")
        if notify:
            notify(f"{root} is not indexed yet: indexing it first (later questions reuse the index)")
        build(root, encoder=lazy, index_dir=index_dir, on_warning=file_warn)
    elif update:
        try:
            rep = build(root, encoder=lazy, index_dir=index_dir, wait=False, on_warning=file_warn)
            if notify and not rep.up_to_date:
                notify(f"index updated: {len(rep.encoded)} re-encoded, {len(rep.deleted)} removed")
        except IndexNotWritable:
            if warn:
                warn(f"cannot update the index at {db} (read-only); answering from what it holds, which "
                       "may be out of date")
        except LongdocError as e:
            if "another `longdoc index`" not in str(e):
                raise
            if _holds_no_file(db):  # that process's first run: nothing committed to search yet
                if notify:
                    notify("another process is indexing this tree for the first time; waiting for it")
                build(root, encoder=lazy, index_dir=index_dir, wait=True, on_warning=file_warn)
            elif warn:
                warn("another process is updating the index; searching its last committed state")

    with Store(db, readonly=True, root=str(root)) as store:
        manifest = store.manifest() or {}
        if engine is not None and manifest.get("model_key") == engine.identity:
            # The same model folder and settings made these vectors: question vectors may come from
            # the ask cache without loading the model at all.
            qvecs = engine.question_vectors(questions)
        else:
            enc = lazy.get()
            if manifest.get("model_fingerprint"):
                msg = model_mismatch(str(root), manifest, enc)
                if msg:
                    raise LongdocError(msg)
                if engine is not None and enc is engine._encoder:
                    _remember_model_key(db, root, engine.identity)
            qvecs = _as_numpy(enc.embed_texts(questions))
        return _rank(store, questions, qvecs, k, threshold, lang, glob, retrieve)


def _as_numpy(x) -> np.ndarray:
    return x.float().numpy() if hasattr(x, "numpy") else np.asarray(x, dtype=np.float32)


def _remember_model_key(db: Path, root: Path, key: str) -> None:
    """Record the cheap model key so the next question skips loading the model; best effort (a
    read-only index still answers, it only loads the model each time)."""
    try:
        with Store(db, root=str(root)) as w:
            w.set_model_key(key)
    except LongdocError:
        pass


def _rank(store, questions, qvecs, k, threshold, lang, glob, retrieve) -> list[Answer]:
    file_ids = _file_filter(store, lang, glob)
    ids, vecs = store.vectors(file_ids)
    if len(ids) == 0:
        return [Answer(q, []) for q in questions]
    dense = retrieve.dense_scores(vecs, qvecs)  # (Q, S) segments in their file's context
    local = retrieve.dense_scores(store.vectors(file_ids, "local")[1], qvecs)  # (Q, S) segments alone
    lexical = np.zeros_like(dense)
    col = {int(i): j for j, i in enumerate(ids)}
    for qi, q in enumerate(questions):
        fq = fts_query(q)
        if fq is None:
            continue
        for sid, score in store.lexical(fq, LEXICAL_DEPTH):
            j = col.get(sid)
            if j is not None:
                lexical[qi, j] = score
    fused = retrieve.rank_fusion(dense, local, lexical, weights=list(FUSION_WEIGHTS))
    tops = retrieve.top_k(fused, k)
    rows = store.segments(sorted({int(ids[j]) for t in tops for j in t}))
    answers = []
    for qi, q in enumerate(questions):
        hits = []
        for j in tops[qi]:
            score = float(dense[qi, j])
            seg = rows.get(int(ids[j]))
            if score < threshold or seg is None or not _safe_rel(seg.path):
                continue
            hits.append(Hit(path=seg.path, char_start=seg.char_start, char_end=seg.char_end, page=seg.page,
                            line_start=seg.line_start, line_end=seg.line_end, score=round(score, 4),
                            text=seg.text, label=seg.label))
        answers.append(Answer(q, hits))
    return answers
