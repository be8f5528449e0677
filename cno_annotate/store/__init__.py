"""Persistent storage: the study store (SQLite) and its cache."""

from cno_annotate.store.db import Store, default_store_dir

__all__ = ["Store", "default_store_dir"]
