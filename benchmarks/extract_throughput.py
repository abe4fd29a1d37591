"""Extraction throughput, measured side by side in one run on the same real JPEGs.

    python benchmarks/extract_throughput.py [--images 512] [--batch-size 64] [--compile] [--rss]

Prints images/s of
  (a) a plain loop: PIL + torchvision transforms + eager PyTorch (NCHW), batch by batch, no overlap;
  (b) `cnnbench extract` end to end (JPEG files -> HDF5), once per runtime;
  (c) the bare forward of the fastest runtime on pre-decoded uint8 batches (the ceiling for (b));
then the ratios b/a and b/c, the largest feature difference between runtimes, and with --rss the
peak resident memory of `cnnbench extract` on 1,000 and 4,000 images (flat = streamed).
Images: Flowers-17 from ../shared/data (or --folder).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cnnbench import plugins, runtime, store
from cnnbench.dataset import Dataset, Item
from cnnbench.extract import extract_split
from cnnbench.settings import ExtractSettings
from cnnbench.images import load_and_preprocess

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "flowers17" / "jpg"


class Files(Dataset):
    """The benchmark's images as a data set; ``repeat`` cycles them to reach a count (distinct ids)."""

    name = "bench-files"
    splits = ("all",)

    def __init__(self, paths, n=None):
        super().__init__()
        self.paths, self.n = list(paths), n or len(paths)

    @property
    def classes(self):
        return ["x"]

    def items(self, split):
        return [Item(f"{k}-{self.paths[k % len(self.paths)].name}", str(self.paths[k % len(self.paths)]), 0)
                for k in range(self.n)]


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
    model = backbone.model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        model(torch.zeros(2, 3, pp.input_size, pp.input_size))
    t0 = time.perf_counter()
    for s in range(0, len(paths), batch_size):
        x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[s : s + batch_size]])
        with torch.no_grad():
            model(x)
    return len(paths) / (time.perf_counter() - t0)


def bare_forward(rt, backbone, paths, batch_size):
    pp = backbone.preprocess
    batches = [torch.from_numpy(np.stack([load_and_preprocess(p, pp) for p in paths[s : s + batch_size]]))
               for s in range(0, len(paths), batch_size)]
    rt(batches[0][:4])  # warm-up
    t0 = time.perf_counter()
    for x in batches:
        rt(x)
    return len(paths) / (time.perf_counter() - t0)


def engine(backbone, paths, batch_size, runtime_name, out):
    t0 = time.perf_counter()
    res = extract_split(backbone, Files(paths), "all", out, ExtractSettings(batch_size=batch_size, runtime=runtime_name),
                        progress=False, overwrite=True)
    seconds = time.perf_counter() - t0
    return len(paths) / seconds, store.open_info(res.path).attrs["runtime"]


def peak_rss_mb(n: int, folder: Path, batch_size: int) -> float:
    """Peak RSS of a child process extracting n images (cycled) with the default runtime."""
    code = (
        "import sys, resource, tempfile, pathlib;"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r});"
        "from extract_throughput import Files;"
        "from cnnbench import plugins; from cnnbench.extract import extract_split;"
        "from cnnbench.settings import ExtractSettings;"
        f"paths = sorted(pathlib.Path({str(folder)!r}).glob('*.jpg'));"
        "bb = plugins.create('backbone', 'effnet-lite0');"
        "d = tempfile.mkdtemp();"
        f"extract_split(bb, Files(paths, {n}), 'all', pathlib.Path(d) / 'all.h5', ExtractSettings(batch_size={batch_size}),"
        " progress=False);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="effnet-lite0")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (about a minute to compile)")
    ap.add_argument("--rss", action="store_true", help="also measure peak RSS for 1,000 and 4,000 images")
    args = ap.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"no images at {args.folder}; pass --folder")
    paths = sorted(args.folder.glob("*.jpg"))[: args.images]
    backbone = plugins.create("backbone", args.backbone)
    print(f"{len(paths)} JPEGs from {args.folder}, {args.backbone}, batch {args.batch_size}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}")

    runtimes = ["eager", "onnx"] + (["compile"] if args.compile else [])
    with tempfile.TemporaryDirectory() as tmp:
        for name in runtimes:  # warm-up: ONNX export (cached), compile, thread pools
            engine(backbone, paths[: args.batch_size], args.batch_size, name, Path(tmp) / f"w-{name}.h5")
        a = plain_loop(backbone, paths, args.batch_size)
        results = {}
        for name in runtimes:
            results[name] = engine(backbone, paths, args.batch_size, name, Path(tmp) / f"{name}.h5")
        auto_speed, auto_used = engine(backbone, paths, args.batch_size, "auto", Path(tmp) / "auto.h5")
        feats = {n: store.read(Path(tmp) / f"{n}.h5").features for n in runtimes}
        diff = max(float(np.abs(feats[n] - feats["eager"]).max()) for n in runtimes)
    fastest = max(results, key=lambda n: results[n][0])
    rt = runtime.build(backbone, [backbone.default_layer], runtime=fastest)
    c = bare_forward(rt, backbone, paths, args.batch_size)
    rt.close()

    print(f"(a) plain loop, PIL + torchvision + eager  : {a:7.1f} images/s")
    for name, (speed, used) in results.items():
        print(f"(b) cnnbench extract --runtime {name:8s}: {speed:7.1f} images/s  (ran: {used})")
    print(f"(b) cnnbench extract --runtime auto    : {auto_speed:7.1f} images/s  (ran: {auto_used})")
    print(f"(c) bare forward, {fastest}, pre-decoded: {c:7.1f} images/s")
    print(f"b/a = {auto_speed / a:.2f}x  (default runtime end to end vs the plain loop)")
    print(f"b/c = {auto_speed / c:.2f}   (end to end vs the bare forward of the same runtime; 1 = decoding hidden)")
    print(f"max |feature difference| between runtimes and eager: {diff:.2e}")
    if args.rss:
        for n in (1000, 4000):
            print(f"peak RSS, cnnbench extract of {n:5d} images: {peak_rss_mb(n, args.folder, args.batch_size):7.0f} MB")


if __name__ == "__main__":
    main()
