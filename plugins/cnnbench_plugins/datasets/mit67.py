"""``mit67``: MIT Indoor 67 (Quattoni & Torralba, CVPR 2009), 67 indoor scene classes.

Layout as distributed: ``indoorCVPR_09.tar`` unpacks to ``Images/<class>/<image>``; the official
split files ``TrainImages.txt`` and ``TestImages.txt`` (one ``<class>/<image>`` per line) sit beside
``Images/``: 80 training and 20 test images per class, 5360 / 1340 in all. Classes are the sorted
class folders named in the split files; metric: mean class accuracy.
"""

from __future__ import annotations

from cnnbench import hookimpl
from cnnbench.dataset import Dataset, DatasetOptions, Item, paths_inside, unique_ids
from cnnbench.download import Download

from ._common import AnnotationError, bad_line, numbered_lines

SPLIT_FILES = {"train": "TrainImages.txt", "test": "TestImages.txt"}


@hookimpl
def register_datasets(register):
    register("mit67", MIT67, description="MIT Indoor 67, official 80/20 per class split; mean class accuracy")


class MIT67(Dataset):
    name = "mit67"
    task = "multiclass"
    metric = "mean_class_accuracy"
    splits = ("train", "test")
    folder = "mit67"
    description = "MIT Indoor 67: official TrainImages/TestImages (5360 / 1340); mean class accuracy"
    url = "https://web.mit.edu/torralba/www/indoor.html"
    layout = ("  Images/<class>/<image>.jpg ...   (indoorCVPR_09.tar)\n"
              "  TrainImages.txt, TestImages.txt  (one '<class>/<image>' per line)")
    # As the authors' page (the url above) links them; no checksum or size is published, no mirror.
    downloads = (
        Download("http://groups.csail.mit.edu/vision/LabelMe/NewImages/indoorCVPR_09.tar", None),
        Download("https://web.mit.edu/torralba/www/TrainImages.txt", None),
        Download("https://web.mit.edu/torralba/www/TestImages.txt", None),
    )

    Options = DatasetOptions  # the official split: nothing to choose but where it lives

    def setup(self) -> None:
        self._lists: dict[str, list[tuple[str, str]]] = {}

    def required_paths(self):
        return [self.root / "Images", *(self.root / f for f in SPLIT_FILES.values())]

    def _list(self, split: str) -> list[tuple[str, str]]:
        """(class, relative path) pairs of one official split file, sorted."""
        if split not in self._lists:
            path = self.root / SPLIT_FILES[split]
            pairs = []
            for n, line in numbered_lines(path, f"mit67 {split} list"):
                rel = line.replace("\\", "/")
                if "/" not in rel:
                    raise bad_line(path, n, line, "'<class>/<image>'")
                pairs.append((rel.split("/", 1)[0], rel))
            unique_ids([rel for _, rel in pairs], annotation=path, what="image", entry="image")
            paths_inside(self.root, [rel for _, rel in pairs], annotation=path, base=self.root / "Images")
            self._lists[split] = sorted(pairs, key=lambda p: p[1])
        return self._lists[split]

    @property
    def classes(self) -> list[str]:
        self.check()
        per_split = {s: {c for c, _ in self._list(s)} for s in SPLIT_FILES}
        for split, other in (("train", "test"), ("test", "train")):
            lonely = sorted(per_split[split] - per_split[other])
            if lonely:  # a class with no test images would drop out of the mean, one with no training images fail
                raise AnnotationError(f"mit67: class {lonely[0]!r} has {split} images in "
                                      f"{self.root / SPLIT_FILES[split]} but none in {self.root / SPLIT_FILES[other]}"
                                      f"{f' (also {len(lonely) - 1} more)' if len(lonely) > 1 else ''}; every class "
                                      "needs both: get the official lists again")
        return sorted(per_split["train"])

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        self.check()
        index = {c: k for k, c in enumerate(self.classes)}
        train = {rel for _, rel in self._list("train")}
        if split == "test" and train & {rel for _, rel in self._list("test")}:
            raise AnnotationError(f"mit67: {self.root / 'TestImages.txt'} shares images with TrainImages.txt")
        return [Item(rel, str(self.root / "Images" / rel), index[c]) for c, rel in self._list(split)]
