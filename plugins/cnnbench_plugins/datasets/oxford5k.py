"""``oxford5k``: the Oxford Buildings data set (Philbin et al., CVPR 2007), 5062 images, 55 queries.

Layout as distributed: ``oxbuild_images-v1.tgz`` unpacked into ``jpg/`` and ``gt_files_170407.tgz``
into ``gt/`` (``<landmark>_<n>_{good,ok,junk,query}.txt``; a query file holds
``oxc1_<image> x1 y1 x2 y2``). Splits: ``database`` (every image, id = file stem) and ``queries``
(the 55 query images cropped to their box, id = ``<landmark>_<n>``). Ground truth: good + ok are
positives, junk is ignored, as in the official ``compute_ap``.
"""

from __future__ import annotations

from cnnbench import hookimpl
from cnnbench.download import Download

from ._common import OxfordStyleRetrieval


@hookimpl
def register_datasets(register):
    register("oxford5k", Oxford5k, description="Oxford Buildings, 5062 images, 55 cropped queries; mAP (good+ok, junk ignored)")


class Oxford5k(OxfordStyleRetrieval):
    name = "oxford5k"
    folder = "oxford5k"
    description = "Oxford Buildings (Philbin et al. 2007): 5062 images, 55 queries with boxes; mAP"
    url = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/"
    layout = ("  jpg/all_souls_000000.jpg ... (5062 images, from oxbuild_images-v1.tgz)\n"
              "  gt/all_souls_1_query.txt, gt/all_souls_1_good.txt, _ok.txt, _junk.txt ... (gt_files_170407.tgz)")
    # VGG's page; the face-blurred -v1 images, as revisitop's python/download.py fetches them since
    # June 2022. No checksum or size is published, no mirror.
    downloads = (
        Download("https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images-v1.tgz", None, subdir="jpg"),
        Download("https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/gt_files_170407.tgz", None, subdir="gt"),
    )
