"""``wds:<folder>``: a WebDataset image-classification set in the layout CLIP_benchmark publishes
(``clip-benchmark/wds_voc2007``, ``wds_vtab-flowers``, ``wds_vtab-caltech101`` … on the Hugging Face hub)::

    classnames.txt                          one class name per line: line k names class k - 1
    zeroshot_classification_templates.txt   (optional; not read: no head here uses text)
    dataset_type.txt                        (optional) "multilabel": labels are .npy rows
    train/nshards.txt                       N, the number of shards
    train/0.tar … train/<N-1>.tar           samples: <key>.webp (or .jpg, .png) and <key>.cls (the class id)
    test/nshards.txt, test/0.tar …          the same

``<folder>`` is a folder under the data root (``wds:wds_voc2007`` reads ``<data_root>/wds_voc2007``),
or an absolute path (``wds:/data/wds_voc2007``, or ``./``, ``../``, ``~/``). A URL
(``wds:https://huggingface.co/datasets/clip-benchmark/wds_voc2007/resolve/main``, ``wds:hf://datasets/…``)
names where the set comes from: it is read from a local copy (``-D path=…``, else one line saying what
to fetch where), since every shard's SHA-256 is needed before extraction anyway.

Shards are read by the ``webdataset`` library's tar iterators (its ``tar_file_expander`` and
``group_by_keys``), raw (nothing decoded there), from a stream that hashes what they read, shard
after shard in their numbered order; each sample becomes an item whose id is its ``__key__`` and
whose image is its bytes, decoded by cnnbench's own decoder like any image file. A sample without an
image is a skipped image with its reason. Protocol: train on ``train``, test on ``test``.

What the features depend on enters the recorded options: per split the number of shards, their bytes
and a SHA-256 over each shard's name, size and SHA-256; and classnames.txt's SHA-256. A changed shard
re-extracts; a moved folder does not (the folder is not recorded, the name ``wds:<folder>`` is).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cnnbench import hookimpl
from cnnbench import options as O
from cnnbench.dataset import AnnotationError, Dataset, DatasetOptions, EncodedImage, Item
from cnnbench.errors import MissingDataError, UserError

from ._common import numbered_lines

LAYOUT = ("  classnames.txt                 one class name per line (line k: class k - 1)\n"
          "  <split>/nshards.txt            the number of shards N (for each split: train/, test/)\n"
          "  <split>/0.tar … <N-1>.tar      WebDataset shards: <key>.webp|jpg|png and <key>.cls per sample")
URL = "https://huggingface.co/clip-benchmark (CLIP_benchmark's wds_* sets), or your own shards in that layout"
TASKS = {"multiclass": ("mean_class_accuracy", "accuracy"), "multilabel": ("mAP", "mean_auc")}
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http://, https://, hf://, s3:, pipe: …: never opened, only named
_END_OF_ARCHIVE = b"\0" * 1024  # a tar ends with two zero blocks (POSIX); a shard cut at a member's end lacks them
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


@hookimpl
def register_datasets(register):
    register("wds:", webdataset_shards, prefix=True, options=WDSOptions,
             description="WebDataset shards in CLIP_benchmark's layout: wds:<folder under the data root, or a path>")


def _splits(name: str, value) -> dict:
    """``{train: <folder>, test: <folder>}``: the sub-folders that hold each stored split's shards."""
    value = O.mapping(name, value)
    if sorted(value) != ["test", "train"]:
        raise UserError(f"{name}: {O.show(value)} is not allowed; expected the folders of the two splits, "
                        "{train: <folder>, test: <folder>} (e.g. {train: train, test: val})")
    for split, folder in value.items():
        if (not isinstance(folder, str) or not folder.strip() or os.path.isabs(folder)
                or ".." in Path(folder).parts or "\\" in folder):
            raise UserError(f"{name}: {split}: {folder!r} is not allowed; expected a sub-folder of the data set's "
                            "folder (e.g. train, test, val)")
    return {"train": value["train"], "test": value["test"]}


