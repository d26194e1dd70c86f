"""JSON pointers (RFC 6901): one escape and one join for every error that names a place in a document."""

from __future__ import annotations

from collections.abc import Iterable


def escape(token: str | int) -> str:
    """One reference token: ``~`` as ``~0`` and ``/`` as ``~1`` (RFC 6901 §3), in that order."""
    text = token if type(token) is str else str(token)
    if "~" in text or "/" in text:
        return text.replace("~", "~0").replace("/", "~1")
    return text


def unescape(token: str) -> str:
    """The member name a reference token stands for (``~1`` first, then ``~0``: RFC 6901 §4)."""
    return token.replace("~1", "/").replace("~0", "~")


def join(base: str, *tokens: str | int) -> str:
    """``base`` followed by each token, escaped (``join("", "a/b", 0) == "/a~1b/0"``)."""
    # A plain loop calling escape() only when needed: validation builds a pointer per attribute.
    for token in tokens:
        text = token if type(token) is str else str(token)
        base += "/" + (escape(text) if "~" in text or "/" in text else text)
    return base


def pointer(path: Iterable[str | int]) -> str:
    """The pointer to ``path`` from the document root (``""`` for the root itself)."""
    return join("", *path)
