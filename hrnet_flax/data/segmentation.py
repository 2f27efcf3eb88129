"""Semantic segmentation data: image/mask folders, Cityscapes through tensorflow-datasets,
training crops and whole-image evaluation batches.

Batches are dicts of numpy arrays: `{"image": float32 [B, H, W, 3] normalised with `mean`/`std`,
"label": int32 [B, H, W], "mask": bool [B]}`, B = `batch_size_per_process`; label pixels equal to
`ignore_label` (255 by default) count for nothing, padding rows have `mask` False.

Sources (`segmentation_source`):

- a folder: `root/{train,val,test}/images/<name>.<jpg|png|...>` with `root/<split>/masks/<name>.png`
  (matched by path without extension, subfolders allowed). A palette PNG's index, or a grey PNG's
  value, is the label. `root/classes.txt` (one class name per line) gives the classes; without it
  the caller gives `num_classes`.
- `cityscapes[:<data_dir>]`: tfds `cityscapes/semantic_segmentation`, prepared from the user's
  `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` (`manual_dir`) in the random-access
  `array_record` format; its labelIds are mapped to the 19 training classes
  (`cityscapes_train_ids`).

Training (`train_dataset`) is infinite, deterministic in `seed` and resumable like the
classification folder pipeline: a global stream of examples (epoch `e` is a permutation seeded by
(seed, e)), step `s` is examples `[s*G, (s+1)*G)` of it with G the global batch, each process taking
its consecutive B; each example's augmentation is seeded by its position in the stream, so
`start_step=s` gives exactly the batches an uninterrupted run gives from step `s` on, whatever the
number of processes. Augmentation, on image and mask together: the long side resized to
`base_size` (if given), a random scale in `scale_range` (image bilinear, mask nearest), padding to
at least the crop (image 0 after normalisation, i.e. the mean colour; mask `ignore_label`), a
random crop and a random horizontal flip. Resampling uses pixel centres (like OpenCV's
INTER_LINEAR and PyTorch's `align_corners=False`, no antialiasing), the same geometry for the
image and the mask, and only the crop window is computed.

Evaluation (`eval_dataset`) gives every example once at its own size: each image padded at the
bottom/right to a multiple of 32 and to the largest in its batch (image 0 after normalisation,
label `ignore_label`, so padding never counts); unreadable images are skipped and listed in
`.unreadable`.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from hrnet_flax.data.batches import Batch, default_workers, example_batches, pad_rows, prefetch, process_share
from hrnet_flax.data.images import UnreadableImageError, load_rgb
from hrnet_flax.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from hrnet_flax.data.sources import IMAGE_EXTENSIONS

SIZE_MULTIPLE = 32  # HRNet downsamples 32x: crops and evaluation sizes are multiples of it
MASK_EXTENSION = ".png"
FOLDER_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}

CITYSCAPES_BUILDER = "cityscapes/semantic_segmentation"
CITYSCAPES_ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")
CITYSCAPES_SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
# labelId -> trainId of the 19 evaluated classes (cityscapesScripts helpers/labels.py); every other
# labelId (void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan, trailer,
# licence plate -1) is ignored.
CITYSCAPES_LABEL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

class SegmentationDataError(ValueError):
    """A dataset whose files are readable but inconsistent (unpaired, wrong size, bad labels)."""


# ------------------------------------------------------------------ decoding


def load_mask(path: str | os.PathLike | io.BytesIO, name: str | None = None) -> np.ndarray:
    """int32 [H, W] labels of a mask PNG: a palette image's indices or a greyscale image's values
    (8 or 16 bit). An RGB(A) mask is an error: its colours are not labels."""
    from PIL import Image, UnidentifiedImageError

    name = str(name if name is not None else path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                return np.asarray(image).astype(np.int32)
    except FileNotFoundError as e:
        raise UnreadableImageError(f"mask file {name} does not exist", name) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImageError(f"cannot read mask {name}: {e}", name) from e
    raise SegmentationDataError(
        f"mask {name} is a {mode} image; a mask must be a palette ('P') or greyscale ('L') PNG whose "
        "index or value is the class (colour masks must be converted to class indices first)"
    )


def check_labels(label: np.ndarray, num_classes: int, ignore_label: int, name: str) -> None:
    """Raise `SegmentationDataError` naming `name` if a label is neither a class nor `ignore_label`."""
    bad = ((label < 0) | (label >= num_classes)) & (label != ignore_label)
    if bad.any():
        values = np.unique(label[bad])
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise SegmentationDataError(
            f"mask {name} has label value(s) {shown} outside 0..{num_classes - 1} that are not the ignore "
            f"label {ignore_label} ({num_classes} classes)"
        )


def normalize(image: np.ndarray, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """float32: RGB in 0..255 (uint8 or float) -> (x / 255 - mean) / std."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    return ((np.asarray(image, np.float32) * np.float32(1 / 255) - mean) / std).astype(np.float32)


