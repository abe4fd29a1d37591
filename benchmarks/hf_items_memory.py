"""Memory of an ``hf:`` split's items: image bytes read when decoded vs held in memory, side by side.

    python benchmarks/hf_items_memory.py [--images 2000] [--kib 64]

Writes a Hugging Face set in the hub's layout (``data/train-*.parquet``: ``--images`` random-noise
PNGs of about ``--kib`` KiB each, which do not compress), then measures, with ``tracemalloc``, the
peak Python memory of

  (a) ``items("train")`` as cnnbench builds them: each ``EncodedImage`` holds a reference to its row of
      the memory-mapped Arrow files, read when the image is decoded;
  (b) the same items with every image's bytes read into memory, as an eager reader holds them (what
      ``items`` did before: one split's bytes at once);

and prints both with their ratio, and the time to read every image's bytes once through the
references (what decoding the split costs on top of the decode itself). The Arrow files are mapped,
not read, so (a) stays small whatever the split's size.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def write_set(folder: Path, n: int, kib: int) -> int:
    import datasets
    from PIL import Image

    side = int((kib * 1024 / 3) ** 0.5)
    rng = np.random.default_rng(0)
    images, total = [], 0
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
        total += len(buf.getvalue())
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    (folder / "data").mkdir(parents=True)
    for split in ("train", "test"):
        ds = datasets.Dataset.from_dict({"image": images if split == "train" else images[:4],
                                         "label": [k % 2 for k in range(n if split == "train" else 4)]},
                                        features=features)
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--kib", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(Path(tmp) / "cache"))
        import datasets

        datasets.disable_progress_bars()
        from cnnbench import plugins

        total = write_set(Path(tmp) / "set", args.images, args.kib)
        ds = plugins.create("dataset", f"hf:{Path(tmp) / 'set'}")
        ds.items("test")  # converts the folder into the Arrow cache once, outside the measurement

        tracemalloc.start()
        items = ds.items("train")
        lazy = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

        t0 = time.perf_counter()
        tracemalloc.start()
        held = [item.image.read() for item in ds.items("train")]
        eager = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        read_s = time.perf_counter() - t0
        assert sum(map(len, held)) == total and len(items) == args.images

    mib = 1 << 20
    print(f"{args.images} images, {total / mib:.1f} MiB of PNG bytes in the split")
    print(f"peak Python memory of items(): references {lazy / mib:.1f} MiB, bytes held {eager / mib:.1f} MiB, "
          f"ratio {eager / max(lazy, 1):.1f}x")
    print(f"building the items and reading every image's bytes once through them: {read_s:.2f} s "
          f"({args.images / read_s:.0f} images/s, {total / mib / read_s:.0f} MiB/s)")


if __name__ == "__main__":
    main()
