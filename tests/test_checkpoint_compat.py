"""A checkpoint written by an earlier hrnet-flax (format version 1, before the package was split into
layers) still loads, values intact, into the plain and the scanned model."""

from __future__ import annotations

import gzip
import pathlib
import shutil

import numpy as np
from flax.traverse_util import flatten_dict

from hrnet_flax import is_stacked, load_pretrained, unstack_variables

KEPT = pathlib.Path(__file__).parent / "data" / "hrnet_w18_small_3classes_v1.safetensors.gz"


def expected(path: str, index: int, shape: tuple[int, ...]) -> np.ndarray:
    """The pattern the file was written with: leaf `index` (sorted by path) holds
    ((arange % 7) + index) / 100, plus 1 for running variances."""
    values = ((np.arange(int(np.prod(shape))) % 7) + index) * 0.01 + (1.0 if path.endswith("/var") else 0.0)
    return values.reshape(shape).astype(np.float32)


def test_checkpoint_of_format_version_1_loads(tmp_path):
    path = tmp_path / "model.safetensors"
    with gzip.open(KEPT, "rb") as f, open(path, "wb") as g:
        shutil.copyfileobj(f, g)
    model, variables = load_pretrained(str(path))
    assert model.num_classes == 3 and not model.scan
    flat = flatten_dict(variables, sep="/")
    assert len(flat) == 461 and flat["params/classifier/kernel"].shape == (2048, 3)
    for i, (key, leaf) in enumerate(sorted(flat.items())):
        np.testing.assert_array_equal(np.asarray(leaf), expected(key, i, leaf.shape), err_msg=key)
    scanned_model, scanned = load_pretrained(str(path), scan=True)
    assert scanned_model.scan and is_stacked(scanned)
    again = flatten_dict(unstack_variables(scanned), sep="/")
    assert again.keys() == flat.keys()
    assert all(np.array_equal(again[k], flat[k]) for k in flat)