# ------------------------------------------------------------------ resampling


def _bilinear_axis(src: int, dst: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (i0, i1) and weights of i1 for output `positions` of a `src` -> `dst` resize
    (pixel centres aligned, edges clamped)."""
    x = np.clip((positions + 0.5) * (src / dst) - 0.5, 0.0, src - 1)
    i0 = np.floor(x).astype(np.intp)
    return i0, np.minimum(i0 + 1, src - 1), (x - i0).astype(np.float32)


def _nearest_axis(src: int, dst: int, positions: np.ndarray) -> np.ndarray:
    """Index of the source pixel containing each output pixel centre."""
    return np.minimum(((positions + 0.5) * (src / dst)).astype(np.intp), src - 1)


def _bilinear(image: np.ndarray, size: tuple[int, int], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """float32: rows `rows` and columns `cols` of `image` (H, W[, C]) bilinearly resized to `size`."""
    (h, w), (nh, nw) = image.shape[:2], size
    extra = (1,) * (image.ndim - 2)
    y0, y1, wy = _bilinear_axis(h, nh, rows)
    top, bottom = image[y0].astype(np.float32), image[y1].astype(np.float32)
    out = top + (bottom - top) * wy.reshape(-1, 1, *extra)
    x0, x1, wx = _bilinear_axis(w, nw, cols)
    left, right = out[:, x0], out[:, x1]
    return left + (right - left) * wx.reshape(1, -1, *extra)


def resize_bilinear(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 `image` (H, W[, C]) resized to `size` = (h, w), bilinear, pixel centres aligned, no antialiasing."""
    return _bilinear(image, size, np.arange(size[0]), np.arange(size[1]))


def resize_nearest(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`label` (H, W) resized to `size` = (h, w) by nearest neighbour (values kept exactly)."""
    h, w = label.shape[:2]
    return label[_nearest_axis(h, size[0], np.arange(size[0]))][:, _nearest_axis(w, size[1], np.arange(size[1]))]


def check_crop_size(crop_size: Sequence[int]) -> tuple[int, int]:
    """`(H, W)` of a training crop; both positive multiples of 32."""
    crop = tuple(int(c) for c in crop_size)
    if len(crop) != 2 or min(crop) <= 0 or crop[0] % SIZE_MULTIPLE or crop[1] % SIZE_MULTIPLE:
        raise ValueError(f"crop_size {tuple(crop_size)} must be (H, W), both positive multiples of {SIZE_MULTIPLE}")
    return crop  # type: ignore[return-value]


def augment(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_size: tuple[int, int],
    base_size: int | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    ignore_label: int = 255,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    flip: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One training crop: (float32 [H, W, 3] normalised, int32 [H, W]) from uint8 `image` and `label`.

    Long side to `base_size` times a scale drawn uniformly from `scale_range` (without `base_size`:
    both sides times the scale), pad bottom/right to the crop (image 0 after normalisation, label
    `ignore_label`), random crop, flip with probability 1/2. Draws from `rng`: scale, top, left, flip.
    """
    ch, cw = crop_size
    h, w = label.shape
    scale = rng.uniform(scale_range[0], scale_range[1])
    if base_size is not None:
        factor = round(base_size * scale) / max(h, w)
    else:
        factor = scale
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    top = int(rng.integers(0, max(nh, ch) - ch + 1))
    left = int(rng.integers(0, max(nw, cw) - cw + 1))
    do_flip = flip and rng.random() < 0.5
    vh, vw = min(ch, nh - top), min(cw, nw - left)  # the part of the window inside the scaled image
    rows, cols = np.arange(top, top + vh), np.arange(left, left + vw)
    out_image = np.zeros((ch, cw, 3), np.float32)
    out_label = np.full((ch, cw), ignore_label, np.int32)
    out_image[:vh, :vw] = normalize(_bilinear(image, (nh, nw), rows, cols), mean, std)
    out_label[:vh, :vw] = label[_nearest_axis(h, nh, rows)][:, _nearest_axis(w, nw, cols)]
    if do_flip:
        out_image, out_label = out_image[:, ::-1], out_label[:, ::-1]
    return np.ascontiguousarray(out_image), np.ascontiguousarray(out_label)


# ------------------------------------------------------------------ sources


class SegmentationSource:
    """A segmentation dataset with random access: what `train_dataset` and `eval_dataset` read.

    `kind`: "folder" or "cityscapes"; `num_classes` (None when unknown); `class_names` (None when
    unknown). `load(split, index, ignore_label)` -> (uint8 [H, W, 3] RGB, int32 [H, W] labels in
    0..num_classes-1 or `ignore_label`), raising `UnreadableImageError` for a file that cannot be
    decoded and `SegmentationDataError` for inconsistent data.
    """

    kind: str = ""
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None

    def num_examples(self, split: str) -> int:
        raise NotImplementedError

    def load(self, split: str, index: int, ignore_label: int = 255) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def name(self, split: str, index: int) -> str:
        """A name of example `index` for messages (a file path or a dataset id)."""
        return f"{split}[{index}]"


def _files(folder: str, what: str) -> dict[str, str]:
    """{path relative to `folder` without extension: path} of the image files under `folder`."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"segmentation folder {folder} does not exist; expected {what} files in it")
    found: dict[str, str] = {}
    for dirpath, dirnames, names in os.walk(folder):
        dirnames.sort()
        for f in sorted(names):
            if not f.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = os.path.join(dirpath, f)
            stem = os.path.splitext(os.path.relpath(path, folder))[0]
            if stem in found:
                raise SegmentationDataError(f"two {what} files with the same name: {found[stem]} and {path}")
            found[stem] = path
    return found


def read_classes(path: str) -> tuple[str, ...]:
    """Class names from a `classes.txt`: one per line (blank lines at the end ignored)."""
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f.read().rstrip("\n").split("\n")]
    if not names or not all(names):
        raise SegmentationDataError(f"{path} must hold one class name per line, without blank lines")
    return tuple(names)


class FolderSource(SegmentationSource):
    """`root/<split>/images/*` with `root/<split>/masks/*.png` (see the module doc)."""

    kind = "folder"

    def __init__(self, root: str | os.PathLike, num_classes: int | None = None):
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"segmentation folder {self.root} does not exist")
        classes_file = os.path.join(self.root, "classes.txt")
        self.class_names = read_classes(classes_file) if os.path.isfile(classes_file) else None
        if self.class_names is not None:
            if num_classes is not None and num_classes != len(self.class_names):
                raise SegmentationDataError(
                    f"num_classes={num_classes} but {classes_file} names {len(self.class_names)} classes"
                )
            num_classes = len(self.class_names)
        if num_classes is not None and num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        if self.class_names is None and num_classes is not None:
            self.class_names = tuple(f"class {i}" for i in range(num_classes))
        self._pairs: dict[str, list[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FolderSource({self.root!r}, num_classes={self.num_classes})"

    def split_dir(self, split: str) -> str:
        if split not in FOLDER_SPLITS:
            raise ValueError(f"unknown split {split!r}; a segmentation folder has train, val and test")
        return os.path.join(self.root, FOLDER_SPLITS[split])

    def pairs(self, split: str) -> list[tuple[str, str]]:
        """(image path, mask path) of every example of `split`, sorted by name."""
        with self._lock:
            if split not in self._pairs:
                self._pairs[split] = self._index(split)
            return self._pairs[split]

    def _index(self, split: str) -> list[tuple[str, str]]:
        base = self.split_dir(split)
        if not os.path.isdir(base):
            raise FileNotFoundError(f"segmentation folder {self.root} has no {split} split: {base} does not exist")
        images = _files(os.path.join(base, "images"), "image")
        masks = _files(os.path.join(base, "masks"), "mask")
        for stem, path in masks.items():
            if not path.lower().endswith(MASK_EXTENSION):
                raise SegmentationDataError(f"mask {path} is not a PNG; masks must be lossless PNGs of class indices")
            if stem not in images:
                raise SegmentationDataError(
                    f"mask {path} has no image: expected {os.path.join(base, 'images', stem)}.<jpg|png|...>"
                )
        for stem, path in images.items():
            if stem not in masks:
                raise SegmentationDataError(
                    f"image {path} has no mask: expected {os.path.join(base, 'masks', stem)}{MASK_EXTENSION}"
                )
        if not images:
            raise SegmentationDataError(f"{os.path.join(base, 'images')} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        return [(images[s], masks[s]) for s in sorted(images)]

    def num_examples(self, split: str) -> int:
        return len(self.pairs(split))

    def name(self, split: str, index: int) -> str:
        return self.pairs(split)[index][0]

    def load(self, split: str, index: int, ignore_label: int = 255) -> tuple[np.ndarray, np.ndarray]:
        image_path, mask_path = self.pairs(split)[index]
        image = load_rgb(image_path)
        label = load_mask(mask_path)
        if label.shape != image.shape[:2]:
            raise SegmentationDataError(
                f"mask {mask_path} is {label.shape[1]}x{label.shape[0]} (WxH) but its image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        if self.num_classes is not None:
            check_labels(label, self.num_classes, ignore_label, mask_path)
        return image, label


def cityscapes_train_ids(ignore_label: int = 255) -> np.ndarray:
    """int32 [256] lookup: Cityscapes labelId (as stored in `*_gtFine_labelIds.png`, 0..33; the
    licence plate's -1 reads as 255) -> trainId 0..18, everything else `ignore_label`."""
    table = np.full(256, ignore_label, np.int32)
    table[list(CITYSCAPES_LABEL_IDS)] = np.arange(len(CITYSCAPES_LABEL_IDS), dtype=np.int32)
    return table


class CityscapesSource(SegmentationSource):
    """Cityscapes fine annotations through tfds `cityscapes/semantic_segmentation` (19 classes).

    Prepared in `data_dir` (tfds' default when None) from `manual_dir` (holding
    `leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` from cityscapes-dataset.com) in
    the `array_record` format, which gives random access; features `image_id`, `image_left`,
    `segmentation_label` (labelIds). Splits: train (2975), val (500), test (1525, unlabelled:
    every pixel ignored).
    """

    kind = "cityscapes"
    num_classes = len(CITYSCAPES_CLASSES)
    class_names = CITYSCAPES_CLASSES

    def __init__(self, data_dir: str | os.PathLike | None = None, manual_dir: str | os.PathLike | None = None):
        self.data_dir = os.fspath(data_dir) if data_dir else None
        self.manual_dir = os.fspath(manual_dir) if manual_dir else None
        self._builder: Any = None
        self._records: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CityscapesSource(data_dir={self.data_dir!r}, manual_dir={self.manual_dir!r})"

    def builder(self):
        """The prepared tfds builder (prepared from `manual_dir` on first use if needed)."""
        with self._lock:
            if self._builder is None:
                self._builder = self._prepare()
            return self._builder

    def _prepare(self):
        from hrnet_flax.data.preprocess import tf

        tf()  # TensorFlow imported quietly and kept off the accelerators before tfds loads it
        import tensorflow_datasets as tfds

        builder = tfds.builder(CITYSCAPES_BUILDER, data_dir=self.data_dir, file_format="array_record")
        if builder.is_prepared():
            return builder
        where = self.data_dir or "tfds' default data_dir"
        if self.manual_dir is None:
            raise FileNotFoundError(
                f"{CITYSCAPES_BUILDER} is not prepared in {where}; pass a manual_dir holding "
                f"{' and '.join(CITYSCAPES_ZIPS)} (from https://www.cityscapes-dataset.com/downloads/) to prepare it"
            )
        for name in CITYSCAPES_ZIPS:
            path = os.path.join(self.manual_dir, name)
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"Cityscapes archive missing: expected {path} (download it from https://www.cityscapes-dataset.com/downloads/)"
                )
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=self.manual_dir))
        return tfds.builder(CITYSCAPES_BUILDER, data_dir=self.data_dir, file_format="array_record")

    def _split(self, split: str) -> str:
        if split not in CITYSCAPES_SPLITS:
            raise ValueError(f"unknown Cityscapes split {split!r}; use train, val or test")
        return CITYSCAPES_SPLITS[split]

    def records(self, split: str):
        """The random-access tfds data source of `split` (images left encoded)."""
        builder = self.builder()
        name = self._split(split)
        with self._lock:
            if name not in self._records:
                import tensorflow_datasets as tfds

                skip = tfds.decode.SkipDecoding()
                try:
                    self._records[name] = builder.as_data_source(
                        split=name, decoders={"image_left": skip, "segmentation_label": skip}
                    )
                except NotImplementedError as e:
                    raise FileNotFoundError(
                        f"{CITYSCAPES_BUILDER} in {builder.data_dir} was prepared without random access "
                        f"(array_record); prepare it again in another data_dir with this package: {e}"
                    ) from e
            return self._records[name]

    def num_examples(self, split: str) -> int:
        return self.builder().info.splits[self._split(split)].num_examples

    def _example(self, split: str, index: int) -> dict[str, Any]:
        records = self.records(split)
        with self._lock:  # one reader per split, shared by the loading threads
            return records[index]

    def name(self, split: str, index: int) -> str:
        image_id = self._example(split, index)["image_id"]
        return f"cityscapes {split}:{image_id.decode() if isinstance(image_id, bytes) else image_id}"

    def load(self, split: str, index: int, ignore_label: int = 255) -> tuple[np.ndarray, np.ndarray]:
        example = self._example(split, index)
        name = f"cityscapes {split}[{index}]"
        image = load_rgb(io.BytesIO(example["image_left"]), name)
        label_ids = load_mask(io.BytesIO(example["segmentation_label"]), name)
        return image, cityscapes_train_ids(ignore_label)[label_ids]


