"""Memory of an ``hf:`` or ``wds:`` split's items: image bytes read when decoded vs held, side by side.

    python benchmarks/hub_items_memory.py [--images 2000] [--kib 64]

Writes the same ``--images`` random-noise PNGs (about ``--kib`` KiB each; noise does not compress)
as a Hugging Face set in the hub's layout (``data/train-*.parquet``) and as WebDataset shards (plain
tars, CLIP_benchmark's layout), then measures for each, with ``tracemalloc``, the peak Python memory of

  (a) ``items("train")`` as cnnbench builds them: each ``EncodedImage`` holds where its bytes lie (its
      row of the memory-mapped Arrow files; its offset in the shard, with the bytes' SHA-256), read
      when the image is decoded;
  (b) the same items with every image's bytes read into memory, as an eager reader holds them (what
      ``items`` did before: one split's bytes at once);

and prints both with their ratio, and the time to build the items and read every image's bytes once
(what reading the split costs on top of decoding it).
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


def write_shards(folder: Path, n: int, kib: int) -> None:
    import webdataset as wds
    from PIL import Image

    side = int((kib * 1024 / 3) ** 0.5)
    rng = np.random.default_rng(0)
    (folder / "classnames.txt").parent.mkdir(parents=True)
    (folder / "classnames.txt").write_text("a\nb\n")
    for split, count in (("train", n), ("test", 4)):
        (folder / split).mkdir()
        (folder / split / "nshards.txt").write_text("1\n")
        with wds.TarWriter(str(folder / split / "0.tar")) as sink:
            for k in range(count):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
                sink.write({"__key__": f"{split}{k:06d}", "png": buf.getvalue(), "cls": str(k % 2)})


def measure(ds) -> tuple[int, int, float, int]:
    """(peak bytes of the items, peak bytes with every image's bytes held, seconds, bytes read)."""
    tracemalloc.start()
    items = ds.items("train")
    lazy = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t0 = time.perf_counter()
    tracemalloc.start()
    held = [item.image.read() for item in ds.items("train")]
    eager = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    seconds = time.perf_counter() - t0
    assert len(items) == len(held)
    return lazy, eager, seconds, sum(map(len, held))


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
        write_shards(Path(tmp) / "shards", args.images, args.kib)
        hf = plugins.create("dataset", f"hf:{Path(tmp) / 'set'}")
        hf.items("test")  # converts the folder into the Arrow cache once, outside the measurement
        shards = plugins.create("dataset", f"wds:{Path(tmp) / 'shards'}")
        rows = [(name, *measure(ds)) for name, ds in (("hf:", hf), ("wds:", shards))]

    mib = 1 << 20
    print(f"{args.images} images, {total / mib:.1f} MiB of PNG bytes in the split")
    for name, lazy, eager, seconds, read in rows:
        print(f"{name:5} peak Python memory of items(): where the bytes lie {lazy / mib:.1f} MiB, bytes held "
              f"{eager / mib:.1f} MiB, ratio {eager / max(lazy, 1):.1f}x; building the items and reading every "
              f"image once: {seconds:.2f} s ({read / mib / seconds:.0f} MiB/s)")


if __name__ == "__main__":
    main()
