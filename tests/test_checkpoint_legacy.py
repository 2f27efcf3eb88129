"""Pre-1.6 (legacy, non-zip) PyTorch files read without torch, exactly, by the restricted unpickler."""

from __future__ import annotations

import collections
import os
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from hrnet_flax.weights.checkpoint_io import LEGACY_TORCH_MAGIC, CheckpointError, read_any, read_torch_legacy

SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def tensors() -> dict[str, torch.Tensor]:
    """Every dtype a state dict holds, non-contiguous tensors and views sharing one storage."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g)
    return {
        "conv.weight": base,
        "rows": base[1:],  # a view at a storage offset
        "transposed": base.t(),  # non-contiguous, same storage
        "strided": base[:, ::2],
        "f64": torch.randn(5, generator=g, dtype=torch.float64),
        "f16": torch.randn(2, 3, generator=g).half(),
        "bf16": torch.randn(7, generator=g).bfloat16(),
        "bn.num_batches_tracked": torch.tensor(12345678901),  # int64 scalar
        "index": torch.arange(-3, 6).reshape(3, 3),
        "empty": torch.zeros(0, 4),
    }


def assert_same(ours: dict[str, np.ndarray], ref: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(ref)
    for name, t in ref.items():
        t = t.detach()
        bits = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()  # exact bit patterns
        got = ours[name].view(np.int16) if t.dtype == torch.bfloat16 else ours[name]
        assert got.dtype == bits.dtype and got.shape == bits.shape, (name, got.dtype, got.shape)
        np.testing.assert_array_equal(got, bits, err_msg=name)


@pytest.mark.parametrize("wrapper", ["plain", "nested", "ordered", "parameters"])
def test_legacy_state_dicts_match_torch(tmp_path, wrapper):
    state = tensors()
    if wrapper == "parameters":  # nn.Parameter values (a state_dict(keep_vars=True))
        state = {k: torch.nn.Parameter(v, requires_grad=v.is_floating_point()) for k, v in state.items()}
    obj = {
        "plain": state,
        "nested": {"state_dict": state, "meta": {"epoch": 3, "note": "x"}},
        "ordered": collections.OrderedDict(state),
        "parameters": state,
    }[wrapper]
    path = tmp_path / "legacy.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:2] == b"\x80\x02" and not path.read_bytes().startswith(b"PK")
    assert_same(read_torch_legacy(path), state)
    arrays, _, _ = read_any(path)
    assert_same(arrays, state)


def test_views_share_one_storage_in_the_file(tmp_path):
    """The writer stores `base`, `base[1:]` and `base.t()` once; each is rebuilt from that storage."""
    base = torch.arange(1000, dtype=torch.float32).reshape(20, 50)
    state = {"a": base, "b": base[1:], "c": base.t(), "d": base[2, 1:3]}
    path = tmp_path / "views.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    assert 4000 < path.stat().st_size < 5000  # one storage of 4000 bytes, not four
    assert_same(read_torch_legacy(path), state)


# ------------------------------------------------------------------ hand-written legacy files


class Storage:
    """Stands for a storage: pickled as torch's persistent id (root key, element count, view)."""

    def __init__(self, key: str, storage_type: type, numel: int, view: tuple | None = None):
        self.key, self.storage_type, self.numel, self.view = key, storage_type, numel, view


class Tensor:
    """Pickles as a call of a torch tensor rebuilder on a `Storage`."""

    def __init__(self, rebuild, *args):
        self.rebuild, self.args = rebuild, args

    def __reduce__(self):
        return self.rebuild, self.args