def _image_keys(name: str, value) -> tuple[str, ...]:
    keys = tuple(O.str_list(name, value))
    for k in keys:
        if k != k.lower() or k.startswith(".") or k.startswith("__"):
            raise UserError(f"{name}: {k!r} is not allowed; expected a sample's file extension as webdataset "
                            "names it, lower case without the dot (webp, jpg, png)")
    return keys


@dataclass(frozen=True)
class WDSOptions(DatasetOptions):
    """How a sample is read: which of its files is the image, which the label, and which folders
    are the splits."""

    splits: dict = O.option({"train": "train", "test": "test"}, "the sub-folder of each stored split",
                            check=_splits)
    image_keys: tuple[str, ...] = O.option(("webp", "jpg", "jpeg", "png"), "a sample's image: the first of "
                                           "these files it has (extensions, lower case)", check=_image_keys)
    label_key: str | None = O.option(None, "a sample's label file (default: cls; npy for multilabel)")
    multilabel: bool = O.option(False, "labels list several classes: a .npy row of 1/0/-1 per class (as "
                                "CLIP_benchmark writes them) or a list of class ids")
    metric: str | None = O.option(None, "the reported metric (default: mean_class_accuracy; mAP for multilabel)",
                                  choices=[m for ms in TASKS.values() for m in ms])

    def check(self, owner: str) -> "WDSOptions":
        task = "multilabel" if self.multilabel else "multiclass"
        if self.metric is not None and self.metric not in TASKS[task]:
            other = "multiclass" if self.multilabel else "multilabel"
            raise UserError(f"{owner}: metric: {self.metric!r} scores {other} "
                            f"sets; this one is {task} (multilabel={str(self.multilabel).lower()}): choose "
                            f"{' or '.join(TASKS[task])}")
        label = self.label_key or ("npy" if self.multilabel else "cls")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", label):
            raise UserError(f"{owner}: label_key: {label!r} is not allowed; expected a sample's file extension, "
                            "lower case without the dot (cls, npy, json)")
        if label in self.image_keys:
            raise UserError(f"{owner}: label_key {label!r} is also among image_keys {list(self.image_keys)}; "
                            "one file cannot be both")
        return replace(self, label_key=label, metric=self.metric or TASKS[task][0])


def webdataset_shards(spec: str, *, options: WDSOptions) -> "WebDatasetShards":
    return WebDatasetShards(spec, options=options)


@dataclass(frozen=True)
class _Shard:
    path: Path
    size: int
    sha256: str


