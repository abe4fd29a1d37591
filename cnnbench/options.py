"""Options from the user (flags, ``params.yaml``, ``-D/-B/-H key=value``): declared once, checked alike.

A plugin declares its options as one :class:`Options` dataclass of :func:`option` fields (name,
type, default, bounds or allowed values, one line of help); :meth:`Options.parse` checks what the
user gave against it. The checks underneath (:func:`as_int`, :func:`as_float`, :func:`one_of` …)
return the value in its proper type or raise :class:`~cnnbench.errors.UserError` naming the option,
the value given, what is allowed and what to do. Plugins use these too (they are part of the plugin
surface), so a bad option reads the same whichever plugin it reaches.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import os
import reprlib
import types
import typing
from typing import Any, Callable, Iterable, Mapping, Sequence

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


# -- declared options ------------------------------------------------------------------------------
# A plugin declares each option once, as a field of an ``Options`` dataclass: its name, type, default,
# bounds or allowed values, and one line of help. Everything else comes from that declaration: the
# check of a given value, "did you mean" for an unknown key, ``cnnbench plugins NAME``, the resolved
# options in the run record and the feature signature, and the docs' option tables.

def option(default: Any, help: str, *, min: float | None = None, max: float | None = None,
           min_exclusive: bool = False, choices: Sequence[Any] | None = None, length: int | None = None,
           min_len: int = 1, check: Callable[[str, Any], Any] | None = None, fix: str = "",
           record: bool = True, flag: str | None = None) -> Any:
    """One option: its ``default`` and one line of ``help``; the type comes from the field's annotation.

    ``min``/``max`` (``min_exclusive``) bound numbers and the items of number tuples, ``choices``
    limits a ``str`` (a ``Literal[...]`` annotation says the same), ``length``/``min_len`` size a
    tuple, ``fix`` is the hint an error adds. ``check(name, value) -> value`` replaces the derived
    check where a type cannot say it (it receives ``"<plugin>: <option>"`` as the name).
    ``record=False``: an option that says where, not what (a data set's folder), left out of
    :meth:`Options.recorded` and so of signatures and run records. ``flag``: a command-line flag
    other than ``--<name-with-dashes>`` (``""``: none), where options become flags."""
    meta = {"help": help, "min": min, "max": max, "min_exclusive": min_exclusive, "choices": choices,
            "length": length, "min_len": min_len, "check": check, "fix": fix, "record": record,
            "flag": flag}
    if isinstance(default, (list, dict, set)):
        frozen = copy.deepcopy(default)
        return dataclasses.field(default_factory=lambda: copy.deepcopy(frozen), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One declared option as ``cnnbench plugins NAME`` and the docs show it."""

    name: str
    type: str
    default: Any
    allowed: str
    help: str


def _type_text(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(dict.fromkeys("None" if a is None else type(a).__name__ for a in args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is tuple:
        return f"list of {_type_text(args[0])}" if args else "list"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def checker(tp: Any, meta: Mapping[str, Any]) -> Callable[[str, Any], Any]:
    """The check a field's annotation and metadata imply: ``(name, value) -> value in its type``."""
    fix = meta.get("fix", "")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:  # X | None: None, or an X
        inner = checker(next(a for a in args if a is not type(None)) if len(args) == 2
                         else typing.Union[tuple(a for a in args if a is not type(None))], meta)
        return lambda name, value: None if value is None else inner(name, value)
    if meta.get("check") is not None:
        return meta["check"]
    lo, hi, excl = meta.get("min"), meta.get("max"), meta.get("min_exclusive", False)
    if origin is typing.Literal or meta.get("choices"):
        allowed = list(args) if origin is typing.Literal else list(meta["choices"])
        return lambda name, value: one_of(name, value, allowed)
    if tp is bool:
        return as_bool
    if tp is int:
        return lambda name, value: as_int(name, value, min=lo, max=hi, fix=fix)
    if tp is float:
        return lambda name, value: as_float(name, value, min=lo, max=hi, min_exclusive=excl, fix=fix)
    if tp is str:
        def text(name: str, value: Any) -> str:
            if not isinstance(value, str):
                raise _bad(name, value, "a text value", fix)
            return value
        return text
    if origin is tuple:
        item = args[0] if args else Any
        n, min_len = meta.get("length"), meta.get("min_len", 1)
        if item is float:
            return lambda name, value: tuple(float_list(name, value, min=lo, max=hi, min_exclusive=excl,
                                                        min_len=min_len, length=n))
        if item is int:
            return lambda name, value: tuple(int_list(name, value, min=lo, max=hi, min_len=min_len))
        if item is str:
            return lambda name, value: tuple(str_list(name, value))
        return lambda name, value: tuple(as_list(name, value, min_len=min_len))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return mapping
    return lambda name, value: value  # Any: the plugin checks it in its own check()


def plain(value: Any) -> Any:
    """JSON's types: tuples become lists (the run record and the signature store JSON)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class Options:
    """Base of a plugin's options: subclass it as a frozen dataclass of :func:`option` fields.

    ``Options.parse(owner, given)`` refuses unknown keys (naming the closest known one), checks each
    value as its field declares and returns the instance; override :meth:`check` for rules that tie
    several options together (it may return a changed copy, :func:`dataclasses.replace`)."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def _hints(cls) -> dict[str, Any]:
        hints = cls.__dict__.get("_resolved_hints")
        if hints is None:
            hints = typing.get_type_hints(cls)
            type.__setattr__(cls, "_resolved_hints", hints)
        return hints

    @classmethod
    def default(cls, name: str) -> Any:
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    @classmethod
    def parse(cls, owner: str, given: Mapping[str, Any] | None = None) -> "Options":
        given = dict(given or {})
        unknown_keys(owner, given, cls.names())
        hints, values = cls._hints(), {}
        for f in dataclasses.fields(cls):
            value = given[f.name] if f.name in given else cls.default(f.name)
            values[f.name] = checker(hints[f.name], f.metadata)(f"{owner}: {f.name}", value)
        made = cls(**values)
        return made.check(owner) or made

    def check(self, owner: str) -> "Options | None":
        """Rules across options; raise :class:`UserError` (message ``<owner>: …``) or return a copy."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """The resolved options in JSON's types: the run record's and the signature's copy."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def recorded(self) -> dict[str, Any]:
        """:meth:`to_dict` without the ``record=False`` options: what the results depend on."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata.get("record", True)}

    @classmethod
    def describe(cls) -> list[OptionInfo]:
        hints, out = cls._hints(), []
        for f in dataclasses.fields(cls):
            tp, meta = hints[f.name], f.metadata
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            literal = typing.get_origin(tp) is typing.Literal or (
                len(args) == 1 and typing.get_origin(args[0]) is typing.Literal)
            choices = meta.get("choices") or (typing.get_args(tp if typing.get_origin(tp) is typing.Literal
                                                              else args[0]) if literal else None)
            if choices:
                allowed = "one of " + ", ".join(repr(c) for c in choices)
            else:
                number = lambda v: str(v) if isinstance(v, int) else f"{v:g}"  # noqa: E731
                allowed = _range(meta.get("min"), meta.get("max"), number, meta.get("min_exclusive", False)).strip()
            out.append(OptionInfo(f.name, _type_text(tp), plain(cls.default(f.name)), allowed, meta.get("help", "")))
        return out


def as_path(name: str, value: Any) -> str:
    """A file or folder name (a ``str`` or ``os.PathLike``), as text."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise _bad(name, value, "a file or folder name")
    return value


class Configured:
    """What a plugin class built from declared options shares (``Head``, ``Dataset``): it binds them
    once, as ``self.opts``, and reads them as attributes (``self.C``); an attribute it sets itself
    (a value derived in ``setup()``) comes first."""

    def _bind_options(self, options: Options | None, given: Mapping[str, Any]) -> Options | None:
        """The class's declared options: ``options`` as :func:`cnnbench.plugins.create` parsed them,
        else ``given`` parsed here (a direct call); None for a class that declares none."""
        declared = options_of(type(self))
        if declared is None:
            return None
        if options is None:
            options = declared.parse(getattr(self, "name", "") or type(self).__name__, given)
        elif given:
            raise TypeError(f"{type(self).__name__}: give options parsed or as keywords, not both")
        self.opts = options
        return options

    def __getattr__(self, name: str):
        opts = self.__dict__.get("opts")
        if opts is not None and name in opts.names():
            return getattr(opts, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def options_of(factory: Any) -> type[Options] | None:
    """The :class:`Options` class a plugin factory declares as its ``Options`` attribute, or None: a
    plugin that predates declared options (its signature is its declaration) or registers them with
    ``register(..., options=...)``."""
    declared = getattr(factory, "Options", None)
    return declared if isinstance(declared, type) and issubclass(declared, Options) else None
