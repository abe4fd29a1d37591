"""One plugin manager, fed by the ``cnnbench`` entry-point group, robust to broken plugins.

First-party plugins are found exactly like third-party ones, through the entry points declared in
``pyproject.toml``. A plugin that fails to import, or whose hook raises, is recorded in
:func:`failures` with its name and error; every other plugin keeps working.
"""

from __future__ import annotations

import importlib.metadata
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import UnknownPluginError

ENTRY_POINT_GROUP = "cnnbench"
KINDS = ("backbone", "dataset", "head")


@dataclass(frozen=True)
class Registration:
    """One name a plugin registered, and how to build the object behind it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    description: str = ""
    prefix: bool = False


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


_state: _State | None = None


def _load_entry_points(state: _State) -> None:
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if state.pm.has_plugin(ep.name) or ep.name in state.info:
            continue  # the same distribution seen twice on sys.path
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, dist.name if dist else "", dist.version if dist else "")
        state.info[ep.name] = info
        try:
            plugin = ep.load()
            state.pm.register(plugin, name=ep.name)
        except Exception as exc:  # noqa: BLE001 - any error in third-party code is reported, not fatal
            state.failures.append(
                PluginFailure(ep.name, "import", f"{type(exc).__name__}: {exc}", traceback.format_exc())
            )


def get_plugin_manager() -> pluggy.PluginManager:
    return _get_state().pm


def _get_state() -> _State:
    global _state
    if _state is None:
        _state = _State()
        _load_entry_points(_state)
    return _state


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register an in-process plugin (tests, notebooks); entry points remain the normal route."""
    state = _get_state()
    name = state.pm.register(plugin, name=name)
    state.info.setdefault(name, PluginInfo(name))
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
    registry: dict[str, dict[str, Registration]] = {k: {} for k in KINDS}
    state.failures = [f for f in state.failures if f.stage == "import"]
    for kind in KINDS:
        hook_name = f"register_{kind}s"
        caller = getattr(state.pm.hook, hook_name)
        for impl in caller.get_hookimpls():  # registration order (pluggy calls them in reverse)
            plugin_name = impl.plugin_name

            def register(name, factory, *, description="", prefix=False, _kind=kind, _plugin=plugin_name):
                if not isinstance(name, str) or not name:
                    raise ValueError(f"{_kind} name must be a non-empty string, got {name!r}")
                if not callable(factory):
                    raise TypeError(f"{_kind} {name!r}: factory must be callable, got {factory!r}")
                existing = registry[_kind].get(name)
                if existing is not None:
                    state.failures.append(
                        PluginFailure(
                            _plugin,
                            f"register_{_kind}s",
                            f"{_kind} name {name!r} is already registered by plugin {existing.plugin!r}; "
                            "kept the first one",
                        )
                    )
                    return
                registry[_kind][name] = Registration(_kind, name, factory, _plugin, description, prefix)
                state.info.setdefault(_plugin, PluginInfo(_plugin)).registered[_kind].append(name)

            try:
                impl.function(register=register)
            except Exception as exc:  # noqa: BLE001
                state.failures.append(
                    PluginFailure(plugin_name, hook_name, f"{type(exc).__name__}: {exc}", traceback.format_exc())
                )
    return registry


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
    for r in sorted(reg.values(), key=lambda r: -len(r.name)):
        if r.prefix and name.startswith(r.name) and len(name) > len(r.name):
            return r, name[len(r.name):]
    broken = [f.plugin for f in failures()]
    hint = f"Plugins that failed to load: {', '.join(sorted(set(broken)))} (see `cnnbench plugins`)." if broken else ""
    raise UnknownPluginError(kind, name, names(kind), hint)


def create(kind: str, name: str, **options: Any) -> Any:
    """Build the backbone, data set or head registered under ``name``."""
    r, rest = lookup(kind, name)
    return r.factory(rest, **options) if r.prefix else r.factory(**options)


def failures() -> list[PluginFailure]:
    registry("backbone")  # make sure hooks ran, so their failures are known
    return list(_get_state().failures)


def plugin_infos() -> list[PluginInfo]:
    registry("backbone")
    return sorted(_get_state().info.values(), key=lambda i: i.name)
