"""Text forms of a resource for matching: the folded (accent- and case-insensitive) form of a string, and
of all of a resource's string values (`_content`) or of its narrative (`_text`).

https://hl7.org/fhir/R4/search.html#content and #text. `fold` is the one definition of "the same
letters": search's string normalisation (`search.normalize.norm_string`) and the SQLite functions
`samverka_content` / `samverka_narrative` (registered by `store.sqlite.connect`) both use it; PostgreSQL
has SQL functions of the same names (migration 0018) that fold the same way for Latin script.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import orjson

_TAG = re.compile(r"<[^>]*>")
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&nbsp;": " "}
_ENTITY = re.compile("|".join(_ENTITIES))


def fold(s: str) -> str:
    """NFKD, without combining marks, case-folded, whitespace collapsed: "Åsa  Öberg" → "asa oberg"."""
    if s.isascii():
        return " ".join(s.lower().split())
    t = unicodedata.normalize("NFKD", s)
    t = "".join(c for c in t if not unicodedata.combining(c))
    return " ".join(t.casefold().split())


def _strings(node: Any, out: list[str]) -> None:
    if isinstance(node, str):
        out.append(node)
    elif isinstance(node, dict):
        for value in node.values():
            _strings(value, out)
    elif isinstance(node, list):
        for value in node:
            _strings(value, out)


def content_text(data: bytes | str | None) -> str | None:
    """The folded string values of a stored resource, separated by spaces (keys and numbers left out)."""
    if data is None:
        return None
    out: list[str] = []
    _strings(orjson.loads(data), out)
    return fold(" ".join(out))


def narrative_text(data: bytes | str | None) -> str | None:
    """The folded text of a stored resource's narrative (`text.div` without its tags); None without one."""
    if data is None:
        return None
    div = (orjson.loads(data).get("text") or {}).get("div")
    if not isinstance(div, str):
        return None
    return fold(_ENTITY.sub(lambda m: _ENTITIES[m.group(0)], _TAG.sub(" ", div)))