class WebDatasetShards(Dataset):
    """One ``wds:<folder>`` set; nothing is read until it is used (``cnnbench datasets`` builds it)."""

    Options = WDSOptions
    splits = ("train", "test")
    description = "WebDataset shards (CLIP_benchmark's layout)"
    layout = LAYOUT
    url = URL

    def __init__(self, spec: str, *, options: WDSOptions | None = None, **given) -> None:
        self.name = f"wds:{spec}"
        self.spec = spec
        self.remote = bool(_URL.match(spec)) and not os.path.isabs(spec)
        if self.remote:  # read from a local copy: its folder is where the fetch instructions put it
            self.hub = re.match(r"^(?:hf://datasets/|https?://huggingface\.co/datasets/)([^/@]+/[^/@]+)", spec)
            last = spec.rstrip("/").rsplit("/", 1)[-1]
            self.folder = (self.hub.group(1).split("/")[1] if self.hub else
                           re.sub(r"[^A-Za-z0-9._-]+", "_", last).strip("._") or "wds_set")
            self.url = spec
        elif spec.startswith(("./", "../", "~")) or os.path.isabs(spec):
            self.folder = os.path.abspath(os.path.expanduser(spec))  # joined to the data root, an absolute path wins
        else:
            self.folder = spec
        super().__init__(options=options, **given)

    def setup(self) -> None:
        if self.opts.path is not None:
            self.remote = False  # wds:<url> -D path=<its local copy>: the URL names it, the copy is read
        self._classes: list[str] | None = None
        self._classnames_sha256 = ""
        self._shards: dict[str, list[Path]] = {}
        self._digests: dict[str, dict] = {}  # per split, as last read

    # -- what the protocol reads ----------------------------------------------------------------
    @property
    def task(self) -> str:  # type: ignore[override]
        return "multilabel" if self.multilabel else "multiclass"

    @property
    def metric(self) -> str:  # type: ignore[override]
        return self.opts.metric

    @property
    def classes(self) -> list[str]:
        if self._classes is None:
            self.check()
            self._classes = _class_names(self.root / "classnames.txt", self.name)
            self._classnames_sha256 = hashlib.sha256((self.root / "classnames.txt").read_bytes()).hexdigest()
        return self._classes

    def options(self) -> dict:
        """The declared options, and what the shards and class names are (their digests). Every
        split is read for it, so a damaged shard or a bad label of ``test`` is found before the
        first feature of ``train`` is written."""
        self.classes  # noqa: B018 - checks the layout and reads classnames.txt
        for split in self.splits:
            if split not in self._digests:
                self._scan(split, keep=False)
        return {**super().options(), "classnames_sha256": self._classnames_sha256,
                "shards": {split: self._digests[split] for split in self.splits}}

    # -- the layout ------------------------------------------------------------------------------
    def check(self) -> None:
        if self.remote:
            raise MissingDataError(self._fetch_first())
        if not self.root.is_dir():
            raise MissingDataError(
                f"{self.name}: {self.root} is not a folder; put the shards there (CLIP_benchmark's layout: "
                f"classnames.txt, train/ and test/ with nshards.txt and 0.tar …), e.g. `hf download "
                f"clip-benchmark/wds_<set> --repo-type dataset --local-dir {self.root}`, or name the folder "
                "(wds:<folder under the data root>, wds:/absolute/path)")
        missing = [p for p in (self.root / "classnames.txt", *(self.root / f for f in self.opts.splits.values()))
                   if not p.exists()]
        if missing:
            have = sorted(p.name for p in self.root.iterdir())[:8]
            raise MissingDataError(
                f"{self.name}: {self.root} is not in CLIP_benchmark's WebDataset layout: {missing[0]} does not exist "
                f"(the folder holds {', '.join(have) or 'nothing'}); expected classnames.txt and the split folders "
                f"{' and '.join(self.opts.splits.values())} with nshards.txt and 0.tar … "
                "(-D splits=… names others)")
        if (self.root / "dataset_type.txt").is_file():
            kind = (self.root / "dataset_type.txt").read_text(encoding="utf-8", errors="replace").strip().lower()
            if kind == "retrieval":
                raise UserError(f"{self.name}: {self.root / 'dataset_type.txt'} says retrieval: an image-text set "
                                "(captions, no classes), which no cnnbench protocol scores; use a classification set")
            if kind == "multilabel" and not self.multilabel:
                raise UserError(f"{self.name}: {self.root / 'dataset_type.txt'} says multilabel: give "
                                "-D multilabel=true (params.yaml: dataset_options) to read its .npy label rows")

    def _fetch_first(self) -> str:
        get = (f"`hf download {self.hub.group(1)} --repo-type dataset --local-dir {self.root}`" if self.hub else
               f"its classnames.txt, <split>/nshards.txt and <split>/0.tar … <N-1>.tar from {self.spec} into "
               f"{self.root}")
        return (f"{self.name}: shards are read from a local folder (their SHA-256 enter the features' signature, so "
                f"every shard is read before extraction): fetch {get}, then use -d wds:{self.folder}")

    def shard_paths(self, split: str) -> list[Path]:
        """The shards of ``split``, in their numbered order: ``0.tar … <N-1>.tar`` as nshards.txt counts
        them (without it: every ``<n>.tar`` there, which must then run from 0 without a gap)."""
        self._require_split(split)
        if split in self._shards:
            return self._shards[split]
        self.check()
        folder = self.root / self.opts.splits[split]
        count_file = folder / "nshards.txt"
        if count_file.is_file():
            lines = numbered_lines(count_file, self.name)
            text = lines[0][1] if len(lines) == 1 else ""
            if not re.fullmatch(r"\d+", text) or int(text) < 1:
                raise AnnotationError(f"{count_file}: expected one line with the number of shards (1 or more), got "
                                      f"{' / '.join(t for _, t in lines)[:80]!r}; fix it or fetch it again")
            shards = [folder / f"{k}.tar" for k in range(int(text))]
            absent = [p for p in shards if not p.is_file()]
            if absent:
                raise MissingDataError(f"{self.name}: {absent[0]} does not exist ({len(absent)} of the {len(shards)} "
                                       f"shards that {count_file} counts are missing); fetch the missing shards")
        else:
            numbered = sorted((int(p.stem), p) for p in folder.glob("*.tar") if re.fullmatch(r"\d+", p.stem))
            if not numbered:
                raise MissingDataError(f"{self.name}: {folder} holds no shards (0.tar, 1.tar …) and no nshards.txt; "
                                       f"expected CLIP_benchmark's layout:\n{LAYOUT}")
            if [k for k, _ in numbered] != list(range(len(numbered))):
                gap = next(k for k in range(len(numbered) + 1) if k not in {n for n, _ in numbered})
                raise MissingDataError(f"{self.name}: {folder} has shards numbered "
                                       f"{numbered[0][0]}…{numbered[-1][0]} "
                                       f"but no {gap}.tar, and no nshards.txt to say how many there are; fetch the "
                                       "missing shard, or write nshards.txt")
            shards = [p for _, p in numbered]
        self._shards[split] = shards
        return shards

    def items(self, split: str) -> list[Item]:
        return self._scan(split, keep=True)

    def _scan(self, split: str, *, keep: bool) -> list[Item]:
        """Read every shard of ``split`` once: its samples (kept as items with ``keep``) and its
        digest. A digest that differs from the one an earlier read of this split recorded (the
        signature's) means the shards changed meanwhile: refused, so features never carry a
        signature of other bytes than theirs."""
        classes = self.classes
        shards = self.shard_paths(split)
        label_key, keys = self.opts.label_key, self.opts.image_keys
        items: list[Item] = []
        seen: dict[str, Path] = {}
        found: set[str] = set()
        n_images = 0
        read: list[_Shard] = []
        for shard in shards:
            with open(shard, "rb") as f:
                lazy = keep and not f.read(8).startswith(_COMPRESSED)  # a plain tar is read at random, later
                f.seek(0)
                stream = _HashingReader(f)
                for sample in _samples(shard, stream):
                    key = sample["__key__"]
                    if key in seen:
                        where = "twice in it" if seen[key] == shard else f"in {seen[key]} too"
                        raise AnnotationError(f"{shard}: the sample key {key!r} appears {where}; keys are the items' "
                                              "ids and must be unique in a split (a sample's files must also lie side "
                                              "by side in the tar): rebuild the shards with unique keys")
                    seen[key] = shard
                    files = sorted(k for k in sample if not k.startswith("__"))
                    found.update(files)
                    if label_key not in sample:
                        raise AnnotationError(f"{shard}/{key}: the sample has no .{label_key} label (its files: "
                                              f"{', '.join(files) or 'none'}); add it, or name the label file with "
                                              "-D label_key=…")
                    label = self._label(sample[label_key], f"{shard}/{key}.{label_key}", len(classes))
                    ext = next((k for k in keys if k in sample), None)
                    n_images += ext is not None and len(sample[ext]) > 0
                    if not keep:
                        continue
                    if ext is None:  # recorded as a skipped image, with the reason, like an unreadable file
                        image = EncodedImage(f"{shard}/{key} (its files: {', '.join(files)}; none is one of image_keys "
                                             f"{', '.join(keys)})", b"")
                    elif lazy:  # read when decoded, checked to be the bytes listed: a split is never held in memory
                        digest = hashlib.sha256(sample[ext]).hexdigest()
                        image = EncodedImage(f"{shard}/{key}.{ext}", source=str(shard),
                                             load=functools.partial(_member, str(shard), f"{key}.{ext}", digest))
                    else:
                        image = EncodedImage(f"{shard}/{key}.{ext}", sample[ext])
                    items.append(Item(key, image, label))
                read.append(stream.finish(shard))
        if not seen:
            raise UserError(f"{self.name}: the {len(shards)} shard(s) of {split} ({shards[0].parent}) hold no samples; "
                            "fetch them again")
        if not n_images:
            raise UserError(f"{self.name}: none of the {len(seen)} samples of {split} ({shards[0].parent}) has an "
                            f"image under image_keys {', '.join(keys)} (their files: {', '.join(sorted(found))}); name "
                            "the image file with -D image_keys=[…]")
        digest = _digest(read)
        if self._digests.setdefault(split, digest) != digest:
            raise UserError(f"{self.name}: the shards of {split} ({shards[0].parent}) changed while cnnbench read "
                            "them; run the same command again once they are complete")
        return items

    def _label(self, data: bytes, where: str, n_classes: int) -> int | tuple[int, ...]:
        """A class id (``.cls``: an integer as text) or, for multilabel, one 1/0/-1 per class."""
        if self.multilabel:
            return _multilabel(data, where, n_classes)
        text = _text(data, where)
        if not re.fullmatch(r"-?\d+", text):
            raise AnnotationError(f"{where}: the label {text[:40]!r} is not an integer class id; each sample's "
                                  f".cls holds its class's line number in classnames.txt, from 0"
                                  f"{' (several ids: a multilabel set, -D multilabel=true)' if _ids(text) else ''}")
        k = int(text)
        if not 0 <= k < n_classes:
            raise AnnotationError(f"{where}: class id {k} is outside 0…{n_classes - 1} (classnames.txt names "
                                  f"{n_classes} classes); fix the label or classnames.txt")
        return k


