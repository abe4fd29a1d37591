"""The published numbers of Razavian et al. 2014 (arXiv 1403.6382 v3), in percent, and the method
(cnnbench recipe) each number was measured with.

Keys are (data set, head, metric) as cnnbench names them, so a measured record and a published
number land in the same column of ``cnnbench compare``; the recipe says which measured rows a
published number is the reference of (a ``cnnaug`` row is compared with CNNaug-SVM, not CNN-SVM).
"""

from __future__ import annotations

CITATION = "Razavian, Azizpour, Sullivan, Carlsson. CNN Features off-the-shelf. CVPRW 2014 (OverFeat)"

CNN_SVM = "paper: OverFeat CNN-SVM"
CNN_SS = "paper: OverFeat CNN-ss"
CNNAUG_SVM = "paper: OverFeat CNNaug-SVM"

# (row, the recipe of its method, {(dataset, head, metric): value in %}), as the paper's tables give them.
# The paper has three methods per task, so ``compare`` has three rows; the retrieval table's third
# method, CNNaug-ss (augmented + spatial search), shares the CNNaug-SVM row with the classification
# table's CNNaug-SVM: one row, two recipes, told apart by the column's head (svm / l2).
PUBLISHED: tuple[tuple[str, str, dict[tuple[str, str, str], float]], ...] = (
    (CNN_SVM, "cnn", {  # classification: CNN-SVM, one feature per image
        ("voc2007", "svm", "mAP"): 73.9,
        ("mit67", "svm", "mean_class_accuracy"): 58.4,
        ("cub200", "svm", "accuracy"): 53.3,
        ("flowers102", "svm", "mean_class_accuracy"): 74.7,
        ("uiuc-attributes", "svm", "mean_auc"): 89.0,
        ("h3d-attributes", "svm", "mAP"): 70.8,
    }),
    (CNN_SVM, "cnn", {  # retrieval: "CNN, whole image" (4096-d, no spatial search)
        ("oxford5k", "l2", "mAP"): 32.2,
        ("paris6k", "l2", "mAP"): 49.5,
        ("sculptures6k", "l2", "mAP"): 24.1,
        ("holidays", "l2", "mAP"): 64.2,
        ("ukbench", "l2", "top4"): 76.0,
    }),
    (CNN_SS, "cnn-ss", {  # retrieval with spatial search (levels 1..4 database / 1..3 queries), no augmentation
        ("oxford5k", "l2", "mAP"): 55.6,
        ("paris6k", "l2", "mAP"): 69.7,
        ("sculptures6k", "l2", "mAP"): 31.1,
        ("holidays", "l2", "mAP"): 76.9,
        ("ukbench", "l2", "top4"): 86.9,
    }),
    (CNNAUG_SVM, "cnnaug", {  # classification: CNNaug-SVM (16 jittered views, signed power 2)
        ("voc2007", "svm", "mAP"): 77.2,
        ("mit67", "svm", "mean_class_accuracy"): 69.0,
        ("cub200", "svm", "accuracy"): 61.8,
        ("flowers102", "svm", "mean_class_accuracy"): 86.8,
        ("uiuc-attributes", "svm", "mean_auc"): 91.5,
        ("h3d-attributes", "svm", "mAP"): 73.0,
    }),
    (CNNAUG_SVM, "cnnaug-ss", {  # retrieval: CNNaug-ss (augmented + spatial search; Holidays, UKBench: jittering)
        ("oxford5k", "l2", "mAP"): 68.0,
        ("paris6k", "l2", "mAP"): 79.5,
        ("sculptures6k", "l2", "mAP"): 42.3,
        ("holidays", "l2", "mAP"): 84.3,
        ("ukbench", "l2", "top4"): 91.1,
    }),
)

# row name -> {(dataset, head, metric): value in %}
ROWS: dict[str, dict[tuple[str, str, str], float]] = {}
# (row, column) -> the recipe its number was measured with
RECIPE_OF_CELL: dict[tuple[str, tuple[str, str, str]], str] = {}
# recipe -> the paper row its measured rows are compared with (a recipe not named here: CNN-SVM)
ROW_OF_RECIPE: dict[str, str] = {}
for _row, _recipe, _cells in PUBLISHED:
    ROWS.setdefault(_row, {}).update(_cells)
    RECIPE_OF_CELL.update({(_row, col): _recipe for col in _cells})
    ROW_OF_RECIPE.setdefault(_recipe, _row)
del _row, _recipe, _cells

ALIASES = {
    "cnn-svm": CNN_SVM,
    "cnn": CNN_SVM,
    "cnn-ss": CNN_SS,
    "cnnaug-svm": CNNAUG_SVM,
    "cnnaug-ss": CNNAUG_SVM,
    "cnnaug": CNNAUG_SVM,
}
# the baseline ``paper``: each measured row against the paper row of its own method (ROW_OF_RECIPE)
BY_METHOD = "paper"
DEFAULT_BASELINE = BY_METHOD
FALLBACK_ROW = CNN_SVM  # the paper row of a recipe that names none


def row_for(recipe: str, named: str | None = None) -> str | None:
    """The paper row a result of ``recipe`` is compared with: ``named`` (a row name or an alias, as a
    recipe's ``paper_row`` gives it), else the built-in recipe's, else CNN-SVM. None: ``named`` is
    not a paper row."""
    if named is not None:
        return named if named in ROWS else ALIASES.get(named.lower())
    return ROW_OF_RECIPE.get(recipe, FALLBACK_ROW)
