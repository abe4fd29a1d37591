"""Helpers shared by the heads (not a plugin itself: no entry point)."""

from __future__ import annotations

import inspect

from cnnbench import options as O


def refuse_unknown(head: str, unknown: dict, init) -> None:
    """Options nobody reads (``-H Cee=1``) are typos, not something to ignore: name them and the keys
    ``init`` (the head's constructor) does take."""
    if unknown:
        known = [p.name for p in inspect.signature(init).parameters.values()
                 if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        O.unknown_keys(head, unknown, known)
