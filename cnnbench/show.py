"""``cnnbench show``: the rankings behind a retrieval number, as pictures.

A mAP says how good a backbone is, not *why*: whether it fails on viewpoint, on clutter, or on
near-duplicates the ground truth calls junk. One row per query: the query (its crop, the pixels the
backbone saw) and its first results, framed green (positive), grey (junk: ignored by the metric)
and red (negative), with the query's AP in the title.

Inputs are what ``cnnbench evaluate --head l2`` leaves: the per-query rankings and scores of
``metrics/<backbone>/<dataset>/<recipe>/l2.outcomes.json`` (:mod:`cnnbench.outcomes`; a result of a
cnnbench before recipes, ``metrics/<backbone>/<dataset>/l2.outcomes.json``, is recipe ``cnn``), the
ground truth (the extras of the feature files the evaluation read, as its run record names them,
else the data-set plugin's), and the images (the data-set plugin). Revisited Oxford and Paris are drawn in the Medium setting (positives: easy and
hard; junk ignored), the setting reported first. On multi-class data sets (each test image queries
the others) a result is positive when it has the query's class.

The layout is fixed in pixels (:data:`THUMB`, :data:`FRAME`, …; :func:`frame_box`) and PNGs go
through :func:`cnnbench.compare.save_figure`, so identical inputs give identical bytes and a test
can find every frame.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import outcomes as OUT
from .errors import StoreError, UserError
from .jsonio import writable_dir
from .recipes import DEFAULT as DEFAULT_RECIPE

THUMB = 112  # thumbnail side, pixels
FRAME = 6  # frame width around each thumbnail
GAP = 8  # between two framed thumbnails
QUERY_GAP = 24  # between the query and the first result
PAD = 8  # around the row
TITLE_H = 40  # title band above a row
LABEL_H = 18  # caption band below a row (rank and id)
DPI = 100
SHEET_MAX = 100  # rows of one sheet: 100 rows are 17,600 pixels high (Agg draws at most 65,536)
CELL = THUMB + 2 * FRAME

COLOURS = {
    "positive": (0, 158, 60),
    "junk": (150, 150, 150),
    "negative": (214, 39, 40),
    "query": (31, 119, 180),
    "unknown": (150, 150, 150),  # no ground truth for this query: nothing to judge
}
LEGEND = "frames: green positive · grey junk (ignored) · red negative · blue the query"
BACKGROUND = (255, 255, 255)
PLACEHOLDER = (200, 200, 200)
# the per-query value drawn in the title, by preference, and how it is named
SCORES = (("mAP_medium", "Medium AP"), ("mAP", "AP"), ("top4", "top-4 score"))


@dataclass
class Result:
    id: str
    verdict: str  # positive | junk | negative | unknown
    image: np.ndarray | None  # RGB thumbnail source; None: missing


@dataclass
class Row:
    query_id: str
    query: np.ndarray | None
    results: list[Result]
    score: float  # the query's AP (NaN: not scored)
    title: str


# -- which results count ------------------------------------------------------------------------------


def relevance(entry: dict | None) -> tuple[set[str], set[str]] | None:
    """(positives, junk) of one ground-truth entry; revisited entries as in Medium (positives: easy
    and hard, junk: junk). None: the query has no ground truth."""
    if entry is None:
        return None
    if "easy" in entry and "hard" in entry:
        return {str(i) for i in [*entry["easy"], *entry["hard"]]}, {str(i) for i in entry.get("junk", [])}
    return {str(i) for i in entry.get("positives", [])}, {str(i) for i in entry.get("junk", [])}


def verdicts(ranking: list[str], positives: set[str] | None, junk: set[str] = frozenset()) -> list[str]:
    """What frames each result: ``positive``, ``junk``, ``negative``; all ``unknown`` without ground truth."""
    if positives is None:
        return ["unknown"] * len(ranking)
    return ["positive" if r in positives else "junk" if r in junk else "negative" for r in ranking]


def frame_colours(ranking: list[str], positives: set[str] | None, junk: set[str] = frozenset()) -> list[tuple]:
    """The RGB frame colour of each result, as drawn."""
    return [COLOURS[v] for v in verdicts(ranking, positives, junk)]


# -- layout -------------------------------------------------------------------------------------------


def row_size(n_results: int) -> tuple[int, int]:
    """(width, height) in pixels of one query's block: title band, thumbnails, caption band."""
    width = 2 * PAD + CELL + QUERY_GAP + n_results * CELL + max(0, n_results - 1) * GAP
    return width, TITLE_H + CELL + LABEL_H


