"""``imagefolder``: any folder with one sub-folder per class.

With ``train/`` and ``test/`` sub-folders those are the splits. Otherwise every image goes into one
stored split ``all`` and the protocol draws, per seed, ``train_per_class`` training images per class
(the rest, or at most ``test_per_class``, for testing), like Caltech-101's "30 per class" protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import (IMAGE_EXTENSIONS, Dataset, DatasetOptions, Item, Trial, class_folders, list_images,
                              seeded_per_class_split)
from cnnbench.errors import CnnbenchError, UserError

from . import _common


@hookimpl
def register_datasets(register):
    register("imagefolder", ImageFolder, description="a folder of class folders (optional train/ and test/)")


def _name(name: str, value) -> str:
    """A plain name (it names the feature folder); empty keeps ``imagefolder``."""
    if value != "" and (not isinstance(value, str) or "/" in value or "\\" in value or value.startswith(".")):
        raise UserError(f"{name}: {value!r} is not allowed; expected a plain name for the data set "
                        "(no '/', not starting with '.'), used for its feature folder")
    return value


@dataclass(frozen=True)
class ImageFolderOptions(DatasetOptions):
    """The seeded per-class split of a folder without train/ and test/ (ignored with them), and its name."""

    train_per_class: int = O.option(30, "training images drawn per class and seed", check=_common.train_per_class)
    test_per_class: int = O.option(-1, "test images per class, at most, from the rest (-1: all the rest)",
                                   check=_common.test_per_class)
    seeds: tuple[int, ...] = O.option((0, 1, 2), "one trial per seed (distinct integers >= 0)", check=_common.seeds)
    name: str | None = O.option(None, "the data set's name, for its feature folder (default: imagefolder)",
                                check=_name, record=False)


class ImageFolder(Dataset):
    name = "imagefolder"
    task = "multiclass"
    metric = "mean_class_accuracy"
    folder = "imagefolder"
    description = "one folder per class; train/ and test/ if present, else seeded per-class splits"
    layout = "  <Class>/<image>.jpg ...            (split by seed), or\n  train/<Class>/*.jpg and test/<Class>/*.jpg"
    url = "your own images"

    Options = ImageFolderOptions

    def setup(self) -> None:
        if self.opts.name:
            self.name = self.opts.name
        self.seeds = list(self.opts.seeds)  # callers read a list, as before the options were declared
        self._classes: list[str] | None = None

    @property
    def has_fixed_split(self) -> bool:
        return self.root is not None and (self.root / "train").is_dir() and (self.root / "test").is_dir()

    @property
    def splits(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("train", "test") if self.has_fixed_split else ("all",)

    def options(self) -> dict:
        # Not the declared options as recorded: your own images are known by their folder, so its path
        # enters the signature (a published data set's does not), and with its own train/ and test/ the
        # split options play no part; the name only names the feature folder.
        return {"path": str(self.root), **({} if self.has_fixed_split else self.opts.recorded())}

    def _class_root(self) -> Path:
        self.check()
        return self.root / "train" if self.has_fixed_split else self.root

    def _no_images(self, folder: Path, why: str) -> UserError:
        return UserError(f"{self.name}: no images found under {folder}: {why}; expected "
                         + ("train/<Class>/<image> and test/<Class>/<image>" if self.has_fixed_split
                            else "<Class>/<image>") + f" with image files ({', '.join(IMAGE_EXTENSIONS)})")

    def _class_folders(self, base: Path) -> list[Path]:
        folders = class_folders(base)
        if not folders:
            loose = len(list_images(base))
            raise self._no_images(base, "it has no class folders" + (
                f" (it holds {loose} image(s) directly; put each class's images in a sub-folder named after the class)"
                if loose else ""))
        return folders

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            classes = [p.name for p in self._class_folders(self._class_root())]
            if self.has_fixed_split:  # checked before any split is extracted, not after train/ is done
                self._require_every_class("test", {f.name: len(list_images(f)) for f in
                                                   self._check_known(self.root / "test", classes)}, classes)
            self._classes = classes
        return self._classes

    def _require_every_class(self, split: str, counts: dict[str, int], classes: list[str] | None = None) -> None:
        """Every class has images in ``split`` (``counts``: images per class folder): a class without
        test images would silently drop out of the mean, one without training images never be predicted."""
        if not any(counts.values()):
            raise self._no_images(self.root / split, f"its {len(counts)} class folder(s) hold no image files")
        empty = [c for c in (self.classes if classes is None else classes) if counts.get(c, 0) == 0]
        if empty:
            where = self.root / split / empty[0]
            state = ("is a file, not a folder of images" if where.is_file() else
                     "does not exist" if not where.exists() else "holds no image files")
            raise UserError(f"{self.name}: class {empty[0]!r} has no {'training' if split == 'train' else 'test'} "
                            f"images ({where} {state}); every class needs images in both train/ and test/: add "
                            "images or remove the class from both"
                            f"{' (also empty: ' + ', '.join(empty[1:]) + ')' if len(empty) > 1 else ''}")

    def _check_known(self, base: Path, classes: list[str]) -> list[Path]:
        """The class folders of ``base``; one that is not a training class is refused, by name."""
        folders = self._class_folders(base)
        unknown = [f for f in folders if f.name not in classes]
        if unknown:
            f = unknown[0]
            raise UserError(f"{self.name}: class {f.name!r} ({f}) is not among the training classes "
                            f"{', '.join(classes)}; give it training images in {self.root / 'train' / f.name}, "
                            f"or rename or remove {f}")
        return folders

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        base = self.root / split if self.has_fixed_split else self.root
        index = {c: k for k, c in enumerate(self.classes)}
        folders = self._check_known(base, self.classes)
        items, counts = [], {}
        for folder in folders:
            paths = list_images(folder)
            counts[folder.name] = len(paths)
            items.extend(Item(f"{folder.name}/{path.name}", str(path), index[folder.name]) for path in paths)
        if not items:
            raise self._no_images(base, f"its {len(folders)} class folder(s) hold no image files")
        if self.has_fixed_split:
            self._require_every_class(split, counts)
        else:
            need = self.train_per_class + max(self.test_per_class, 0)
            small = [c for c, n in counts.items() if n < need]
            if small:
                c = min(small, key=lambda c: counts[c])
                if self.test_per_class < 0:
                    asked, fix = f"train_per_class: {self.train_per_class}", "lower train_per_class"
                    if counts[c] > 1:
                        fix += f" (e.g. -D train_per_class={counts[c] - 1})"
                else:
                    asked = f"train_per_class + test_per_class: {self.train_per_class} + {self.test_per_class}"
                    fix = "lower train_per_class or test_per_class"
                others = f" ({len(small)} classes are that small)" if len(small) > 1 else ""
                raise UserError(f"{self.name}: class {c!r} has {counts[c]} image(s) in {base / c}, fewer than "
                                f"{asked}{others}; {fix}, or add images")
        return items

    def _class_names(self) -> list[str] | None:
        try:
            return self.classes
        except (CnnbenchError, OSError):
            return None

    def trials(self, labels: dict[str, np.ndarray]) -> list[Trial]:
        if self.has_fixed_split:
            return super().trials(labels)
        hint = (f"lower train_per_class (now {self.train_per_class})"
                + (f" or test_per_class (now {self.test_per_class})" if self.test_per_class > 0 else "")
                + ", or add images (unreadable images are skipped at extraction)")
        names = self._class_names()
        out = []
        for seed in self.seeds:
            train, test = seeded_per_class_split(labels["all"], [self.train_per_class, self.test_per_class], seed,
                                                 class_names=names, hint=f"{self.name}: {hint}")
            out.append(Trial(f"seed{seed}", {"all": train}, {"all": test}))
        return out