def segmentation_source(
    spec: str | os.PathLike | SegmentationSource,
    manual_dir: str | os.PathLike | None = None,
    *,
    num_classes: int | None = None,
) -> SegmentationSource:
    """A source from a spec: `cityscapes` or `cityscapes:<tfds data_dir>` (prepared from
    `manual_dir` if needed), a folder path (or `folder:<path>`; `num_classes` when it has no
    classes.txt), or a `SegmentationSource` (returned as it is)."""
    if isinstance(spec, SegmentationSource):
        return spec
    spec = os.fspath(spec)
    if spec == "cityscapes" or spec.startswith("cityscapes:"):
        if num_classes is not None and num_classes != CityscapesSource.num_classes:
            raise ValueError(f"num_classes={num_classes} but Cityscapes has {CityscapesSource.num_classes} classes")
        return CityscapesSource(spec.partition(":")[2] or None, manual_dir)
    if manual_dir is not None:
        raise ValueError(f"manual_dir is for Cityscapes only; {spec!r} is a folder")
    path = spec[len("folder:") :] if spec.startswith("folder:") else spec
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"segmentation dataset {spec!r}: no such folder (a folder holds <split>/images and <split>/masks; "
            "the other choice is cityscapes[:<data_dir>])"
        )
    return FolderSource(path, num_classes)


