"""One plugin manager, fed by the ``cnnbench`` entry-point group, robust to broken plugins.

First-party plugins are found exactly like third-party ones, through the entry points that the
distribution ``cnnbench`` declares in ``pyproject.toml``. A plugin that fails to import, or whose
hook raises, is recorded in :func:`failures` with its name and error; every other plugin keeps working.

**Who owns a name.** Every ``register(...)`` call is collected first and resolved afterwards, so the
outcome never depends on load order (entry points load sorted by name, so ``aaa`` would come first):

* a built-in name (one registered by the distribution ``cnnbench``), and any name inside a built-in
  family such as ``timm:<name>``, stays built-in; another plugin's claim on it is refused;
* when two other plugins claim the same name, *neither* gets it: :func:`lookup` raises a
  :class:`~cnnbench.errors.PluginError` naming both distributions and asking to uninstall one.
  "Keep the first" would let an entry point's *name* decide whose code computes the results, and
  results from the wrong implementation look just like the right ones, so cnnbench does not guess;
* a plugin that registers one name twice keeps its first registration.

Each refusal is a :class:`PluginFailure` naming both plugins and their distributions, so
``cnnbench plugins`` lists it. In-process plugins (:func:`register_plugin`) count as third-party.

**Building.** :func:`create` turns a misbehaving factory into one clear error. A factory that declares
its options (:class:`cnnbench.options.Options`: ``register(..., options=...)`` or a class's ``Options``
attribute) gets them parsed from that declaration: an unknown key names the closest known one, a bad
value names the option and what it allows. A factory without a declaration has its options bound
to its signature (:meth:`inspect.Signature.bind`): options it does not accept, or a missing
required one, are a :class:`~cnnbench.errors.UserError` listing the accepted options. Because of that
check, a ``TypeError`` raised *inside* the factory is a plugin bug, not an option mistake (only a
factory without an inspectable signature has its ``TypeError`` read as an option mistake). A
``ValueError`` from the factory is a bad option value (``UserError``, prefixed with kind and name); a
:class:`~cnnbench.errors.CnnbenchError` passes through unchanged; anything else, or an object that is
not a ``Backbone`` / ``Dataset`` / ``Head``, is a ``PluginError`` naming the plugin and its distribution.
"""

from __future__ import annotations

import errno
import importlib.metadata
import inspect
import reprlib
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from . import hookspecs
from . import options as O
from .errors import CnnbenchError, PluginError, UnknownPluginError, UserError

ENTRY_POINT_GROUP = "cnnbench"
KINDS = ("backbone", "dataset", "head")
BUILTIN_DISTRIBUTION = "cnnbench"
IN_PROCESS = "(in-process)"  # the distribution of a plugin given to register_plugin()


def _origin(plugin: str, distribution: str, version: str) -> str:
    """``plugin 'svm' (distribution cnnbench 0.1.0)``, for messages."""
    if distribution == IN_PROCESS:
        return f"plugin {plugin!r} {IN_PROCESS}"
    where = f"distribution {distribution} {version}".strip() if distribution else "no distribution"
    return f"plugin {plugin!r} ({where})"


@dataclass(frozen=True)
class Registration:
    """One name a plugin registered, how to build the object behind it, and who registered it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    prefix: bool = False
    distribution: str = ""  # the installed distribution that provides the plugin, or IN_PROCESS
    version: str = ""
    options: type | None = None  # the factory's declared options (cnnbench.options.Options), if any

    @property
    def builtin(self) -> bool:
        return self.distribution.lower() == BUILTIN_DISTRIBUTION

    def origin(self) -> str:
        return _origin(self.plugin, self.distribution, self.version)


@dataclass(frozen=True)
class PluginFailure:
    plugin: str
    stage: str  # "import" or "register_<kind>s"
    error: str
    detail: str = ""


@dataclass
class PluginInfo:
    name: str
    distribution: str = ""
    version: str = ""
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})


class _State:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("cnnbench")
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.info: dict[str, PluginInfo] = {}
        self.registry: dict[str, dict[str, Registration]] | None = None
        self.clashes: dict[str, dict[str, list[Registration]]] = {k: {} for k in KINDS}  # names nobody gets


_state: _State | None = None


def _distribution(ep: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    return (dist.name, dist.version) if dist is not None else ("", "")


def _load_entry_points(state: _State) -> None:
    def order(ep):  # built-ins first, so they keep their plugin names; then by name, deterministically
        dist = _distribution(ep)[0]
        return dist.lower() != BUILTIN_DISTRIBUTION, ep.name, dist

    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=order):
        dist, version = _distribution(ep)
        name = ep.name
        if name in state.info and state.info[name].distribution != dist:
            name = f"{dist}:{ep.name}"  # another distribution's entry point of the same name
        if name in state.info:
            continue  # the same distribution seen twice on sys.path
        state.info[name] = PluginInfo(name, dist, version)
        try:
            state.pm.register(ep.load(), name=name)
        except Exception as exc:  # noqa: BLE001 - any error in third-party code is reported, not fatal
            state.failures.append(PluginFailure(name, "import", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def get_plugin_manager() -> pluggy.PluginManager:
    return _get_state().pm


def _get_state() -> _State:
    global _state
    if _state is None:
        _state = _State()
        _load_entry_points(_state)
    return _state


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register an in-process plugin (tests, notebooks); entry points remain the normal route.
    Its names follow the third-party rules: it cannot replace a built-in."""
    state = _get_state()
    name = state.pm.register(plugin, name=name)
    state.info.setdefault(name, PluginInfo(name, IN_PROCESS))
    state.registry = None


