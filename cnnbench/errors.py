"""Errors a user can act on: every message says what was wrong and what to do.

Everything under :class:`CnnbenchError` is caught once, at the command line's edge, and printed as
one line (``-v`` shows the traceback). Raise them where a value comes from the user (a flag, a
``params.yaml`` key, a plugin option, a file on disk), never deep inside a computation.
"""


class CnnbenchError(Exception):
    """Base class; the CLI prints these as one clean message instead of a traceback."""


class UserError(CnnbenchError, ValueError):
    """A value the user gave is not allowed: the message names the value (the flag, the params key or
    the option), what is allowed, and what to do. A ``ValueError`` too, so library callers that
    catch ``ValueError`` keep working."""


class UnknownPluginError(CnnbenchError, KeyError):
    def __init__(self, kind: str, name: str, known: list[str], hint: str = ""):
        self.kind, self.name, self.known = kind, name, known
        msg = f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(known)) or '(none)'}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class PluginError(CnnbenchError):
    """A plugin misbehaved (its factory raised, returned the wrong kind of object, or its name clashes
    with another plugin's); the message names the plugin and its distribution."""


class MissingDataError(CnnbenchError):
    """A data set's files are not where the plugin looked."""


class WeightsNotFoundError(CnnbenchError):
    """Model weights are neither local nor in a cache, and cannot be downloaded, or do not fit."""


class StoreError(CnnbenchError):
    """A feature store is missing, incomplete, corrupt, locked, or does not match what was asked."""