def frame_box(k: int) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2), pixels from the top left of a row's block, of the frame around result ``k``
    (0-based; ``-1``: the query). The thumbnail sits ``FRAME`` pixels inside it."""
    x = PAD if k < 0 else PAD + CELL + QUERY_GAP + k * (CELL + GAP)
    return x, TITLE_H, x + CELL, TITLE_H + CELL


def thumbnail(image: np.ndarray | None, label: str = "missing") -> np.ndarray:
    """THUMB x THUMB RGB: the image fitted inside (aspect kept, centred, white around), or a grey
    placeholder saying ``label`` when there is no image. Tiny images (digits: 8x8) are enlarged
    without smoothing, so their pixels stay visible."""
    from PIL import Image, ImageDraw

    if image is None:
        canvas = Image.new("RGB", (THUMB, THUMB), PLACEHOLDER)
        draw = ImageDraw.Draw(canvas)
        left, top, right, bottom = draw.textbbox((0, 0), label)
        draw.text(((THUMB - (right - left)) // 2, (THUMB - (bottom - top)) // 2), label, fill=(60, 60, 60))
        return np.asarray(canvas)
    img = Image.fromarray(image)
    scale = THUMB / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    small = scale >= 4
    img = img.resize(size, Image.Resampling.NEAREST if small else Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (THUMB, THUMB), BACKGROUND)
    canvas.paste(img, ((THUMB - size[0]) // 2, (THUMB - size[1]) // 2))
    return np.asarray(canvas)


def compose(row: Row, n_results: int) -> np.ndarray:
    """The pixels of one row's thumbnails with their frames (title and caption bands left white)."""
    width, height = row_size(n_results)
    out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    cells = [(-1, row.query, "query")] + [(k, r.image, r.verdict) for k, r in enumerate(row.results)]
    for k, image, verdict in cells:
        x1, y1, x2, y2 = frame_box(k)
        out[y1:y2, x1:x2] = COLOURS[verdict]
        out[y1 + FRAME:y2 - FRAME, x1 + FRAME:x2 - FRAME] = thumbnail(image)
    return out


def render(rows: list[Row], path: str | os.PathLike, heading: str = "") -> Path:
    """One PNG of ``rows`` stacked (one row: a query's picture; several: a sheet), written atomically."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .compare import save_figure

    n_results = max([len(r.results) for r in rows] + [1])
    width, block = row_size(n_results)
    top = TITLE_H if heading else 0
    height = top + block * len(rows)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
    pixels = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for i, row in enumerate(rows):
        pixels[top + i * block:top + (i + 1) * block] = compose(row, n_results)
    fig.figimage(pixels, xo=0, yo=0, origin="upper")

    def text(x: float, y: float, s: str, **kw) -> None:  # x, y: pixels from the top left; ids are not TeX
        fig.text(x / width, 1 - y / height, s, parse_math=False, **kw)

    if heading:
        text(PAD, TITLE_H / 2, heading, fontsize=11, va="center", ha="left", weight="bold")
        text(width - PAD, TITLE_H / 2, LEGEND, fontsize=8, va="center", ha="right")
    for i, row in enumerate(rows):
        y0 = top + i * block
        text(PAD, y0 + TITLE_H / 2, row.title, fontsize=9, va="center", ha="left")
        captions = [(-1, "query")] + [(k, f"{k + 1}. {_short(r.id)}") for k, r in enumerate(row.results)]
        for k, caption in captions:
            x1, _, x2, y2 = frame_box(k)
            text((x1 + x2) / 2, y0 + y2 + 3, caption, fontsize=6.5, va="top", ha="center")
    save_figure(fig, path)
    return Path(path)


def _short(s: str, n: int = 20) -> str:
    s = s.rsplit("/", 1)[-1]
    return s if len(s) <= n else s[: n - 1] + "…"


def safe_name(query_id: str) -> str:
    """A file name for a query id: letters, digits, ``.``, ``-`` and ``_`` only, never hidden, never
    ``..``; ids that had to change get a hash of the original, so two ids never share a file."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", query_id).lstrip(".")[:100]
    if name != query_id or not name:
        name = f"{name or 'query'}-{hashlib.sha256(query_id.encode()).hexdigest()[:8]}"
    return name


# -- loading ------------------------------------------------------------------------------------------


def result_file(metrics_dir: Path, backbone: str, dataset: str, recipe: str = DEFAULT_RECIPE) -> Path:
    """The metrics file of the l2 head's result of ``recipe``: ``<backbone>/<dataset>/<recipe>/l2.json``,
    or for ``cnn`` the layout before recipes (``<backbone>/<dataset>/l2.json``) where only that one
    exists; both there are two results for one picture: one line naming them."""
    from .dataset import folder_name
    from .results import result_path

    path = result_path(metrics_dir, backbone, dataset, recipe, "l2")
    old = Path(metrics_dir) / backbone / folder_name(dataset) / "l2.json"
    if recipe != DEFAULT_RECIPE or not (old.exists() or OUT.path_for(old).exists()):
        return path
    if path.exists() or OUT.path_for(path).exists():
        raise UserError(f"{path} and {old} are both results of {backbone} on {dataset} with l2 (recipe "
                        f"{recipe}); remove the one that is not wanted ({old} is in the layout before recipes)")
    return old