def write_legacy(path, obj, storages: dict[str, np.ndarray], sys_info=SYS_INFO, counts=None) -> None:
    """Torch's legacy layout: magic, protocol, sys_info, the object, storage keys, storages."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, Storage):
                return ("storage", o.storage_type, o.key, "cuda:0", o.numel, o.view)
            return None

    with open(path, "wb") as f:
        for header in (LEGACY_TORCH_MAGIC, 1001, sys_info):
            pickle.dump(header, f, protocol=2)
        Pickler(f, protocol=2).dump(obj)
        pickle.dump(sorted(storages), f, protocol=2)
        for key in sorted(storages):
            data = storages[key]
            f.write(np.int64((counts or {}).get(key, data.size)).tobytes())
            f.write(data.astype(data.dtype.newbyteorder("<")).tobytes())


def test_storage_views_and_the_old_rebuilder_match_torch(tmp_path):
    """Files of torch < 1.0 may hold storage views (view_metadata) and use `_rebuild_tensor`."""
    root = np.arange(10, dtype=np.float32) * 1.5
    ints = np.array([7, -1, 2**40], dtype=np.int64)
    view = Storage("root", torch.FloatStorage, 10, ("view1", 2, 6))  # elements 2..7 of root
    obj = {
        "whole": Tensor(torch._utils._rebuild_tensor_v2, Storage("root", torch.FloatStorage, 10), 0, (2, 5), (5, 1),
                        False, collections.OrderedDict()),
        "view": Tensor(torch._utils._rebuild_tensor_v2, view, 1, (2, 2), (1, 2), False, collections.OrderedDict()),
        "old": Tensor(torch._utils._rebuild_tensor, Storage("ints", torch.LongStorage, 3), 1, (2,), (1,)),
    }
    path = tmp_path / "old.pth"
    write_legacy(path, obj, {"root": root, "ints": ints})
    expected = {"whole": root.reshape(2, 5), "view": np.array([[3, 5], [4, 6]], np.float32) * 1.5, "old": ints[1:]}
    ours = read_torch_legacy(path)
    loaded = torch.load(path, map_location="cpu", weights_only=False)  # our own file; torch confirms it is a valid legacy file
    for name, value in expected.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value, err_msg=name)
        assert ours[name].dtype == value.dtype
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


def test_reading_does_not_import_torch(tmp_path):
    state = tensors()
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=False)
    out = tmp_path / "arrays.npz"
    code = (
        "import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ImportError
        "import numpy as np\n"
        "from hrnet_flax.weights.checkpoint_io import read_any\n"
        f"arrays, _, _ = read_any({str(path)!r})\n"
        "assert sys.modules['torch'] is None\n"
        "np.savez(sys.argv[1], **{k: v.view(np.int16) if v.dtype.name == 'bfloat16' else v for k, v in arrays.items()})\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with np.load(out) as arrays:
        got = dict(arrays)
    assert sorted(got) == sorted(state)
    for name, t in state.items():
        ref = t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape, name
        np.testing.assert_array_equal(got[name], ref, err_msg=name)


# ------------------------------------------------------------------ safety


class Thing:
    """Any class of the saving program: refused, whatever it holds."""

    def __init__(self):
        self.value = 1


class RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize(
    "payload,refused",
    [
        (lambda marker: RunsCommand(marker), f"{os.system.__module__}.system"),
        (lambda marker: Thing(), f"{__name__}.Thing"),
        (lambda marker: torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear"),
    ],
    ids=["os.system", "test-class", "whole-module"],
)
def test_disallowed_global_is_refused_and_never_run(tmp_path, payload, refused):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.ones(2), "x": payload(marker)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as error:
        read_any(path)
    message = str(error.value)
    assert str(path) in message and f"refusing to load {refused}" in message and "state_dict" in message
    assert not marker.exists()


def test_crafted_rebuilder_call_is_refused(tmp_path):
    """A pickle stream calling os.system where a tensor rebuilder would be: refused before any call."""
    marker = tmp_path / "executed"
    path = tmp_path / "crafted.pth"
    write_legacy(path, {"w": Tensor(os.system, f"touch {marker}")}, {})
    with pytest.raises(CheckpointError, match=rf"{path}: .*refusing to load {os.system.__module__}\.system"):
        read_torch_legacy(path)
    assert not marker.exists()


# ------------------------------------------------------------------ bad files


def good_tensor(numel: int = 4):
    return Tensor(torch._utils._rebuild_tensor_v2, Storage("0", torch.FloatStorage, numel), 0, (numel,), (1,),
                  False, collections.OrderedDict())


@pytest.mark.parametrize(
    "case,match",
    [
        ("big-endian", r"sys_info .*little_endian': False.*only little-endian"),
        ("type-sizes", r"sys_info .*'long': 8.*only little-endian files with type sizes"),
        ("count", r"storage '0' should hold 4 elements; the file says 5"),
        ("truncated", r"storage '0' needs 16 bytes but only 10 remain \(truncated\?\)"),
        ("outside", r"tensor 'w': tensor of size \(3, 2\), stride \(2, 1\), offset 0 exceeds its storage of 4"),
        ("key-list", r"the storage list does not match"),
    ],
)
def test_bad_legacy_files_raise_clear_errors(tmp_path, case, match):
    path = tmp_path / f"{case}.pth"
    data = {"0": np.arange(4, dtype=np.float32)}
    obj = {"w": good_tensor()}
    if case == "big-endian":
        write_legacy(path, obj, data, sys_info={**SYS_INFO, "little_endian": False})
    elif case == "type-sizes":
        write_legacy(path, obj, data, sys_info={**SYS_INFO, "type_sizes": {"short": 2, "int": 4, "long": 8}})
    elif case == "count":
        write_legacy(path, obj, data, counts={"0": 5})
    elif case == "truncated":
        write_legacy(path, obj, data)
        path.write_bytes(path.read_bytes()[:-6])
    elif case == "outside":
        obj = {"w": Tensor(torch._utils._rebuild_tensor_v2, Storage("0", torch.FloatStorage, 4), 0, (3, 2), (2, 1),
                           False, collections.OrderedDict())}
        write_legacy(path, obj, data)
    elif case == "key-list":
        write_legacy(path, obj, {**data, "1": np.zeros(2, np.float32)})
    with pytest.raises(CheckpointError, match=match) as error:
        read_any(path)
    assert str(path) in str(error.value)


def test_tar_format_of_torch_before_0_1_10_is_refused(tmp_path):
    path = tmp_path / "ancient.pth"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("storages", "tensors", "pickle"):
            (tmp_path / name).write_bytes(pickle.dumps(0, protocol=2))
            tar.add(tmp_path / name, arcname=name)
    for read in (read_any, read_torch_legacy):
        with pytest.raises(CheckpointError, match=rf"{path}: a tar archive, the PyTorch format of torch < 0\.1\.10"):
            read(path)
