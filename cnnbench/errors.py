"""Errors a user can act on: every message says what was wrong and what to do."""


class CnnbenchError(Exception):
    """Base class; the CLI prints these as one clean message instead of a traceback."""


class UnknownPluginError(CnnbenchError, KeyError):
    def __init__(self, kind: str, name: str, known: list[str], hint: str = ""):
        self.kind, self.name, self.known = kind, name, known
        msg = f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(known)) or '(none)'}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class MissingDataError(CnnbenchError):
    """A data set's files are not where the plugin looked."""


class WeightsNotFoundError(CnnbenchError):
    """Model weights are neither local nor in a cache, and cannot be downloaded."""


class StoreError(CnnbenchError):
    """A feature store is missing, incomplete or does not match what was asked."""
