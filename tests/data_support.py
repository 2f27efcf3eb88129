"""Test helpers for the input pipeline: image files of every kind, a tiny ImageNet in the real
tar layout, an image folder, and one small random model shared by the test files."""

from __future__ import annotations

import functools
import io
import os
import pathlib
import tarfile

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
SYNSETS = ["n01440764", "n01443537", "n01484850"]  # real ImageNet classes (tfds checks them)


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth-plus-noise uint8 RGB image (resampling differences stay small, shifts show)."""
    base = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), np.int64)
    return np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "JPEG", mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_train_tar(path: pathlib.Path, synsets: list[str], per_class: int, rng: np.random.Generator) -> None:
    """ILSVRC2012_img_train.tar: one `<synset>.tar` per class of `<synset>_<k>.JPEG` files."""
    with tarfile.open(path, "w") as outer:
        for s in synsets:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as inner:
                for k in range(per_class):
                    h, w = rng.integers(40, 90, 2)
                    _add(inner, f"{s}_{10000 + k}.JPEG", encode(photo(rng, int(h), int(w))))
            _add(outer, f"{s}.tar", buf.getvalue())


def write_val_tar(path: pathlib.Path, numbers: list[int], rng: np.random.Generator) -> None:
    """ILSVRC2012_img_val.tar: flat `ILSVRC2012_val_<8 digits>.JPEG` files."""
    with tarfile.open(path, "w") as tar:
        for i in numbers:
            h, w = rng.integers(40, 90, 2)
            _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", encode(photo(rng, int(h), int(w))))


def make_fake_imagenet(manual: pathlib.Path, per_class: int = 5, num_val: int = 7) -> None:
    rng = np.random.default_rng(0)
    manual.mkdir(parents=True, exist_ok=True)
    write_train_tar(manual / "ILSVRC2012_img_train.tar", SYNSETS, per_class, rng)
    write_val_tar(manual / "ILSVRC2012_img_val.tar", list(range(1, num_val + 1)), rng)


def tfds_val_labels(n: int) -> list[int]:
    """Labels of ILSVRC2012_val_00000001..n from the files tfds ships (independent of our code)."""
    import tensorflow_datasets as tfds

    synsets = tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split()
    val = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt").read_text().split()
    return [synsets.index(s) for s in val[:n]]


def make_folder(root: pathlib.Path, *, bad: bool = True) -> dict[str, int]:
    """An image folder of 3 classes with every image kind; returns {path: label} of the good images.

    With `bad`, also a corrupt JPEG and a truncated PNG (which must be reported, not scored).
    """
    rng = np.random.default_rng(1)
    kinds = [("JPEG", None, ".jpg"), ("JPEG", "L", ".jpeg"), ("JPEG", "CMYK", ".JPG"), ("PNG", "RGBA", ".png"), ("PNG", "P", ".png"), ("PNG", None, ".PNG")]
    good: dict[str, int] = {}
    for label, name in enumerate(["cat", "dog", "fish"]):
        d = root / name
        d.mkdir(parents=True)
        for k, (fmt, mode, ext) in enumerate(kinds[label : label + 4]):
            h, w = rng.integers(40, 80, 2)
            path = d / f"img{k}{ext}"
            array = photo(rng, int(h), int(w))
            if mode == "RGBA":
                array = np.dstack([array, rng.integers(0, 256, array.shape[:2], np.uint8)])
            path.write_bytes(encode(array, fmt, mode))
            good[str(path)] = label
        (d / "notes.txt").write_text("not an image")
    if bad:
        (root / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        png = encode(photo(rng, 50, 50), "PNG")
        (root / "fish" / "truncated.png").write_bytes(png[: len(png) // 2])
    return good


@functools.lru_cache(maxsize=None)
def tiny_model(num_classes: int, size: int = 64):
    """hrnet_w18_small with random weights (shared by the tests of one pytest process)."""
    import jax
    import jax.numpy as jnp

    from hrnet_flax import create_model

    model = create_model("hrnet_w18_small", num_classes=num_classes)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, size, size, 3)))
    return model, variables


def cpu_env(devices: int) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def smooth_images(root, sizes: dict, seed: int, block: int) -> list:
    """Smooth random RGB images (upscaled noise of `block`-pixel cells) named and sized by
    `sizes` ({file name: (H, W)}; the extension picks PNG or JPEG), written in `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for name, (h, w) in sizes.items():
        base = rng.integers(0, 256, (h // block + 1, w // block + 1, 3)).astype(np.uint8)
        Image.fromarray(base).resize((w, h), Image.BILINEAR).save(root / name)
        paths.append(root / name)
    return paths


def run_cli(*argv) -> tuple[int, str, str]:
    """`hrnet-flax ARGV` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from hrnet_flax import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()
