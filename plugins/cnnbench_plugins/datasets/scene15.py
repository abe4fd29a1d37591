"""``scene15``: 15-Scene (Lazebnik et al. 2006): 100 training images per class, the rest for testing.

Layout: ``train/<Class>/*.jpg`` and ``test/<Class>/*.jpg`` (the fixed split). The images are grey;
the extraction engine makes them 3-channel.
"""

from __future__ import annotations

from cnnbench import hookimpl
from cnnbench.dataset import Dataset, DatasetOptions, Item, class_folders, list_images
from cnnbench.errors import MissingDataError, UserError


@hookimpl
def register_datasets(register):
    register("scene15", Scene15, description="15-Scene, 100 train per class, rest test (4485 images)")


class Scene15(Dataset):
    name = "scene15"
    task = "multiclass"
    metric = "mean_class_accuracy"
    splits = ("train", "test")
    folder = "scene15"
    description = "15-Scene categories, grey; 100 train per class, the rest test; mean class accuracy"
    url = "https://figshare.com/articles/dataset/15-Scene_Image_Dataset/7007177"
    layout = "  train/<Class>/*.jpg   (100 per class)\n  test/<Class>/*.jpg    (the rest)"

    Options = DatasetOptions  # the fixed split: nothing to choose but where it lives

    def required_paths(self):
        return [self.root / "train", self.root / "test"]

    @property
    def classes(self) -> list[str]:
        self.check()
        names = [p.name for p in class_folders(self.root / "train")]
        if not names:
            raise UserError(f"scene15: no images found under {self.root / 'train'}: it has no class folders; "
                            f"expected\n{self.layout}")
        return names

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        self.check()
        classes = self.classes
        extra = sorted({p.name for p in class_folders(self.root / split)} - set(classes))
        if extra:
            raise UserError(f"scene15: class {extra[0]!r} ({self.root / split / extra[0]}) is not among the training "
                            f"classes {', '.join(classes)} (the folders of {self.root / 'train'}); rename or remove it")
        items = []
        for k, name in enumerate(classes):
            folder = self.root / split / name
            if not folder.is_dir():
                raise MissingDataError(f"scene15: class folder {folder} is missing (class {name!r} has training "
                                       f"images in {self.root / 'train' / name}); is the data set fully unpacked?")
            found = [Item(f"{name}/{p.name}", str(p), k) for p in list_images(folder)]
            if not found:
                raise UserError(f"scene15: no images found under {folder} (class {name!r}); add its images or "
                                "remove the class from both splits")
            items.extend(found)
        return items
