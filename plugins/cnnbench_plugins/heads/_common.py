"""Helpers shared by the heads (not a plugin itself: no entry point)."""

from __future__ import annotations

import inspect

from cnnbench import options as O
from cnnbench.errors import UserError


def refuse_unknown(head: str, unknown: dict, init) -> None:
    """Options nobody reads (``-H Cee=1``) are typos, not something to ignore: name them and the keys
    ``init`` (the head's constructor) does take."""
    if unknown:
        known = [p.name for p in inspect.signature(init).parameters.values()
                 if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        O.unknown_keys(head, unknown, known)


def check_device(name: str, value, used: bool) -> None:
    """A torch device name (``cpu``, ``cuda``, ``cuda:1``); a CUDA device must exist when the batched solver runs."""
    import torch

    try:
        dev = torch.device(value) if isinstance(value, str) and value else None
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{name}: {value!r} is not allowed; expected a torch device: 'cpu', 'cuda', 'cuda:<n>' or 'mps'")
    if used and dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{name}: {value!r}: no CUDA device is available here; use device: cpu")
    if used and dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"{name}: {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                        f"(cuda:0 … cuda:{torch.cuda.device_count() - 1}); pick one of them or use device: cpu")
    if used and dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{name}: {value!r}: no Apple MPS device is available here; use device: cpu")
