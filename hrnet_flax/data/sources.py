"""Where images come from: ImageNet through tensorflow-datasets, or a `root/<class>/<image>` folder.

`DataSource` names one of them; `imagenet_builder` checks/prepares the tfds `imagenet2012`
dataset (from the manual tars), `folder_index` lists an image folder.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
import tarfile
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
NUM_VAL = 50_000
FOLDER_SPLITS = {"train": ("train",), "validation": ("validation", "val"), "test": ("test",)}


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A dataset: `kind="imagenet"` (tfds `imagenet2012` in `path` = data_dir, prepared from
    `manual_dir` if needed) or `kind="folder"` (`path/<class>/<image>`, or `path/<split>/<class>/...`)."""

    path: str
    kind: str = "auto"
    manual_dir: str | None = None
    name: str = "imagenet2012"

    @classmethod
    def imagenet(cls, data_dir: str | os.PathLike, manual_dir: str | os.PathLike | None = None) -> DataSource:
        return cls(os.fspath(data_dir), "imagenet", os.fspath(manual_dir) if manual_dir else None)

    @classmethod
    def folder(cls, root: str | os.PathLike) -> DataSource:
        return cls(os.fspath(root), "folder")

    def resolve(self) -> DataSource:
        """This source with `kind` decided: a folder if `path` holds class folders of images."""
        if self.kind in ("imagenet", "folder"):
            return self
        if self.kind != "auto":
            raise ValueError(f"DataSource.kind must be 'imagenet', 'folder' or 'auto', got {self.kind!r}")
        if self.manual_dir is None and os.path.isdir(self.path) and _looks_like_folder(self.path):
            return dataclasses.replace(self, kind="folder")
        return dataclasses.replace(self, kind="imagenet")


def as_source(source: Any, manual_dir: str | None = None) -> DataSource:
    """A resolved `DataSource` from a `DataSource` or a path (image folder or tfds data_dir)."""
    if isinstance(source, DataSource):
        return source.resolve()
    if isinstance(source, (str, os.PathLike)):
        return DataSource(os.fspath(source), manual_dir=os.fspath(manual_dir) if manual_dir else None).resolve()
    raise TypeError(f"a data source is a DataSource or a path, got {type(source).__name__}")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _has_images(path: str) -> bool:
    return any(e.is_file() and _is_image(e.name) for e in os.scandir(path))


def _looks_like_folder(path: str) -> bool:
    """True if `path/<class>/` or `path/<split>/<class>/` holds image files."""
    splits = {n for names in FOLDER_SPLITS.values() for n in names}
    for entry in os.scandir(path):
        if not entry.is_dir():
            continue
        if _has_images(entry.path):
            return True
        if entry.name in splits and any(e.is_dir() and _has_images(e.path) for e in os.scandir(entry.path)):
            return True
    return False


# ---------------------------------------------------------------- image folders


def _split_dir(root: str, split: str) -> str:
    for name in FOLDER_SPLITS.get(split, (split,)):
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    return root


