"""The local engine (``--engine local``): threads on this machine.

Decoding runs in a small thread pool a few batches ahead of the model (PIL releases the GIL while
decoding and resizing), so the forward pass rarely waits.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Iterator, Sequence

from .dataset import Item
from .decode import decode_batch
from .engine import Batch, Run, build_runtime, forward_batch, runtime_device
from .settings import ExtractSettings

if TYPE_CHECKING:
    from .backbone import Backbone


def default_workers() -> int:
    """Decode threads: one per two cores, at least one (the model keeps the rest busy)."""
    return max(1, (os.cpu_count() or 2) // 2)


class LocalEngine:
    """Decode ahead in threads, run the model here, on the device resolved once, when it is made."""

    name, tag = "local", ""

    def __init__(self, settings: ExtractSettings):
        self.device = runtime_device(settings.device, settings.precision)

    def session(self):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def run(self, backbone: Backbone, items: Sequence[Item], start: int, settings: ExtractSettings):
        rt = build_runtime(backbone, settings, self.device)
        batches = self._batches(rt, backbone, items, start, settings)
        try:
            yield Run(batches, rt.name)
        finally:
            batches.close()
            rt.close()

    def _batches(self, rt, backbone: Backbone, items: Sequence[Item], start: int,
                 settings: ExtractSettings) -> Iterator[Batch]:
        per_batch = settings.images_per_batch
        workers = settings.workers or default_workers()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cnnbench-decode") as pool:
            pending: deque = deque()
            starts = iter(range(start, len(items), per_batch))

            def submit_next() -> None:
                s = next(starts, None)
                if s is not None:
                    pending.append((s, pool.submit(decode_batch, items[s : s + per_batch], backbone.preprocess, settings)))

            for _ in range(workers + 1):
                submit_next()
            try:
                while pending:
                    s, fut = pending.popleft()
                    batch, ok, skipped = fut.result()
                    submit_next()
                    feats = forward_batch(rt, batch, settings, self.device)
                    yield Batch(s, s + len(ok) + len(skipped), ok, feats, skipped)
            except BaseException:  # the writer stopped too (GeneratorExit) or the model failed
                for _, fut in pending:  # do not decode what will never be written
                    fut.cancel()
                raise
