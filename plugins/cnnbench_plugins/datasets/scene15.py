"""``scene15``: 15-Scene (Lazebnik et al. 2006): 100 training images per class, the rest for testing.

Layout: ``train/<Class>/*.jpg`` and ``test/<Class>/*.jpg`` (the fixed split). The images are grey;
the extraction engine makes them 3-channel.
"""

from __future__ import annotations

from cnnbench import hookimpl
from cnnbench.dataset import Dataset, Item, class_folders, list_images


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

    def required_paths(self):
        return [self.root / "train", self.root / "test"]

    @property
    def classes(self) -> list[str]:
        self.check()
        return [p.name for p in class_folders(self.root / "train")]

    def items(self, split: str) -> list[Item]:
        self._require_split(split)
        self.check()
        classes = self.classes
        items = []
        for k, name in enumerate(classes):
            folder = self.root / split / name
            if not folder.is_dir():
                raise FileNotFoundError(f"scene15: class folder {folder} is missing")
            items.extend(Item(f"{name}/{p.name}", str(p), k) for p in list_images(folder))
        return items
