"""``effnet-lite0``'s former module, kept so that imports of it keep working.

The backbone is built by the shared EfficientNet-Lite builder in :mod:`.effnet_lite` (which also builds
``effnet-lite1`` and ``effnet-lite2``, and documents the weights, the by-name mapping and the
preprocessing); the entry point ``effnet_lite0`` points at :data:`.effnet_lite.lite0`. This module
registers nothing.
"""

from __future__ import annotations

from pathlib import Path

from .effnet_lite import (  # noqa: F401  (re-exported)
    DS_BLOCK_NAMES,
    IR_BLOCK_NAMES,
    LAYERS,
    TOP_NAMES,
    lite0,
    lukemelas_names,
)

NAME = lite0.name
WEIGHTS_SHA256 = lite0.sha256
PREPROCESS = lite0.preprocess
build = lite0.build
embedded_weights_path = lite0.embedded_weights_path
map_state_dict = lite0.map_state_dict


def load_state_dict(path: Path, model, verify_sha256: str | None = WEIGHTS_SHA256) -> None:
    lite0.load_state_dict(path, model, verify_sha256=verify_sha256)
