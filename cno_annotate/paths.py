"""File locations as the store keeps them: absolute, normalised, lossless.

Every path the importer records is absolute and normalised (``./a/../a`` and
``/home/me/a`` are one file), so a study stays readable whatever folder the
program is started from.

File names on POSIX are bytes; Python represents bytes that are not UTF-8 as
lone surrogates (``os.fsdecode``), which SQLite cannot hold as text. Such
paths are kept as text with those bytes written ``%XX`` behind a ``%`` marker
(:func:`to_text` / :func:`from_text` round-trip exactly); every other path is
kept as is. :func:`display` gives a printable form for messages.
"""

from __future__ import annotations

import os
import re

_MARK = "%"
_SURROGATE = re.compile("[\udc80-\udcff%]")
_ESCAPE = re.compile("%([0-9A-F]{2})")


def absolute(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute (against the current folder) and normalised, symlinks kept."""
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def _needs_escape(path: str) -> bool:
    if path.isascii():
        return False
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return True
    return False


def to_text(path: str | os.PathLike[str]) -> str:
    """The text the store keeps for a path (valid UTF-8, reversible by :func:`from_text`)."""
    path = os.fspath(path)
    if not _needs_escape(path) and not path.startswith(_MARK):
        return path

    def escape(match: re.Match[str]) -> str:
        char = match.group(0)
        return "%25" if char == "%" else f"%{ord(char) - 0xDC00:02X}"

    return _MARK + _SURROGATE.sub(escape, path)


def from_text(text: str) -> str:
    """The path (as ``os.fsdecode`` would give it) that :func:`to_text` stored as ``text``."""
    if not text.startswith(_MARK):
        return text

    def unescape(match: re.Match[str]) -> str:
        byte = int(match.group(1), 16)
        return chr(0xDC00 + byte) if byte >= 0x80 else chr(byte)

    return _ESCAPE.sub(unescape, text[len(_MARK):])


def display(path: str | os.PathLike[str]) -> str:
    """A printable form of a path: bytes that are not UTF-8 shown as ``\\xNN``."""
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def is_under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (whole path components only)."""
    folder = folder.rstrip(os.sep) or os.sep
    return path == folder or path.startswith(folder if folder.endswith(os.sep) else folder + os.sep)


def exists(path: str) -> bool:
    """Whether a recorded path names an existing file (relative paths never do: their base is unknown)."""
    return os.path.isabs(path) and os.path.isfile(path)


def same_file(a: str, b: str) -> bool:
    """Whether two paths name the same existing file (through links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


#: Environment variable that overrides the per-user configuration folder (tests use it).
CONFIG_ENV = "CNO_ANNOTATE_CONFIG"


def config_dir() -> str:
    """The per-user configuration folder: ``$CNO_ANNOTATE_CONFIG``, else the platform's (not created here)."""
    if os.environ.get(CONFIG_ENV):
        return absolute(os.environ[CONFIG_ENV])
    from platformdirs import user_config_dir

    return absolute(user_config_dir("cno-annotate", appauthor=False))


#: Environment variable that overrides the per-user cache folder (tests use it).
CACHE_ENV = "CNO_ANNOTATE_USER_CACHE"


def user_cache_dir() -> str:
    """The per-user cache folder: ``$CNO_ANNOTATE_USER_CACHE``, else the platform's (not created here)."""
    if os.environ.get(CACHE_ENV):
        return absolute(os.environ[CACHE_ENV])
    from platformdirs import user_cache_dir as platform_cache_dir

    return absolute(platform_cache_dir("cno-annotate", appauthor=False))
