"""Checking option values that come from the user (flags, ``params.yaml``, ``-D/-B/-H key=value``).

Each check returns the value in its proper type or raises :class:`~cnnbench.errors.UserError`
naming the option, the value given, what is allowed and what to do. Plugins use these too (they
are part of the plugin surface), so a bad option reads the same whichever plugin it reaches.
"""

from __future__ import annotations

import inspect
import math
import reprlib
from typing import Any, Iterable, Sequence

from .errors import UserError

_SHOW = reprlib.Repr()
_SHOW.maxstring, _SHOW.maxother, _SHOW.maxlevel = 80, 80, 3
_SHOW_CHARS = 160
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 6


def show(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short. A value can be huge (a YAML alias
    bomb is a few lines of params.yaml and 10⁹ strings once printed): a message stays one short line."""
    text = _SHOW.repr(value)
    return text if len(text) <= _SHOW_CHARS else text[:_SHOW_CHARS - 3] + "..."


def _bad(name: str, value: Any, allowed: str, fix: str = "") -> UserError:
    msg = f"{name}: {show(value)} is not allowed; expected {allowed}"
    return UserError(msg + (f"; {fix}" if fix else ""))


def _range(min, max, fmt, min_exclusive: bool = False) -> str:
    """`` >= 1``, `` > 0``, `` from 1e-06 to 1e+06``: the bounds as a message states them."""
    if min is not None and max is not None and not min_exclusive:
        return f" from {fmt(min)} to {fmt(max)}"
    lower = "" if min is None else (f" > {fmt(min)}" if min_exclusive else f" >= {fmt(min)}")
    return lower + (f" <= {fmt(max)}" if max is not None else "")


def as_int(name: str, value: Any, *, min: int | None = None, max: int | None = None, fix: str = "") -> int:
    """An integer (``"8"`` and ``8.0`` are fine, ``8.5``, ``"abc"`` and ``True`` are not) within bounds."""
    allowed = "an integer" + _range(min, max, str)
    if isinstance(value, bool) or value is None:
        raise _bad(name, value, allowed, fix)
    try:
        f = float(value)
        out = int(f)
    except (TypeError, ValueError, OverflowError):
        raise _bad(name, value, allowed, fix) from None
    if f != out or (min is not None and out < min) or (max is not None and out > max):
        raise _bad(name, value, allowed, fix)
    return out


def as_float(name: str, value: Any, *, min: float | None = None, max: float | None = None,
             min_exclusive: bool = False, fix: str = "") -> float:
    """A finite number within bounds (``min_exclusive``: strictly above ``min``)."""
    allowed = "a finite number" + _range(min, max, "{:g}".format, min_exclusive)
    if isinstance(value, bool) or value is None:
        raise _bad(name, value, allowed, fix)
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):
        raise _bad(name, value, allowed, fix) from None
    if not math.isfinite(out):
        raise _bad(name, value, allowed, fix)
    if min is not None and (out < min or (min_exclusive and out == min)):
        raise _bad(name, value, allowed, fix)
    if max is not None and out > max:
        raise _bad(name, value, allowed, fix)
    return out


def as_bool(name: str, value: Any) -> bool:
    """``true``/``false`` (YAML booleans: also ``yes``/``no``, ``on``/``off`` unquoted), or 0/1; anything
    else (``maybe``, ``"false"`` quoted, ``2``) is a mistake, not a truthy value."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) and value in (0, 1):
        return bool(value)
    raise _bad(name, value, "true or false")


_BOOL, _BOOL_OR_NONE = {"bool"}, {"bool|None", "None|bool", "Optional[bool]"}


def _annotation(param: inspect.Parameter) -> str:
    """A parameter's annotation as compact text (it may be a string: ``from __future__ import
    annotations``); an unannotated parameter with a True/False default reads as ``bool``."""
    if param.annotation is param.empty:
        return "bool" if isinstance(param.default, bool) else ""
    if param.annotation is bool:
        return "bool"
    text = param.annotation if isinstance(param.annotation, str) else repr(param.annotation)
    return text.replace(" ", "").replace("typing.", "")


def typed_options(plugin: str, signature: inspect.Signature, options: dict[str, Any]) -> dict[str, Any]:
    """The options for ``plugin``'s factory (of that ``signature``), with every boolean parameter
    (annotated ``bool`` or ``bool | None``, or unannotated with a ``True``/``False`` default) checked
    by :func:`as_bool`: ``-B pretrained=maybe`` is refused, for every plugin, instead of being a truthy
    string in its ``if pretrained:``. Messages read ``<plugin>: <option>: …``, as the plugins' own do."""
    out = dict(options)
    for name, value in options.items():
        param = signature.parameters.get(name)
        kind = _annotation(param) if param is not None else ""
        if kind in _BOOL or (kind in _BOOL_OR_NONE and value is not None):
            out[name] = as_bool(f"{plugin}: {name}", value)
    return out


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def as_size(name: str, value: Any) -> int:
    """A byte count: ``1048576``, ``500M``, ``20G``, ``1.5T`` (binary units; a trailing ``B``/``iB`` is fine)."""
    text = str(value).strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in _UNITS and text[-1:] else ""
    try:
        number = float(text[: len(text) - len(unit)] if unit else text)
    except ValueError:
        raise _bad(name, value, "a size such as 500M, 20G or 1T") from None
    if not math.isfinite(number) or number <= 0:
        raise _bad(name, value, "a positive size such as 500M, 20G or 1T")
    return int(number * _UNITS[unit])


def one_of(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = list(allowed)
    if value not in allowed:
        raise _bad(name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def as_list(name: str, value: Any, *, allow_scalar: bool = True, min_len: int = 0) -> list:
    """A list; a single scalar becomes a one-element list when ``allow_scalar`` (``seeds: 0``), but a
    string is never split into letters."""
    if isinstance(value, (list, tuple)):
        out = list(value)
    elif allow_scalar and value is not None and not isinstance(value, (dict, set)):
        out = [value]
    else:
        raise _bad(name, value, "a list" + (" (or a single value)" if allow_scalar else ""))
    if len(out) < min_len:
        raise _bad(name, value, f"a list of at least {min_len} value{'s' if min_len != 1 else ''}")
    return out


def int_list(name: str, value: Any, *, min: int | None = None, max: int | None = None, min_len: int = 1) -> list[int]:
    items = as_list(name, value, min_len=min_len)
    return [as_int(f"{name}[{k}]", v, min=min, max=max) for k, v in enumerate(items)]


def float_list(name: str, value: Any, *, min: float | None = None, max: float | None = None,
               min_exclusive: bool = False, min_len: int = 1, length: int | None = None) -> list[float]:
    items = as_list(name, value, min_len=min_len)
    if length is not None and len(items) != length:
        raise _bad(name, value, f"a list of exactly {length} numbers")
    return [as_float(f"{name}[{k}]", v, min=min, max=max, min_exclusive=min_exclusive) for k, v in enumerate(items)]


def str_list(name: str, value: Any) -> list[str]:
    items = as_list(name, value)
    for k, v in enumerate(items):
        if not isinstance(v, str) or not v:
            raise _bad(f"{name}[{k}]", v, "a non-empty name")
    return items


def mapping(name: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(name, value, "a mapping (key: value lines)")
    return dict(value)


def unknown_keys(name: str, given: Iterable[str], known: Sequence[str]) -> None:
    """Refuse keys nobody reads (a typo silently ignored is a wrong result waiting to happen)."""
    extra = sorted(set(given) - set(known))
    if extra:
        import difflib

        hints = []
        for key in extra:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UserError(f"{name}: unknown key{'s' if len(extra) > 1 else ''} {', '.join(hints)}; "
                        f"known keys: {', '.join(known)}")