def _resolve(source: Any, ignore_label: int) -> SegmentationSource:
    source = segmentation_source(source)
    if source.num_classes is None:
        root = getattr(source, "root", source)
        raise ValueError(
            f"the number of classes of {root} is unknown: add {os.path.join(str(root), 'classes.txt')} "
            "(one class name per line) or pass num_classes to segmentation_source"
        )
    if 0 <= ignore_label < source.num_classes:
        raise ValueError(f"ignore_label {ignore_label} is a class index ({source.num_classes} classes)")
    return source


# ------------------------------------------------------------------ batches


def train_dataset(
    source: Any,
    *,
    batch_size_per_process: int,
    crop_size: Sequence[int] = (512, 1024),
    base_size: int | None = None,
    scale_range: Sequence[float] = (0.5, 2.0),
    ignore_label: int = 255,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    flip: bool = True,
    seed: int = 0,
    start_step: int = 0,
    split: str = "train",
    process_index: int | None = None,
    process_count: int | None = None,
    workers: int | None = None,
) -> Iterator[Batch]:
    """Infinite training batches of random crops (see the module doc); the first is step `start_step`."""
    if batch_size_per_process <= 0:
        raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
    crop = check_crop_size(crop_size)
    if len(scale_range) != 2 or not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"scale_range {tuple(scale_range)} must be (min, max) with 0 < min <= max")
    if base_size is not None and base_size <= 0:
        raise ValueError(f"base_size must be positive, got {base_size}")
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    source = _resolve(source, ignore_label)
    p, count = process_share(process_index, process_count)
    n = source.num_examples(split)
    if n == 0:
        raise ValueError(f"split {split!r} of {source!r} has no examples")
    lo, hi = float(scale_range[0]), float(scale_range[1])

    def example(index: int, position: int) -> dict[str, np.ndarray]:
        image, label = source.load(split, index, ignore_label)
        rng = np.random.default_rng([seed, 2, position])
        image, label = augment(
            image, label, rng, crop_size=crop, base_size=base_size, scale_range=(lo, hi),
            ignore_label=ignore_label, mean=mean, std=std, flip=flip,
        )  # fmt: skip
        return {"image": image, "label": label}

    return example_batches(
        example, n, seed=seed, start_step=start_step, batch_size=batch_size_per_process, process_index=p,
        process_count=count, workers=workers, name="segmentation-data",
    )  # fmt: skip


