"""Persistent, incremental indexes of repositories and document sets (``longdoc index``).

``build`` brings a root's index up to date (encoding only new and changed files, pruning deleted
ones), ``search`` answers questions over it, ``status`` / ``list_indexes`` / ``clean`` inspect and
remove indexes. Storage is described in ``longdoc.index.store``; file selection in
``longdoc.index.walk``; where databases live in ``longdoc.index.locate``.
"""
from .indexer import Progress, Report, build
from .manage import Status, clean, list_indexes, status
from .search import search
from .walk import WalkOptions

__all__ = ["build", "search", "status", "list_indexes", "clean", "Progress", "Report", "Status",
           "WalkOptions"]
