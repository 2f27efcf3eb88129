"""Image-folder datasets: every image kind, unreadable files reported (not raised), exact
coverage, process-count-independent resumable training order, and bad folders."""

import itertools
import os

import numpy as np
import pytest
from data_support import encode, make_folder, photo

from hrnet_flax import data
from hrnet_flax.data.sources import DataSource, as_source, folder_index


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    good = make_folder(root)
    return root, good


def test_index_and_autodetect(folder):
    root, good = folder
    paths, labels, classes = folder_index(str(root))
    assert classes == ["cat", "dog", "fish"]
    assert len(paths) == len(good) + 2  # plus the corrupt and the truncated file; notes.txt ignored
    assert all(good[p] == l for p, l in zip(paths, labels) if p in good)
    assert as_source(str(root)).kind == "folder"
    assert data.class_names(str(root)) == classes


@pytest.mark.parametrize("batch_size,count", [(1, 1), (3, 1), (4, 1), (5, 2), (2, 3)])
def test_eval_counts_unreadable_and_covers_every_image(folder, batch_size, count):
    root, good = folder
    labels, unreadable, lengths = [], [], set()
    for p in range(count):
        ev = data.eval_dataset(str(root), batch_size_per_process=batch_size, spec="timm", image_size=32, process_index=p, process_count=count)
        batches = list(ev)
        lengths.add(len(batches))
        assert len(batches) == len(ev)
        for b in batches:
            assert b["image"].shape == (batch_size, 32, 32, 3) and np.isfinite(b["image"]).all()
            assert not b["image"][~b["mask"]].any()  # padding rows are zeros
            labels += b["label"][b["mask"]].tolist()
        unreadable += ev.unreadable
    assert len(lengths) == 1
    assert sorted(labels) == sorted(good.values())
    assert sorted(os.path.basename(u) for u in unreadable) == ["corrupt.jpg", "truncated.png"]


def test_split_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for split, classes in (("train", ["a", "b", "c"]), ("val", ["c"])):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            (tmp_path / split / c / "x.jpg").write_bytes(encode(photo(rng, 40, 40)))
    ev = data.eval_dataset(DataSource.folder(tmp_path), batch_size_per_process=2, image_size=32)
    (batch,) = list(ev)
    assert batch["label"][batch["mask"]].tolist() == [2]  # class "c" keeps its train label
    assert data.num_examples(str(tmp_path), "train") == 3


def test_train_resume_and_process_count_invariance(tmp_path):
    make_folder(tmp_path, bad=False)
    kwargs = dict(image_size=32, seed=5)
    run = list(itertools.islice(data.train_dataset(str(tmp_path), batch_size_per_process=4, **kwargs), 6))
    assert all(b["image"].shape == (4, 32, 32, 3) and b["mask"].all() for b in run)
    resumed = list(itertools.islice(data.train_dataset(str(tmp_path), batch_size_per_process=4, start_step=4, **kwargs), 2))
    for a, b in zip(run[4:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    # two processes of batch 2 give the same global batches as one process of batch 4
    halves = [
        list(itertools.islice(data.train_dataset(str(tmp_path), batch_size_per_process=2, process_index=p, process_count=2, **kwargs), 3))
        for p in range(2)
    ]
    for step in range(3):
        joined = np.concatenate([halves[0][step]["image"], halves[1][step]["image"]])
        np.testing.assert_array_equal(joined, run[step]["image"])
    # one epoch (12 images) covers every image once
    labels = np.concatenate([b["label"] for b in run[:3]])
    assert np.bincount(labels).tolist() == [4, 4, 4]


def test_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_index(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no class folders"):
        data.eval_dataset(DataSource.folder(tmp_path / "empty"), batch_size_per_process=2)
    with pytest.raises(FileNotFoundError, match="for an image folder, put images in"):
        data.eval_dataset(str(tmp_path / "empty"), batch_size_per_process=2)
    root = tmp_path / "oneempty"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "x.png").write_bytes(encode(photo(np.random.default_rng(0), 40, 40), "PNG"))
    (root / "b" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder .*oneempty/b has no images"):
        data.train_dataset(str(root), batch_size_per_process=1).__next__()
    with pytest.raises(ValueError, match="batch_size_per_process must be positive"):
        data.eval_dataset(str(root), batch_size_per_process=0)