def unregister_plugin(name: str) -> None:
    state = _get_state()
    state.pm.unregister(name=name)
    state.info.pop(name, None)
    state.registry = None


def reset() -> None:
    """Forget everything; the next call reloads the entry points (used by tests)."""
    global _state
    _state = None


def _build_registry(state: _State) -> dict[str, dict[str, Registration]]:
    claims: dict[str, dict[str, list[Registration]]] = {k: {} for k in KINDS}  # every register() call
    state.failures = [f for f in state.failures if f.stage == "import"]
    for kind in KINDS:
        hook_name = f"register_{kind}s"
        for impl in getattr(state.pm.hook, hook_name).get_hookimpls():
            info = state.info.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name, IN_PROCESS))

            def register(name, factory, *, description="", prefix=False, options=None, _kind=kind, _info=info):
                if not isinstance(name, str) or not name:
                    raise ValueError(f"{_kind} name must be a non-empty string, got {name!r}")
                if not callable(factory):
                    raise TypeError(f"{_kind} {name!r}: factory must be callable, got {factory!r}")
                if options is not None and not (isinstance(options, type) and issubclass(options, O.Options)):
                    raise TypeError(f"{_kind} {name!r}: options must be a cnnbench.options.Options class, "
                                    f"got {options!r}")
                claims[_kind].setdefault(name, []).append(Registration(
                    _kind, name, factory, _info.name, description, prefix, _info.distribution, _info.version,
                    options or O.options_of(factory)))

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                state.failures.append(
                    PluginFailure(impl.plugin_name, hook_name, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
    state.clashes = {k: {} for k in KINDS}
    registry = {kind: _resolve(state, kind, claims[kind]) for kind in KINDS}
    for kind, regs in registry.items():
        for r in regs.values():
            state.info[r.plugin].registered[kind].append(r.name)
    return registry


def _resolve(state: _State, kind: str, claims: dict[str, list[Registration]]) -> dict[str, Registration]:
    """Give each name to one plugin, by the rules in the module docstring; report every refusal."""

    def refuse(r: Registration, error: str) -> None:
        state.failures.append(PluginFailure(r.plugin, f"register_{kind}s", error))

    resolved: dict[str, Registration] = {}
    for name, regs in claims.items():
        owners: dict[str, Registration] = {}
        for r in regs:
            if r.plugin in owners:
                refuse(r, f"{kind} name {name!r}: registered twice by {r.origin()}; kept the first")
            else:
                owners[r.plugin] = r
        ranked = sorted(owners.values(), key=lambda r: not r.builtin)  # stable: built-ins first
        keeper = ranked[0]
        if keeper.builtin or len(ranked) == 1:
            resolved[name] = keeper
            for r in ranked[1:]:
                refuse(r, f"{kind} name {name!r}: {r.origin()} registers it too, but it belongs to the built-in "
                          f"{keeper.origin()}, which keeps it; ignored this registration: uninstall {_culprit(r)} "
                          "or ask its authors to rename it")
        else:
            state.clashes[kind][name] = ranked
            for r in ranked:
                refuse(r, _clash_message(kind, name, ranked))
    families = [r for r in resolved.values() if r.builtin and r.prefix]
    for name, r in list(resolved.items()):
        family = next((f for f in families if name != f.name and name.startswith(f.name)), None)
        if family is not None and not r.builtin:
            del resolved[name]
            refuse(r, f"{kind} name {name!r}: {r.origin()} registers it, but it lies inside the family "
                      f"{family.name + '<name>'!r} of the built-in {family.origin()}, which keeps it; ignored this "
                      f"registration: uninstall {_culprit(r)} or ask its authors to rename it")
    return resolved


def _culprit(r: Registration) -> str:
    return r.distribution if r.distribution not in ("", IN_PROCESS) else f"plugin {r.plugin!r}"


def _clash_message(kind: str, name: str, owners: list[Registration]) -> str:
    dists = sorted({_culprit(r) for r in owners})
    return (f"{kind} name {name!r} is registered by {' and by '.join(r.origin() for r in owners)}; cnnbench "
            f"will not guess which one you mean, so neither gets it: uninstall one of {', '.join(dists)}")


def registry(kind: str) -> dict[str, Registration]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    state = _get_state()
    if state.registry is None:
        for info in state.info.values():
            info.registered = {k: [] for k in KINDS}
        state.registry = _build_registry(state)
    return state.registry[kind]


def names(kind: str) -> list[str]:
    """Registered names; families show as e.g. ``timm:<name>``."""
    return sorted(r.name + "<name>" if r.prefix else r.name for r in registry(kind).values())


def lookup(kind: str, name: str) -> tuple[Registration, str | None]:
    """The registration for ``name`` and, for a family name like ``timm:x``, the part after the prefix."""
    reg = registry(kind)
    if name in reg and not reg[name].prefix:
        return reg[name], None
    for clashed, owners in _get_state().clashes[kind].items():
        if name == clashed or (owners[0].prefix and name.startswith(clashed)):
            raise PluginError(_clash_message(kind, clashed, owners))
    for r in sorted(reg.values(), key=lambda r: -len(r.name)):
        if r.prefix and name.startswith(r.name) and len(name) > len(r.name):
            return r, name[len(r.name):]
    broken = [f.plugin for f in failures()]
    hint = f"Plugins that failed to load: {', '.join(sorted(set(broken)))} (see `cnnbench plugins`)." if broken else ""
    raise UnknownPluginError(kind, name, names(kind), hint)


def create(kind: str, name: str, /, **options: Any) -> Any:
    """Build the backbone, data set or head registered under ``name``; a misbehaving factory becomes a
    :class:`UserError` (the options) or a :class:`PluginError` (the plugin), see the module docstring."""
    r, rest = lookup(kind, name)
    args = (rest,) if r.prefix else ()
    what = f"{kind} {name!r}"
    signature = None
    if r.options is not None:  # declared options: checked from their declaration, handed over parsed
        options = {"options": r.options.parse(name, options)}
    else:
        try:
            signature = inspect.signature(r.factory)
        except (TypeError, ValueError):  # some builtins and C callables have none
            pass
    if signature is not None:
        try:
            signature.bind(*args, **options)
        except TypeError as exc:
            raise _option_error(what, options, exc, signature, len(args)) from None
        options = O.typed_options(name, signature, options)  # -B pretrained=maybe is no truthy string
    try:
        obj = r.factory(*args, **options)
    except CnnbenchError:
        raise
    except ValueError as exc:
        raise UserError(f"{what}: {exc}") from exc
    except Exception as exc:
        if signature is None and isinstance(exc, TypeError):
            raise _option_error(what, options, exc, None, 0) from exc
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            raise  # a full disk is the user's to fix; the CLI explains it
        raise PluginError(f"{what} ({r.origin()}) failed to build: {type(exc).__name__}: {exc}; "
                          "report it to the plugin's authors") from exc
    expected = _expected_type(kind)
    if not isinstance(obj, expected):
        got = "None" if obj is None else f"a {type(obj).__module__}.{type(obj).__qualname__} ({reprlib.repr(obj)})"
        raise PluginError(f"{what} ({r.origin()}) returned {got}, not a {expected.__module__}.{expected.__qualname__}; "
                          "report it to the plugin's authors")
    # what built it, for the feature files' signature and the run records: upgrading a plugin re-extracts
    obj.plugin_origin = {"plugin": r.plugin, "distribution": r.distribution, "version": r.version}
    return obj


def _option_error(what: str, options: dict, exc: TypeError, signature: inspect.Signature | None,
                  skip: int) -> UserError:
    given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
    if signature is None:
        accepted = "see the plugin's documentation"
    else:
        params = list(signature.parameters.values())[skip:]
        accepted = ", ".join(p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)) or "none"
    return UserError(f"{what} does not accept the options given ({given}): {exc}; accepted options: {accepted}")


def _expected_type(kind: str) -> type:
    from .backbone import Backbone  # imported late: they pull in torch and numpy
    from .dataset import Dataset
    from .head import Head

    return {"backbone": Backbone, "dataset": Dataset, "head": Head}[kind]


def failures() -> list[PluginFailure]:
    registry("backbone")  # make sure hooks ran, so their failures are known
    return list(_get_state().failures)


def plugin_infos() -> list[PluginInfo]:
    registry("backbone")
    return sorted(_get_state().info.values(), key=lambda i: i.name)
