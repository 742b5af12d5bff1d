"""Where an index lives: one SQLite file per indexed root.

Precedence (one rule, as everywhere in longdoc): ``--index DIR`` > ``LONGDOC_INDEX_DIR`` >
``$LONGDOC_HOME/index`` > the user cache folder (``platformdirs.user_cache_dir("longdoc")/index``).
With ``--index DIR`` the database is ``DIR/index.sqlite`` (one root per folder, e.g. an in-tree
``.longdoc/``, which the walk never indexes); an in-tree ``ROOT/.longdoc/index.sqlite`` is found
without the flag. In the shared folders the file is ``<root name>-<16 hex of sha256(real root path)>.sqlite``
so two checkouts with the same name do not collide.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

IN_TREE = ".longdoc"
DB_NAME = "index.sqlite"


def index_home() -> Path:
    """The folder holding the indexes of all roots (no ``--index``)."""
    if os.environ.get("LONGDOC_INDEX_DIR"):
        return Path(os.environ["LONGDOC_INDEX_DIR"]).expanduser()
    if os.environ.get("LONGDOC_HOME"):
        return Path(os.environ["LONGDOC_HOME"]).expanduser() / "index"
    import platformdirs

    return Path(platformdirs.user_cache_dir("longdoc", appauthor=False)) / "index"


def db_path(root: str | os.PathLike, index_dir: str | os.PathLike | None = None) -> Path:
    """The database file for ``root`` (which need not be indexed yet)."""
    root = Path(root).resolve()
    if index_dir is not None:
        return Path(index_dir).expanduser().resolve() / DB_NAME
    in_tree = root / IN_TREE / DB_NAME
    if in_tree.exists():
        return in_tree
    digest = hashlib.sha256(str(root).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in root.name) or "root"
    return index_home() / f"{name}-{digest}.sqlite"


def all_dbs() -> list[Path]:
    """Every index database in the shared folder, by name."""
    home = index_home()
    if not home.is_dir():
        return []
    return sorted(p for p in home.glob("*.sqlite") if p.is_file())
