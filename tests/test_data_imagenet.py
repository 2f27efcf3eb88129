"""ImageNet through the real tfds `imagenet2012` builder, from a tiny ImageNet in the exact tar
layout: exact eval coverage, labels, resumable training order, and bad manual directories."""

import itertools
import pathlib
import shutil

import numpy as np
import pytest
from data_support import SYNSETS, make_fake_imagenet, tfds_val_labels, write_val_tar

from hrnet_flax import data
from hrnet_flax.data.sources import DataSource, check_manual_dir

NUM_VAL, PER_CLASS = 7, 5


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    make_fake_imagenet(root / "manual", per_class=PER_CLASS, num_val=NUM_VAL)
    source = DataSource.imagenet(root / "tfds", root / "manual")
    assert data.num_examples(source, "validation") == NUM_VAL  # prepares with tfds
    prepared = DataSource.imagenet(root / "tfds")  # already prepared: no manual_dir needed
    return prepared


def _collect(batches):
    out = list(batches)
    labels = np.concatenate([b["label"][b["mask"]] for b in out])
    images = np.concatenate([b["image"][b["mask"]] for b in out])
    return out, labels, images


def test_eval_every_example_once_any_batch_size(imagenet):
    expected = tfds_val_labels(NUM_VAL)
    reference = None
    for batch_size in (1, 2, 3, 4, 8):
        ev = data.eval_dataset(imagenet, batch_size_per_process=batch_size, spec="paddle", image_size=32)
        batches, labels, images = _collect(ev)
        assert len(batches) == len(ev) == -(-NUM_VAL // batch_size)
        assert all(b["image"].shape == (batch_size, 32, 32, 3) and b["image"].dtype == np.float32 for b in batches)
        assert all(b["label"].dtype == np.int32 and b["mask"].dtype == bool for b in batches)
        assert sum(int(b["mask"].sum()) for b in batches) == NUM_VAL
        assert sorted(labels.tolist()) == sorted(expected) and labels.tolist() == (reference or labels.tolist())
        assert ev.unreadable == []
        if reference is None:
            reference, ref_images = labels.tolist(), images
        np.testing.assert_array_equal(images, ref_images)


@pytest.mark.parametrize("count", [2, 3])
def test_eval_sharded_over_processes(imagenet, count):
    labels, lengths = [], set()
    for p in range(count):
        ev = data.eval_dataset(imagenet, batch_size_per_process=2, spec="timm", image_size=32, process_index=p, process_count=count)
        batches, lab, _ = _collect(ev)
        lengths.add(len(batches))
        labels += lab.tolist()
    assert len(lengths) == 1  # every process runs the same number of batches
    assert sorted(labels) == sorted(tfds_val_labels(NUM_VAL))


def test_train_batches_resume_exactly(imagenet):
    kwargs = dict(batch_size_per_process=4, image_size=32, seed=3, shuffle_buffer=64)
    assert data.num_examples(imagenet, "train") == 3 * PER_CLASS  # an epoch: 3 batches of 4
    run = list(itertools.islice(data.train_dataset(imagenet, **kwargs), 8))
    for b in run:
        assert b["image"].shape == (4, 32, 32, 3) and b["mask"].all()
        assert set(b["label"].tolist()) <= set(range(3))
    epoch = np.concatenate([b["label"] for b in run[:3]])
    assert sorted(np.bincount(epoch, minlength=3).tolist())[-1] <= PER_CLASS
    for start in (2, 5):
        resumed = list(itertools.islice(data.train_dataset(imagenet, start_step=start, **kwargs), 8 - start))
        for a, b in zip(run[start:], resumed):
            np.testing.assert_array_equal(a["label"], b["label"])
            np.testing.assert_array_equal(a["image"], b["image"])
    other = next(data.train_dataset(imagenet, **{**kwargs, "seed": 4}))
    assert not np.array_equal(other["image"], run[0]["image"])
    # epochs are reshuffled
    assert any(not np.array_equal(run[i]["image"], run[i + 3]["image"]) for i in range(3))


def test_train_processes_read_disjoint_parts(imagenet):
    kwargs = dict(batch_size_per_process=2, image_size=32, seed=0, process_count=2)
    firsts = [next(data.train_dataset(imagenet, process_index=p, **kwargs))["image"] for p in range(2)]
    assert not np.array_equal(firsts[0], firsts[1])


def test_missing_or_incomplete_manual_dir(tmp_path, imagenet):
    with pytest.raises(FileNotFoundError, match="manual_dir .* does not exist"):
        check_manual_dir(str(tmp_path / "nowhere"))
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(FileNotFoundError, match=r"expected .*manual/ILSVRC2012_img_val.tar"):
        data.eval_dataset(DataSource.imagenet(tmp_path / "tfds", manual), batch_size_per_process=2)
    rng = np.random.default_rng(0)
    write_val_tar(manual / "ILSVRC2012_img_val.tar", [1, 2, 4], rng)  # 3 is missing: labels would shift
    with pytest.raises(ValueError, match="expected ILSVRC2012_val_00000003.JPEG"):
        data.eval_dataset(DataSource.imagenet(tmp_path / "tfds", manual), batch_size_per_process=2)
    (manual / "ILSVRC2012_img_train.tar").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="ILSVRC2012_img_train.tar is not a readable tar"):
        check_manual_dir(str(manual), ("train",))
    with pytest.raises(FileNotFoundError, match="not prepared in data_dir .*pass a manual_dir"):
        data.eval_dataset(DataSource.imagenet(tmp_path / "empty"), batch_size_per_process=2)
    shutil.copy(imagenet.path + "/../manual/ILSVRC2012_img_val.tar", manual / "ILSVRC2012_img_val.tar")
    check_manual_dir(str(manual), ("validation",))  # a complete prefix of the val set is accepted


def test_train_tar_with_unknown_class(tmp_path):
    from data_support import write_train_tar

    write_train_tar(tmp_path / "ILSVRC2012_img_train.tar", ["n99999999"], 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"one <synset>.tar per class .*n99999999.tar"):
        check_manual_dir(str(tmp_path), ("train",))


def test_class_names_are_imagenet_synsets(imagenet):
    names = data.class_names(imagenet)
    assert len(names) == 1000 and names[:3] == SYNSETS


@pytest.mark.slow  # an experiment script
def test_eval_pretrained_script_writes_table(imagenet, tmp_path, monkeypatch):
    """experiments/eval_pretrained.py end to end, with a random model standing in for the download."""
    import importlib.util

    from data_support import tiny_model

    from hrnet_flax.weights import pretrained

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "eval_pretrained.py"
    spec = importlib.util.spec_from_file_location("eval_pretrained", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    name = "hrnet_w18_ssld.paddle_in1k"  # has a second published setting (288)
    monkeypatch.setattr(pretrained, "list_pretrained", lambda pattern="*": [name])
    monkeypatch.setattr(pretrained, "load_pretrained", lambda source, **kw: tiny_model(1000))
    out = tmp_path / "table.md"
    assert script.main(["--data-dir", imagenet.path, "--out", str(out), "--size", "64", "--batch-size", "5"]) == 0
    rows = out.read_text().splitlines()[2:]
    weight = pretrained.get_pretrained(name)
    assert len(rows) == 2
    for row, published in zip(rows, (weight.top1, weight.test_top1)):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == name and cells[4] == f"{published:.2f}" and cells[7] == str(NUM_VAL)
        assert 0 <= float(cells[2]) <= float(cells[3]) <= 100
