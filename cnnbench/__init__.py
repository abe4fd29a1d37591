"""cnnbench: frozen CNN features + simple heads, side by side with Razavian et al. (2014)."""

__version__ = "0.1.0"

from .hookspecs import hookimpl  # noqa: E402  (the one import a plugin needs)

__all__ = ["__version__", "hookimpl"]
