"""``paris6k``: the Paris data set (Philbin et al., CVPR 2008), 6412 images, 55 queries.

Layout as distributed: ``paris_1-v1.tgz`` and ``paris_2-v1.tgz`` unpacked into ``jpg/`` (they hold
``paris/<landmark>/paris_<landmark>_NNNNNN.jpg``: per-landmark sub-folders, searched recursively)
and ``paris_120310.tgz`` into ``gt/`` (``<landmark>_<n>_{good,ok,junk,query}.txt``; a query file holds
``paris_<landmark>_NNNNNN x1 y1 x2 y2``). Splits ``database`` (id = file stem) and ``queries``
(cropped to their box). A few images of the archive are corrupt; extraction skips them by id, and
the ground truth, kept by id, stays valid.
"""

from __future__ import annotations

from cnnbench import hookimpl
from cnnbench.download import Download

from ._common import OxfordStyleRetrieval


@hookimpl
def register_datasets(register):
    register("paris6k", Paris6k, description="Paris (Philbin et al. 2008), 6412 images, 55 cropped queries; mAP")


class Paris6k(OxfordStyleRetrieval):
    name = "paris6k"
    folder = "paris6k"
    description = "Paris (Philbin et al. 2008): 6412 images in landmark folders, 55 queries with boxes; mAP"
    url = "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/"
    layout = ("  jpg/paris/<landmark>/paris_<landmark>_000000.jpg ... (paris_1-v1.tgz, paris_2-v1.tgz)\n"
              "  gt/defense_1_query.txt, gt/defense_1_good.txt, _ok.txt, _junk.txt ... (paris_120310.tgz)")
    query_prefixes = ("oxc1_",)  # Paris query files name the image directly (paris_...)
    # VGG's page; the face-blurred -v1 images, as revisitop's python/download.py fetches them. No
    # checksum or size is published, no mirror.
    downloads = (
        Download("https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1-v1.tgz", None, subdir="jpg"),
        Download("https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_2-v1.tgz", None, subdir="jpg"),
        Download("https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_120310.tgz", None, subdir="gt"),
    )