def load_outcomes(metrics_dir: Path, backbone: str, dataset: str, trial: str | None = None,
                  recipe: str = DEFAULT_RECIPE):
    """(path, trial name, Outcomes, number of trials, result) of the l2 head's result of ``recipe``
    (:func:`result_file`), its files checked to belong together and to be of ``backbone`` on
    ``dataset`` with ``recipe`` (:func:`cnnbench.results.load`), or one line saying what to run."""
    from .results import load, read_outcomes

    metrics = result_file(metrics_dir, backbone, dataset, recipe)
    path = OUT.path_for(metrics)
    named = "" if recipe == DEFAULT_RECIPE else f" --recipe {recipe}"
    rerun = f"`cnnbench evaluate -b {backbone} -d {dataset}{named} --head l2`"
    if not path.exists() and not metrics.exists():
        raise UserError(f"no l2 outcomes at {path}; run {rerun} first")
    result = load(metrics)
    asked = {"backbone": backbone, "dataset": dataset, "recipe": recipe, "head": "l2"}
    for key, want in asked.items():
        if result is None or getattr(result, key) != want:
            held = "no result" if result is None else f"{key} {getattr(result, key)!r}"
            raise UserError(f"{metrics} holds {held}, not {key} {want!r} as its folder says; rerun {rerun}")
    trials = read_outcomes(metrics, result.record)
    if not trials:
        raise UserError(f"{path} holds no trials; rerun {rerun}")
    names = [name for name, _ in trials]
    if trial is None:
        name, out = trials[0]
    elif trial in names:
        name, out = trials[names.index(trial)]
    else:
        raise UserError(f"--trial {trial!r}: {path} has trials {names}; pick one of them")
    if out.ranking is None:
        raise UserError(f"{path} has no rankings (written by an older cnnbench); rerun {rerun}")
    return path, name, out, len(trials), result


def stored_ground_truth(features_dir: Path, splits) -> dict | None:
    """The ground truth the evaluation read: ``extras/ground_truth`` of the first split's feature
    file that has one (only that dataset is read, not the features). None: no such file."""
    import h5py

    for split in splits:
        path = Path(features_dir) / f"{split}.h5"
        if not path.exists():
            continue
        try:
            with h5py.File(path, "r") as f:
                if "extras" in f and "ground_truth" in f["extras"]:
                    raw = f["extras"]["ground_truth"][()]
                    return json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
        except Exception as exc:  # noqa: BLE001 - h5py raises OSError, RuntimeError, ValueError…
            raise StoreError(f"feature file {path} is not readable ({str(exc).splitlines()[0]}); rerun "
                             "`cnnbench extract` for it (--overwrite)") from exc
    return None


def _pixels(item, query: bool) -> np.ndarray | None:
    """RGB pixels of an item (a query: its box), or None when the image cannot be read."""
    from .images import ImageDecodeError, crop_box, load_image

    if item is None:
        return None
    try:
        img = load_image(item.image, max_pixels=None)
    except ImageDecodeError:
        return None
    if query and item.box is not None:
        img = crop_box(img, item.box)
    return np.asarray(img)


def score_of(out: OUT.Outcomes) -> tuple[str | None, str]:
    """(values key, how it is named) of the per-query score drawn in the title."""
    for key, label in SCORES:
        if key in out.values:
            return key, label
    return None, ""


