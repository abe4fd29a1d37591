"""``sculptures6k``: Oxford Sculptures (Arandjelović & Zisserman, ACCV 2011), 6340 images of Henry
Moore sculptures, 70 queries (10 sculptures x 7).

Its ground truth uses Oxford's format: ``gt/<sculpture>_<n>_{good,ok,junk,query}.txt``, a query
file holding ``<image> x1 y1 x2 y2`` (an ``oxc1_`` prefix, if present, is stripped). Images go in
``jpg/`` (sub-folders allowed). Splits ``database`` and ``queries``; positives = good + ok, junk
ignored. The archive's exact file names are not mirrored here; if yours differ, unpack them into
this layout.
"""

from __future__ import annotations

from cnnbench import hookimpl

from ._common import OxfordStyleRetrieval


@hookimpl
def register_datasets(register):
    register("sculptures6k", Sculptures6k, description="Oxford Sculptures, 6340 images, 70 queries; mAP (Oxford-style gt)")


class Sculptures6k(OxfordStyleRetrieval):
    name = "sculptures6k"
    folder = "sculptures6k"
    description = "Sculptures 6k (Arandjelović & Zisserman 2011): 6340 images, 70 queries with boxes; mAP"
    url = "https://www.robots.ox.ac.uk/~vgg/data/sculptures6k/"
    layout = ("  jpg/<image>.jpg ... (6340 images)\n"
              "  gt/<sculpture>_<n>_query.txt, _good.txt, _ok.txt, _junk.txt (Oxford's gt format)")
