"""The published numbers of Razavian et al. 2014 (arXiv 1403.6382 v3), in percent.

Keys are (data set, head, metric) as cnnbench names them, so a measured record and a published
number land in the same column of ``cnnbench compare``.
"""

from __future__ import annotations

CITATION = "Razavian, Azizpour, Sullivan, Carlsson. CNN Features off-the-shelf. CVPRW 2014 (OverFeat)"

# row name -> {(dataset, head, metric): value in %}. The retrieval values of the CNN-SVM row are the
# paper's "CNN, whole image" row (4096-d, no spatial search).
ROWS: dict[str, dict[tuple[str, str, str], float]] = {
    "paper: OverFeat CNN-SVM": {
        ("voc2007", "svm", "mAP"): 73.9,
        ("mit67", "svm", "mean_class_accuracy"): 58.4,
        ("cub200", "svm", "accuracy"): 53.3,
        ("flowers102", "svm", "mean_class_accuracy"): 74.7,
        ("uiuc-attributes", "svm", "mean_auc"): 89.0,
        ("h3d-attributes", "svm", "mAP"): 70.8,
        ("oxford5k", "l2", "mAP"): 32.2,
        ("paris6k", "l2", "mAP"): 49.5,
        ("sculptures6k", "l2", "mAP"): 24.1,
        ("holidays", "l2", "mAP"): 64.2,
        ("ukbench", "l2", "top4"): 76.0,
    },
    # retrieval with spatial search (sub-patches, levels 1..4 database / 1..3 queries), no augmentation
    "paper: OverFeat CNN-ss": {
        ("oxford5k", "l2", "mAP"): 55.6,
        ("paris6k", "l2", "mAP"): 69.7,
        ("sculptures6k", "l2", "mAP"): 31.1,
        ("holidays", "l2", "mAP"): 76.9,
        ("ukbench", "l2", "top4"): 86.9,
    },
    # classification: CNNaug-SVM; retrieval: CNNaug-ss (augmented + spatial search)
    "paper: OverFeat CNNaug-SVM": {
        ("voc2007", "svm", "mAP"): 77.2,
        ("mit67", "svm", "mean_class_accuracy"): 69.0,
        ("cub200", "svm", "accuracy"): 61.8,
        ("flowers102", "svm", "mean_class_accuracy"): 86.8,
        ("uiuc-attributes", "svm", "mean_auc"): 91.5,
        ("h3d-attributes", "svm", "mAP"): 73.0,
        ("oxford5k", "l2", "mAP"): 68.0,
        ("paris6k", "l2", "mAP"): 79.5,
        ("sculptures6k", "l2", "mAP"): 42.3,
        ("holidays", "l2", "mAP"): 84.3,
        ("ukbench", "l2", "top4"): 91.1,
    },
}


ALIASES = {
    "paper": "paper: OverFeat CNN-SVM",
    "cnn-svm": "paper: OverFeat CNN-SVM",
    "cnn": "paper: OverFeat CNN-SVM",
    "cnn-ss": "paper: OverFeat CNN-ss",
    "cnnaug-svm": "paper: OverFeat CNNaug-SVM",
    "cnnaug-ss": "paper: OverFeat CNNaug-SVM",
    "cnnaug": "paper: OverFeat CNNaug-SVM",
}
DEFAULT_BASELINE = "paper: OverFeat CNN-SVM"
