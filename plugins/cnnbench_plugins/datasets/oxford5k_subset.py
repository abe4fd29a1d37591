"""``oxford5k-subset``: 1008 Oxford Buildings images with 10 queries, in cnnbench's own small format
(the copy in ``../shared/data/oxford5k-subset``, used by tests and quick benchmarks).

Layout: ``jpg/*.jpg`` and ``queries.json``, a list of ``{"id", "query" (file name), "bbox" (x1, y1,
x2, y2 in the stored images' pixels), "relevant" (file names)}``. Splits ``database`` (every image,
id = file stem) and ``queries`` (the query images cropped to their box, id = the query's ``id``).
The source merged good, ok and junk, so ``relevant`` are all positives and nothing is junk: report
it as "Oxford5k-subset (approximate gt)", comparable between backbones, not to published numbers.

The query's own (uncropped) image is in the database. In the original Oxford protocol the full query
images are database images and count as positives for their query; ``query_image: positive`` (the
default) does the same here, ``query_image: junk`` ignores it instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import Item, check_box, ids_of_files, unique_ids

from ._common import AnnotationError, RetrievalDataset, RetrievalOptions, images_under, require_images


@hookimpl
def register_datasets(register):
    register("oxford5k-subset", Oxford5kSubset,
             description="1008 Oxford5k images, 10 cropped queries (approximate gt, our format); mAP")


@dataclass(frozen=True)
class Oxford5kSubsetOptions(RetrievalOptions):
    """The query's own full image is in the database: counted as a positive (Oxford's gt) or ignored."""

    query_image: Literal["positive", "junk"] = O.option(
        "positive", "the query's own full image in the database: positive (as in Oxford's gt) or junk (ignored)")


class Oxford5kSubset(RetrievalDataset):
    Options = Oxford5kSubsetOptions
    name = "oxford5k-subset"
    folder = "oxford5k-subset"
    description = "Oxford5k subset: 1008 images, 10 queries with boxes, approximate ground truth; mAP"
    url = "cnnbench's shared test data (a subset of https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/)"
    layout = ('  jpg/all_souls_000000.jpg ...\n'
              '  queries.json: [{"id": ..., "query": "<file>.jpg", "bbox": [x1, y1, x2, y2], "relevant": ["<file>.jpg", ...]}]')

    def setup(self) -> None:
        super().setup()
        self._queries: list[dict] | None = None

    def required_paths(self):
        return [self.root / "jpg", self.root / "queries.json"]

    def _db(self) -> dict[str, Path]:
        self.check()
        return ids_of_files(require_images(images_under(self.root / "jpg"), self.root / "jpg", self.name))

    def queries(self) -> list[dict]:
        """The queries of ``queries.json``, checked: each an object with a unique string ``id``, a
        ``bbox`` that is a box (:func:`cnnbench.dataset.check_box`), and file names in ``jpg/``."""
        if self._queries is None:
            path = self.root / "queries.json"
            self.check()
            try:
                raw = json.loads(path.read_text(encoding="utf-8-sig"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise AnnotationError(f"{path} is not valid JSON: {exc}") from exc
            if not isinstance(raw, list):
                raise AnnotationError(f"{path}: expected a list of queries, got {type(raw).__name__}")
            db = self._db()
            out = []
            for k, q in enumerate(raw, 1):
                if not isinstance(q, dict):
                    raise AnnotationError(f"{path}: query {k} is {q!r:.60}, not an object with id, query, bbox and "
                                          "relevant; correct it")
                missing = {"id", "query", "bbox", "relevant"} - set(q)
                if missing:
                    raise AnnotationError(f"{path}: query {k} lacks {sorted(missing)}")
                where = f"query {k} ({q['id']!r})"
                box = check_box(q["bbox"], annotation=path, entry=where, name="bbox")
                names = q["relevant"]
                if not isinstance(names, list):
                    raise AnnotationError(f"{path}: {where}: relevant must be a list of file names in jpg/, got "
                                          f"{names!r:.60}")
                for name in [q["query"], *names]:
                    if not (isinstance(name, str) and name and Path(name).name == name):
                        raise AnnotationError(f"{path}: {where}: {name!r} is not a file name in jpg/ (no folders); "
                                              "correct it")
                if not names and self.query_image == "junk":  # its AP is undefined: the mean would leave it out
                    raise AnnotationError(f"{path}: {where}: relevant is empty, and with query_image: junk the query "
                                          "has no positives; list its relevant images, or use query_image: positive")
                stems = [Path(n).stem for n in [q["query"], *names]]
                absent = [s for s in stems if s not in db]
                if absent:
                    raise AnnotationError(f"{path}: {where} names images not in jpg/: {absent[:5]}")
                out.append({"id": q["id"], "image": stems[0], "box": box, "positives": sorted(set(stems[1:]))})
            unique_ids([q["id"] for q in out], annotation=path, what="query id", entry="query")
            self._queries = sorted(out, key=lambda q: q["id"])
        return self._queries

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        db = self._db()
        if split == "database":
            return [Item(i, str(p)) for i, p in db.items()]
        return [Item(q["id"], str(db[q["image"]]), box=q["box"]) for q in self.queries()]

    def extras(self, split: str) -> dict:
        self._require_split(split)
        if split != "queries":
            return {}
        gt = {}
        for q in self.queries():
            own = [q["image"]] if q["image"] not in q["positives"] else []
            if self.query_image == "positive":
                gt[q["id"]] = {"positives": sorted(q["positives"] + own), "junk": []}
            else:
                gt[q["id"]] = {"positives": q["positives"], "junk": own}
        return {"ground_truth": gt}