def build_rows(dataset, out: OUT.Outcomes, ground_truth: dict | None, chosen: list[int]) -> list[Row]:
    """One :class:`Row` per chosen query index of ``out``."""
    task = getattr(dataset, "task", "retrieval")
    items: dict[str, dict] = {}
    for split in dataset.splits:
        items[split] = {str(i.id): i for i in dataset.items(split)}
    gt_splits = [s for s in dataset.splits if s == "queries"] or list(dataset.splits)
    db_splits = [s for s in dataset.splits if s not in ("queries",)] or list(dataset.splits)

    def find(item_id: str, splits) -> object | None:
        for s in [*splits, *dataset.splits]:
            if item_id in items[s]:
                return items[s][item_id]
        return None

    key, label = score_of(out)
    labels = dict(zip(out.ids, out.labels.tolist())) if task == "multiclass" and out.labels is not None else None
    cache: dict[str, np.ndarray | None] = {}

    def result_pixels(rid: str):
        if rid not in cache:
            cache[rid] = _pixels(find(rid, db_splits), query=False)
        return cache[rid]

    rows = []
    for q in chosen:
        qid, ranking = out.ids[q], [str(r) for r in out.ranking[q]]
        if labels is not None:
            positives, junk = {r for r in ranking if labels.get(r) == labels[qid]}, set()
            known = True
        else:
            rel = relevance((ground_truth or {}).get(qid))
            known = rel is not None
            positives, junk = rel if known else (None, set())
        score = float(out.values[key][q]) if key else math.nan
        if math.isnan(score):
            shown = "not scored (no ground truth)" if not known else "n/a"
        elif key == "top4":
            shown = f"{score * 4:.0f}/4"
        else:
            shown = f"{100 * score:.1f} %"
        setting = " (revisited protocol, Medium: positives easy + hard, junk ignored)" if key == "mAP_medium" else ""
        cls = f" · class {labels[qid]}" if labels is not None else ""
        results = [Result(r, v, result_pixels(r)) for r, v in zip(ranking, verdicts(ranking, positives, junk))]
        rows.append(Row(qid, _pixels(find(qid, gt_splits), query=True), results, score,
                        f"{qid}{cls} · {label or 'score'} {shown}{setting}"))
    return rows


def choose(out: OUT.Outcomes, query_ids=(), queries: int | None = None, worst: int | None = None,
           source: str = "") -> list[int]:
    """Indices of the queries to draw: the ``--query`` ids (else all, in order), then the ``worst``
    lowest-scored (NaN last) or the first ``queries``."""
    index = {q: i for i, q in enumerate(out.ids)}
    if query_ids:
        unknown = [q for q in query_ids if q not in index]
        if unknown:
            some = ", ".join(repr(q) for q in out.ids[:5])
            raise UserError(f"--query {unknown[0]!r}: not a query of {source or 'these outcomes'}; its "
                            f"{len(out.ids)} queries are e.g. {some}")
        chosen = list(dict.fromkeys(index[q] for q in query_ids))
    else:
        chosen = list(range(len(out.ids)))
    if worst is not None:
        key, _ = score_of(out)
        if key is not None:
            v = out.values[key]
            chosen = sorted(chosen, key=lambda i: (math.isnan(v[i]), v[i] if not math.isnan(v[i]) else 0.0))
        chosen = chosen[:worst]
    elif queries is not None:
        chosen = chosen[:queries]
    return chosen


def show(dataset, backbone: str, metrics_dir, features_dir, out_dir, *, query_ids=(), queries: int | None = None,
         worst: int | None = None, sheet: bool = False, trial: str | None = None,
         recipe: str = DEFAULT_RECIPE) -> list[Path]:
    """Draw the chosen queries of ``backbone`` on ``dataset`` with ``recipe``; returns the PNGs written:
    ``out_dir/<query>.png`` each, or ``out_dir/sheet.png`` with every chosen query. ``features_dir``
    None: the feature folder the evaluation read (its run record's ``provenance.features_dir``)."""
    name = dataset.name
    writable_dir(out_dir)  # before any image is drawn
    path, trial_name, out, n_trials, result = load_outcomes(Path(metrics_dir), backbone, name, trial, recipe)
    if features_dir is None:
        features_dir = result.provenance.get("features_dir") or ""
    chosen = choose(out, query_ids, queries, worst, source=str(path))
    if sheet and len(chosen) > SHEET_MAX:
        raise UserError(f"--sheet: {len(chosen)} queries are too many for one picture (at most {SHEET_MAX}); "
                        f"add --queries N or --worst N, or leave --sheet out for one PNG per query")
    dataset.check()
    ground_truth = None
    if getattr(dataset, "task", "retrieval") != "multiclass":
        ground_truth = stored_ground_truth(Path(features_dir), dataset.splits) if features_dir else None
        if ground_truth is None:
            for split in dataset.splits:
                ground_truth = dataset.extras(split).get("ground_truth")
                if ground_truth is not None:
                    break
    rows = build_rows(dataset, out, ground_truth, chosen)
    out_dir = Path(out_dir)
    if n_trials > 1:
        out_dir = out_dir / safe_name(trial_name)
    heading = (f"{backbone} · {name}" + ("" if recipe == DEFAULT_RECIPE else f" · {recipe}") + " · l2"
               + (f" · trial {trial_name}" if n_trials > 1 else ""))
    if sheet:
        return [render(rows, out_dir / "sheet.png", heading)]
    return [render([row], out_dir / f"{safe_name(row.query_id)}.png", heading) for row in rows]
