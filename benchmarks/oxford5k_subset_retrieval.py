"""The l2 head's retrieval variants on real photographs: ../shared/data/oxford5k-subset.

Extracts effnet-lite0 features (whole image for the database, the official query box for the 10
queries; optionally spatial sub-patches) into a cache folder outside the repository, then scores
side by side in one run: plain L2, + PCA-whitening (fitted on the database), and spatial search.
Ground truth is the subset's approximate one (``relevant``; no junk list): the query's own image,
which is in the database uncropped, is ignored (treated as junk) as the cropped query would find it.
Numbers are "Oxford5k-subset (approximate gt)": comparable between variants, not to the paper.

    python benchmarks/oxford5k_subset_retrieval.py [--data ../shared/data/oxford5k-subset]
        [--cache /tmp/cnnbench-oxsub] [--levels 2 2]

Measured here (``--levels 2 2``, effnet-lite0 pre_logits, 2 CPU cores; 10 queries, so a few
points are noise): whole image 21.7 % mAP; + PCA-whitening fitted on the 1008 database images
17.9 % (+ signed power 2: 15.8 %); spatial search 34.0 %, with PCA-whitening 35.7 %. (Earlier
effnet-lite0 features gave 22.9, 19.6, 20.5, 33.9 and 36.3 %.) The sub-patches carry the spatial
view names (``l{level}_r{row}_c{col}``), so the l2 head reads each side's levels from them.
For PCA-whitening fitted on smaller databases see ``benchmarks/pca_small_sets.py``.

Sub-patches (``--levels H_DB H_Q``): at level l the image is cut into an l x l grid; each region
gives the smallest square covering it (side max(w, h) / l), centred on the region and shifted to
stay inside the image; order level 1, level 2 row-major, ... (the contract of the ``spatial``
view mode the extraction is getting).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def squares(width: int, height: int, levels: int) -> list[tuple[float, float, float, float]]:
    boxes = []
    for level in range(1, levels + 1):
        side = min(max(width, height) / level, min(width, height)) if level > 1 else None
        for r in range(level):
            for c in range(level):
                if level == 1:
                    boxes.append((0.0, 0.0, float(width), float(height)))
                    continue
                cx, cy = (c + 0.5) * width / level, (r + 0.5) * height / level
                x1 = min(max(0.0, cx - side / 2), width - side)
                y1 = min(max(0.0, cy - side / 2), height - side)
                boxes.append((x1, y1, x1 + side, y1 + side))
    return boxes


def extract(backbone, images: list[Path], boxes_of, batch: int = 32) -> np.ndarray:
    """Features (N, P, D): P boxes per image given by ``boxes_of(image, index)``."""
    import torch

    from cnnbench.images import load_image, normalize, preprocess

    pp = backbone.preprocess
    crops, owners = [], []
    for i, path in enumerate(images):
        img = load_image(path)  # the engine's opener: its format allow-list and EXIF turn
        for box in boxes_of(img, i):
            crops.append(preprocess(img, pp, box))
            owners.append(i)
    feats = []
    with torch.inference_mode():
        for s in range(0, len(crops), batch):
            x = normalize(torch.from_numpy(np.stack(crops[s:s + batch])), pp)
            feats.append(backbone.features(x, [backbone.default_layer])[backbone.default_layer].float().numpy())
    f = np.concatenate(feats)
    return f.reshape(len(images), -1, f.shape[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "oxford5k-subset"))
    ap.add_argument("--cache", default="/tmp/cnnbench-oxsub")
    ap.add_argument("--levels", nargs=2, type=int, default=[2, 2], metavar=("H_DB", "H_Q"))
    args = ap.parse_args()
    data, cache = Path(args.data), Path(args.cache)
    if not (data / "queries.json").exists():
        raise SystemExit(f"{data}/queries.json not found: this benchmark needs ../shared/data/oxford5k-subset")
    cache.mkdir(parents=True, exist_ok=True)

    from cnnbench import plugins
    from cnnbench.head import FeatureSet
    from cnnbench.images import view_names

    queries = json.loads((data / "queries.json").read_text())
    images = sorted((data / "jpg").glob("*.jpg"))
    db_ids = np.array([p.name for p in images], dtype=object)
    h_db, h_q = args.levels
    backbone = None
    cached = cache / f"features_l{h_db}_{h_q}.npz"
    if cached.exists():
        z = np.load(cached, allow_pickle=True)
        db_f, q_f = z["db"], z["q"]
    else:
        import torch

        torch.set_num_threads(2)
        backbone = plugins.create("backbone", "effnet-lite0")
        backbone.model.eval()
        t0 = time.perf_counter()
        db_f = extract(backbone, images, lambda img, i: squares(img.width, img.height, h_db))
        q_f = extract(backbone, [data / "jpg" / q["query"] for q in queries],
                      lambda img, i: [tuple(queries[i]["bbox"])] + [
                          (queries[i]["bbox"][0] + b[0], queries[i]["bbox"][1] + b[1],
                           queries[i]["bbox"][0] + b[2], queries[i]["bbox"][1] + b[3])
                          for b in squares(int(queries[i]["bbox"][2] - queries[i]["bbox"][0]),
                                           int(queries[i]["bbox"][3] - queries[i]["bbox"][1]), h_q)[1:]])
        print(f"extracted {db_f.shape} database and {q_f.shape} query features in {time.perf_counter() - t0:.0f} s")
        np.savez(cached, db=db_f, q=q_f)

    q_ids = np.array([q["id"] for q in queries], dtype=object)
    gt = {q["id"]: {"positives": [r for r in q["relevant"] if r != q["query"]], "junk": [q["query"]]} for q in queries}
    none = np.full(len(db_ids), -1)
    whole_db = FeatureSet(db_f[:, 0], none, db_ids, [])
    whole_q = FeatureSet(q_f[:, 0], np.full(len(q_ids), -1), q_ids, [], {"ground_truth": gt})
    # sub-patches named as the spatial view mode names them: the head reads each side's levels from the names
    spatial_db = FeatureSet(db_f, none, db_ids, [], views=view_names("spatial", h_db))
    spatial_q = FeatureSet(q_f, np.full(len(q_ids), -1), q_ids, [], {"ground_truth": gt}, view_names("spatial", h_q))
    runs = [
        ("whole image, L2 (no PCA)", dict(pca_dim=None), whole_db, whole_q),
        ("whole image, PCA-whitening 500 (clipped), fit on database", dict(pca_dim=500), whole_db, whole_q),
        ("whole image, PCA-whitening + signed power 2", dict(pca_dim=500, power=2.0), whole_db, whole_q),
        (f"spatial search, levels {h_db}/{h_q}, no PCA", dict(pca_dim=None), spatial_db, spatial_q),
        (f"spatial search, levels {h_db}/{h_q}, PCA-whitening", dict(pca_dim=500), spatial_db, spatial_q),
    ]
    print(f"Oxford5k-subset (approximate gt): {len(db_ids)} database images, {len(q_ids)} queries, effnet-lite0")
    for name, opts, db, q in runs:
        t0 = time.perf_counter()
        out = plugins.create("head", "l2", **opts).evaluate(db, q, "retrieval", metric="mAP")
        print(f"  {name:62s} mAP {100 * out['mAP']:5.1f} %  ({time.perf_counter() - t0:.2f} s)")


if __name__ == "__main__":
    main()
