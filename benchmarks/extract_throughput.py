"""Extraction throughput, measured side by side in one run on the same real JPEGs.

    python benchmarks/extract_throughput.py [--images 256] [--batch-size 64]

Prints images/s of
  (a) a plain loop: PIL + torchvision transforms + eager model, batch by batch, no overlap;
  (b) `cnnbench extract` (the engine, into an HDF5 file), end to end from JPEG files;
  (c) the bare model forward on pre-decoded, pre-normalised tensors (the ceiling for (b));
and the ratios b/a and b/c. Images: Flowers-17 from ../shared/data (or --folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cnnbench import plugins
from cnnbench.dataset import Dataset, Item
from cnnbench.extract import extract_split
from cnnbench.images import load_and_preprocess, normalize

ROOT = Path(__file__).resolve().parents[1]


class Files(Dataset):
    name = "bench-files"
    splits = ("all",)

    def __init__(self, paths):
        super().__init__()
        self.paths = paths

    @property
    def classes(self):
        return ["x"]

    def items(self, split):
        return [Item(p.name, str(p), 0) for p in self.paths]


def plain_loop(backbone, paths, batch_size):
    from PIL import Image
    from torchvision import transforms

    pp = backbone.preprocess
    tf = transforms.Compose([
        transforms.Resize(pp.resize_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(pp.input_size),
        transforms.ToTensor(),
        transforms.Normalize(pp.mean, pp.std),
    ])
    model = backbone.model
    t0 = time.perf_counter()
    for s in range(0, len(paths), batch_size):
        x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[s : s + batch_size]])
        with torch.no_grad():
            model(x)
    return len(paths) / (time.perf_counter() - t0)


def bare_forward(backbone, paths, batch_size):
    pp = backbone.preprocess
    batches = [
        normalize(torch.from_numpy(np.stack([load_and_preprocess(p, pp) for p in paths[s : s + batch_size]])), pp)
        for s in range(0, len(paths), batch_size)
    ]
    model = backbone.model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(batches[0][:8])  # warm-up
        t0 = time.perf_counter()
        for x in batches:
            backbone.features(x, [backbone.default_layer])
    return len(paths) / (time.perf_counter() - t0)


def engine(backbone, paths, batch_size, workers=None):
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        extract_split(backbone, Files(paths), "all", Path(tmp) / "all.h5", batch_size=batch_size,
                      workers=workers, progress=False)
        return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=ROOT.parent / "shared" / "data" / "flowers17" / "jpg")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="effnet-lite0")
    ap.add_argument("--skip-plain", action="store_true")
    args = ap.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"no images at {args.folder}; pass --folder")
    paths = sorted(args.folder.glob("*.jpg"))[: args.images]
    backbone = plugins.create("backbone", args.backbone)
    print(f"{len(paths)} JPEGs from {args.folder}, backbone {args.backbone}, batch {args.batch_size}, "
          f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    engine(backbone, paths[: args.batch_size], args.batch_size)  # warm-up (allocator, thread pools)
    c = bare_forward(backbone, paths, args.batch_size)
    b = engine(backbone, paths, args.batch_size)
    print(f"(c) bare forward, pre-decoded tensors : {c:7.1f} images/s")
    print(f"(b) cnnbench extract, JPEG -> HDF5    : {b:7.1f} images/s")
    if not args.skip_plain:
        a = plain_loop(backbone, paths, args.batch_size)
        print(f"(a) plain loop (PIL+torchvision+eager): {a:7.1f} images/s")
        print(f"b/a = {b / a:.2f}x   (cnnbench vs plain loop)")
    print(f"b/c = {b / c:.2f}    (end to end vs bare forward; 1.0 = decoding fully hidden)")


if __name__ == "__main__":
    main()