def folder_classes(root: str) -> list[str]:
    """Class names of an image folder (sorted subfolders of `root/train`, else of `root`)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root} does not exist")
    base = _split_dir(root, "train")
    classes = sorted(e.name for e in os.scandir(base) if e.is_dir())
    if not classes:
        raise ValueError(f"image folder {base} has no class folders; expected {base}/<class>/<image>")
    return classes


def folder_index(root: str, split: str = "train") -> tuple[list[str], np.ndarray, list[str]]:
    """(image paths, int32 labels, class names) of an image folder, in sorted order.

    Uses `root/<split>` when it exists (`validation` also finds `val`), else `root` itself;
    labels are indices into the classes of the train folder. Raises on an empty folder or
    a class folder without images.
    """
    classes = folder_classes(root)
    base = _split_dir(root, split)
    label_of = {c: i for i, c in enumerate(classes)}
    paths: list[str] = []
    labels: list[int] = []
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        if entry.name not in label_of:
            raise ValueError(f"class folder {entry.path} is not a class of {_split_dir(root, 'train')}")
        files = sorted(
            os.path.join(dirpath, f) for dirpath, _, names in os.walk(entry.path) for f in names if _is_image(f)
        )
        if not files:
            raise ValueError(
                f"class folder {entry.path} has no images ({', '.join(IMAGE_EXTENSIONS)}); remove it or add images"
            )
        paths += files
        labels += [label_of[entry.name]] * len(files)
    if not paths:
        raise ValueError(f"image folder {base} has no images; expected {base}/<class>/<image>")
    return paths, np.asarray(labels, np.int32), classes


# ---------------------------------------------------------------- ImageNet via tfds


def _synsets() -> list[str]:
    import tensorflow_datasets as tfds

    path = tfds.core.tfds_path("datasets/imagenet2012/labels.txt")
    return path.read_text().split()


def check_manual_dir(manual_dir: str, splits: tuple[str, ...] = ("train", "validation")) -> None:
    """Raise a clear error if the ImageNet tars tfds needs are missing or incomplete."""
    if not os.path.isdir(manual_dir):
        raise FileNotFoundError(
            f"ImageNet manual_dir {manual_dir} does not exist; it must hold {TRAIN_TAR} and {VAL_TAR}"
        )
    wanted = {"train": TRAIN_TAR, "validation": VAL_TAR}
    for split in splits:
        path = os.path.join(manual_dir, wanted[split])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ImageNet {split} archive missing: expected {path} (from image-net.org)")
        try:
            with tarfile.open(path, "r:") as tar:
                names = tar.getnames()
        except (tarfile.TarError, EOFError) as e:
            raise ValueError(f"ImageNet archive {path} is not a readable tar ({e}); re-download it") from e
        if split == "train":
            known = set(_synsets())
            bad = [n for n in names if n[:-4] not in known or not n.endswith(".tar")]
            if bad or not names:
                raise ValueError(
                    f"{path} must contain one <synset>.tar per class (e.g. n01440764.tar); "
                    f"found {bad[:3] if bad else 'nothing'}"
                )
        else:
            # tfds pairs sorted file names with its shipped labels for the 50,000 val images:
            # only a prefix ILSVRC2012_val_00000001.. keeps every label right.
            names = sorted(os.path.basename(n) for n in names)
            expected = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, len(names) + 1)]
            if names != expected:
                first = next(e for n, e in zip(names + [""], expected) if n != e)
                raise ValueError(
                    f"{path} is incomplete or renamed: expected {first} (the val tar holds "
                    f"ILSVRC2012_val_00000001.JPEG ... ILSVRC2012_val_00050000.JPEG)"
                )
            if len(names) < NUM_VAL:
                log.warning("%s holds %d of the %d validation images", path, len(names), NUM_VAL)


def imagenet_builder(source: DataSource, split: str):
    """The tfds `imagenet2012` builder in `source.path`, prepared from `source.manual_dir` if needed."""
    from hrnet_flax.data.preprocess import tf

    tf()
    import tensorflow_datasets as tfds

    builder = tfds.builder(source.name, data_dir=source.path)
    if split not in builder.info.splits:
        if source.manual_dir is None:
            raise FileNotFoundError(
                f"{source.name} split {split!r} is not prepared in data_dir {source.path}; pass a manual_dir "
                f"holding {TRAIN_TAR} and {VAL_TAR} to prepare it (or, for an image folder, put images in "
                f"{source.path}/<class>/<image>)"
            )
        present = tuple(
            s for s, f in (("train", TRAIN_TAR), ("validation", VAL_TAR))
            if os.path.isfile(os.path.join(source.manual_dir, f))
        )
        if split in ("train", "validation") and split not in present:
            check_manual_dir(source.manual_dir, (split,))
        check_manual_dir(source.manual_dir, present or ("validation",))
        log.info("preparing %s in %s from %s", source.name, source.path, source.manual_dir)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=source.manual_dir))
        builder = tfds.builder(source.name, data_dir=source.path)
    if split not in builder.info.splits:
        raise FileNotFoundError(f"{source.name} in {source.path} has no split {split!r} (has {list(builder.info.splits)})")
    return builder


def class_names(source: Any) -> list[str]:
    """Class names of a source (ImageNet: WordNet synset ids in label order)."""
    source = as_source(source)
    if source.kind == "folder":
        return folder_classes(source.path)
    return _synsets()


def num_examples(source: Any, split: str = "train") -> int:
    """Number of examples in a split (all processes together)."""
    source = as_source(source)
    if source.kind == "folder":
        return len(folder_index(source.path, split)[0])
    return imagenet_builder(source, split).info.splits[split].num_examples


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k classes in label order, as `<WordNet id> <lemmas>`
    (e.g. `n01440764 tench, Tinca tinca`), from the package's `imagenet_classes.tsv`."""
    text = (pathlib.Path(__file__).parent / "imagenet_classes.tsv").read_text()
    return [line.replace("\t", " ", 1) for line in text.splitlines()]