def _ceil_to(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple


def pad_examples(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], ignore_label: int, multiple: int = SIZE_MULTIPLE
) -> tuple[np.ndarray, np.ndarray]:
    """Stacked (float32 [N, H, W, 3], int32 [N, H, W]): each padded bottom/right to the largest size of
    the batch rounded up to `multiple` (image 0, label `ignore_label`)."""
    h = _ceil_to(max(i.shape[0] for i in images), multiple)
    w = _ceil_to(max(i.shape[1] for i in images), multiple)
    out_images = np.zeros((len(images), h, w, 3), np.float32)
    out_labels = np.full((len(images), h, w), ignore_label, np.int32)
    for k, (image, label) in enumerate(zip(images, labels)):
        out_images[k, : image.shape[0], : image.shape[1]] = image
        out_labels[k, : label.shape[0], : label.shape[1]] = label
    return out_images, out_labels


class SegmentationEvalBatches:
    """Every example of a split once, in order, at its own size, as padded+masked batches (iterable).

    Each process takes a contiguous part; `num_examples`: this process's, `total_examples`: all;
    `len()`: batches (equal on every process: the shorter parts end with fully padded batches).
    Padding rows have `mask` False and every label `ignore_label`. After iterating, `unreadable`
    lists the files that could not be decoded (skipped, not scored); inconsistent data (a mask of
    the wrong size, labels out of range) raises.
    """

    def __init__(
        self,
        source: Any,
        *,
        batch_size_per_process: int,
        split: str = "val",
        ignore_label: int = 255,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        process_index: int | None = None,
        process_count: int | None = None,
        workers: int | None = None,
    ):
        if batch_size_per_process <= 0:
            raise ValueError(f"batch_size_per_process must be positive, got {batch_size_per_process}")
        self.source = _resolve(source, ignore_label)
        self.split = split
        self.batch_size = batch_size_per_process
        self.ignore_label = ignore_label
        self.mean, self.std = tuple(mean), tuple(std)
        self.workers = workers or default_workers()
        self.process_index, self.process_count = process_share(process_index, process_count)
        self.total_examples = self.source.num_examples(split)
        if self.total_examples == 0:
            raise ValueError(f"split {split!r} of {self.source!r} has no examples")
        self._indices = np.array_split(np.arange(self.total_examples), self.process_count)[self.process_index]
        self.num_examples = len(self._indices)
        self.num_batches = math.ceil(math.ceil(self.total_examples / self.process_count) / self.batch_size)
        self.unreadable: list[str] = []

    def __len__(self) -> int:
        return self.num_batches

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray] | str:
        try:
            image, label = self.source.load(self.split, index, self.ignore_label)
        except UnreadableImageError as e:
            return e.path
        return normalize(image, self.mean, self.std), label

    def _batch(self, rows: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int]) -> Batch:
        if rows:
            images, labels = pad_examples([r[0] for r in rows], [r[1] for r in rows], self.ignore_label)
        else:
            images, labels = np.zeros((0, *shape, 3), np.float32), np.zeros((0, *shape), np.int32)
        batch = pad_rows({"image": images, "label": labels}, self.batch_size)
        batch["label"][~batch["mask"]] = self.ignore_label
        return batch

    def __iter__(self) -> Iterator[Batch]:
        self.unreadable = []
        jobs = (lambda i=int(i): self._load(i) for i in self._indices)
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        produced, shape = 0, (SIZE_MULTIPLE, SIZE_MULTIPLE)
        for result in prefetch(jobs, self.workers, ahead=self.batch_size + self.workers, name="segmentation-data"):
            if isinstance(result, str):
                self.unreadable.append(result)
                continue
            rows.append(result)
            if len(rows) == self.batch_size:
                batch = self._batch(rows, shape)
                shape, rows = batch["image"].shape[1:3], []
                produced += 1
                yield batch
        if rows:
            produced += 1
            batch = self._batch(rows, shape)
            shape = batch["image"].shape[1:3]
            yield batch
        for _ in range(produced, self.num_batches):  # a shorter part (or skipped images): pad
            yield self._batch([], shape)


def eval_dataset(source: Any, **kwargs: Any) -> SegmentationEvalBatches:
    """Finite, padded+masked whole-image evaluation batches: `SegmentationEvalBatches(source, **kwargs)`."""
    return SegmentationEvalBatches(source, **kwargs)