def _member(shard: str, name: str, sha256: str) -> bytes:
    """One file of a plain (uncompressed) shard, read where the tar index says it lies, and checked
    to be the bytes the shard held when it was listed (their SHA-256)."""
    offset, size = _tar_index(shard, *_stamp(shard))[name]
    with open(shard, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ValueError(f"{shard}: {name} is not the file the shard held when it was listed (the shard changed "
                         "since); run the same command again")
    return data


def _stamp(shard: str) -> tuple[int, int]:
    st = os.stat(shard)
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _tar_index(shard: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    """``{member name: (data offset, size)}`` of a plain tar, from its headers only (a new one when the
    file's size or time changes)."""
    with tarfile.open(shard, "r:") as t:
        return {m.name: (m.offset_data, m.size) for m in t.getmembers() if m.isfile()}


def _samples(shard: Path, stream: "_HashingReader"):
    """The samples of one shard, raw (``{__key__, <ext>: bytes}``), in the tar's order, read by
    webdataset's tar iterators from ``stream`` (so the bytes parsed are the bytes hashed); a shard
    they cannot read is one line."""
    from webdataset import tariterators

    try:
        yield from tariterators.group_by_keys(tariterators.tar_file_expander([{"url": str(shard), "stream": stream}]))
    except Exception as exc:  # noqa: BLE001 - tarfile and webdataset raise many kinds on damaged bytes
        first = str(exc.args[0]) if exc.args else type(exc).__name__
        raise _corrupt(shard, f"{type(exc).__name__}: {first.split(' @ ')[0]}") from exc


class _HashingReader:
    """A shard file as tarfile reads it, hashed on the way; :meth:`finish` reads what tar leaves
    (the padding after its end-of-archive blocks) and checks that those blocks are there: a shard cut
    between two samples reads as a clean, shorter tar to tarfile."""

    def __init__(self, f) -> None:
        self.f, self.h, self.size, self.head, self.tail = f, hashlib.sha256(), 0, b"", b""

    def read(self, n: int = -1) -> bytes:
        block = self.f.read(n)
        self.h.update(block)
        if self.size < 8:
            self.head = (self.head + block)[:8]
        self.size += len(block)
        self.tail = (self.tail + block)[-len(_END_OF_ARCHIVE):]
        return block

    def finish(self, shard: Path) -> "_Shard":
        while self.read(1 << 20):
            pass
        # a compressed shard (gzip, bzip2, xz) is checked by its decompressor, which notices a cut stream
        if not self.head.startswith(_COMPRESSED) and self.tail != _END_OF_ARCHIVE:
            raise _corrupt(shard, "it ends without tar's end-of-archive blocks: the file is cut short")
        return _Shard(shard, self.size, self.h.hexdigest())

    def __repr__(self) -> str:
        return f"<shard {self.f.name}>"


def _corrupt(shard: Path, why: str) -> AnnotationError:
    return AnnotationError(f"{shard}: not a readable WebDataset shard ({why}); fetch it again")


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise AnnotationError(f"{where}: the label is not text ({data[:16]!r}…); expected a class id such as "
                              "3") from None


def _ids(text: str) -> list[str]:
    parts = [p for p in re.split(r"[\s,]+", text.strip("[]() \n")) if p]
    return parts if len(parts) > 1 and all(re.fullmatch(r"-?\d+", p) for p in parts) else []


def _multilabel(data: bytes, where: str, n_classes: int) -> tuple[int, ...]:
    """A ``.npy`` row of 1 (present), 0 (absent), -1 (ignored) per class, or a list of the present
    classes' ids (JSON ``[3, 7]`` or ``3 7``)."""
    if data.startswith(b"\x93NUMPY"):
        try:
            row = np.load(io.BytesIO(data), allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise AnnotationError(f"{where}: not a readable .npy label row ({exc})") from None
        if row.ndim != 1 or row.shape[0] != n_classes or row.dtype.kind not in "biuf":
            raise AnnotationError(f"{where}: the label row has shape {row.shape} ({row.dtype}); expected {n_classes} "
                                  "numbers, one per line of classnames.txt")
        if not np.isin(row, (-1, 0, 1)).all():
            odd = sorted(set(row.tolist()) - {-1, 0, 1})[:3]
            raise AnnotationError(f"{where}: the label row holds {odd}; expected "
                                  "1 (present), 0 (absent) or -1 (ignored) per class")
        return tuple(int(v) for v in row)
    text = _text(data, where)
    try:
        ids = json.loads(text) if text.startswith("[") else [int(p) for p in re.split(r"[\s,]+", text) if p]
    except ValueError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise AnnotationError(f"{where}: the label {text[:40]!r} is not a list of class ids (e.g. [3, 7] or 3 7), nor "
                              "a .npy row")
    bad = [i for i in ids if not 0 <= i < n_classes]
    if bad:
        raise AnnotationError(f"{where}: class id {bad[0]} is outside 0…{n_classes - 1} (classnames.txt names "
                              f"{n_classes} classes)")
    return tuple(1 if k in set(ids) else 0 for k in range(n_classes))


def _class_names(path: Path, name: str) -> list[str]:
    """classnames.txt's lines, in order (line k names class k - 1): a blank line inside would shift
    every later class, so it is refused."""
    lines = numbered_lines(path, name)
    if not lines:
        raise AnnotationError(f"{path}: no class names; expected one per line (line k names class k - 1)")
    for k, (n, _) in enumerate(lines, 1):
        if n != k:
            raise AnnotationError(f"{path}, line {k}: empty, inside the list; line k names class k - 1, so a blank "
                                  "line would shift every later class: remove it")
    return [text for _, text in lines]


def _digest(shards: list[_Shard]) -> dict:
    """``{files, bytes, sha256}`` of one split's shards: the SHA-256 over ``<name> <size> <sha256>``
    lines, one per shard in order."""
    text = "".join(f"{s.path.name} {s.size} {s.sha256}\n" for s in shards)
    return {"files": len(shards), "bytes": sum(s.size for s in shards),
            "sha256": hashlib.sha256(text.encode()).hexdigest()}
