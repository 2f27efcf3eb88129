"""Safe readers and atomic writers for checkpoint files, with no paddle or torch needed.

- PaddlePaddle `.pdparams`: a pickle of name -> numpy array, read with a restricted
  unpickler that rebuilds numpy arrays and plain containers only.
- PyTorch `.pth`/`.pt`/`.bin` (zip format): `data.pkl` read with a restricted unpickler
  that allows only `torch._utils._rebuild_tensor_v2`, storage classes and `OrderedDict`;
  tensors are rebuilt as numpy arrays from the zip's `data/` storages. Legacy (pre-1.6,
  non-zip) files need torch: read with `torch.load(weights_only=True)` when it is installed.
- `.safetensors` via `safetensors.numpy` (our own checkpoints and timm's hub files).

Every failure raises `CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

Arrays = dict[str, np.ndarray]
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a pre-1.6 torch.save file


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the requested model."""


# ------------------------------------------------------------------ restricted unpickling


def _rebuild_ndarray(module: str, name: str) -> Any:
    if name == "_reconstruct":  # numpy's own array rebuilder, whatever module numpy keeps it in
        return np.ndarray.__reduce__(np.zeros(0))[0]
    return {"ndarray": np.ndarray, "dtype": np.dtype, "scalar": _numpy_scalar}[name]


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> np.generic:
    return np.frombuffer(data or b"", dtype=dtype, count=1)[0] if data else dtype.type(0)


_NUMPY_GLOBALS = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy")
    for name in ("_reconstruct", "ndarray", "dtype", "scalar")
}


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles call (`_codecs.encode`) to rebuild bytes; only latin-1 allowed."""
    if encoding.replace("-", "").replace("_", "").lower() != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _SafeUnpickler(pickle.Unpickler):
    """Allows numpy arrays, OrderedDict and builtin containers; anything else is refused."""

    extra: dict[tuple[str, str], Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in self.extra:
            return self.extra[(module, name)]
        if (module, name) in _NUMPY_GLOBALS:
            return _rebuild_ndarray(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays and plain containers allowed)")


def _unpickle(data: bytes, unpickler: Callable[[io.BytesIO], pickle.Unpickler], path: str, what: str) -> Any:
    try:
        return unpickler(io.BytesIO(data)).load()
    except CheckpointError:
        raise
    except pickle.UnpicklingError as e:
        hint = "; save `model.state_dict()` rather than the model object" if "torch" in what.lower() else ""
        raise CheckpointError(f"{path}: not a safe {what} ({e}){hint}") from None
    except Exception as e:  # truncated or corrupt streams raise many kinds of errors
        raise CheckpointError(f"{path}: corrupt or truncated {what} ({type(e).__name__}: {e})") from None


# ------------------------------------------------------------------ PaddlePaddle


def read_pdparams(path: str | os.PathLike) -> Arrays:
    """Arrays of a Paddle `.pdparams` file (pickle protocol 2-4; split big arrays rejoined)."""
    path = str(path)
    obj = _unpickle(_read_bytes(path), lambda f: _SafeUnpickler(f, encoding="latin1"), path, "PaddlePaddle pickle")
    if obj == LEGACY_TORCH_MAGIC:
        return read_torch_legacy(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: a .pdparams file holds a dict of arrays; found {type(obj).__name__}")
    obj = dict(obj)
    obj.pop("StructuredToParameterName@@", None)
    big = obj.pop("UnpackBigParamInfor@@", None) or {}
    for name, info in big.items():  # arrays split into slices by paddle.save for protocol < 4
        parts = [np.asarray(obj.pop(p)).ravel() for p in info["slices"]]
        obj[name] = np.concatenate(parts).reshape(info["OriginShape"])
    return _check_arrays(obj, path)


# ------------------------------------------------------------------ PyTorch zip


_TORCH_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}


class _StorageType:
    def __init__(self, name: str):
        self.name = name

    @property
    def dtype(self) -> np.dtype:
        dtype = _TORCH_DTYPES[self.name]
        if dtype == "bfloat16":
            import ml_dtypes

            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(dtype)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    itemsize = storage.dtype.itemsize
    if not size:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride), writeable=False
    )
    return np.array(view)


def read_torch(path: str | os.PathLike) -> Arrays:
    """Arrays of a PyTorch zip checkpoint, without torch (state dict, possibly wrapped)."""
    path = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint (corrupt or truncated?); re-save it with torch.save, "
            "or convert it to safetensors (safetensors.torch.save_file(state_dict, 'model.safetensors'))"
        ) from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise CheckpointError(f"{path}: a zip file without data.pkl, so not a PyTorch checkpoint")
        root = pkl[0][: -len("data.pkl")]
        byteorder = zf.read(root + "byteorder").decode() if root + "byteorder" in names else "little"
        storages: dict[str, np.ndarray] = {}

        def load_storage(pid: Any) -> np.ndarray:
            if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
                raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
            key = str(pid[2])
            if key not in storages:
                dtype = pid[1].dtype.newbyteorder("<" if byteorder == "little" else ">")
                try:
                    raw = zf.read(f"{root}data/{key}")
                except (KeyError, zipfile.BadZipFile, EOFError) as e:
                    raise CheckpointError(f"{path}: storage data/{key} missing or corrupt ({e})") from None
                storages[key] = np.frombuffer(raw, dtype=dtype).astype(pid[1].dtype.newbyteorder("="))
            return storages[key]

        class TorchUnpickler(_SafeUnpickler):
            extra = {
                ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
                **{("torch", n): _StorageType(n) for n in _TORCH_DTYPES},
            }

            def persistent_load(self, pid: Any) -> Any:
                return load_storage(pid)

        try:
            data = zf.read(pkl[0])
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise CheckpointError(f"{path}: corrupt or truncated zip ({e})") from None
        obj = _unpickle(data, TorchUnpickler, path, "PyTorch checkpoint")
    return _check_arrays(_unwrap_state_dict(obj, path), path)


def read_torch_legacy(path: str) -> Arrays:
    """A pre-1.6 (non-zip) PyTorch file: only torch can read it, with `weights_only=True`."""
    try:
        import torch
    except ImportError:
        raise CheckpointError(
            f"{path}: a legacy (non-zip, pre-1.6) PyTorch file, which only torch can read safely; "
            "install torch (`pip install torch`) or convert the file to safetensors elsewhere "
            "(safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors'))"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: torch could not read this legacy checkpoint safely ({e})") from None
    state = _unwrap_state_dict(obj, path)
    return _check_arrays({k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()
                          if isinstance(v, torch.Tensor)}, path)


def _unwrap_state_dict(obj: Any, path: str) -> dict:
    """The state dict inside common wrappers (`state_dict`, `model`, `module.` prefixes)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "params"):
            if key in obj and isinstance(obj[key], dict):
                return _unwrap_state_dict(obj[key], path)
        if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
            return {k[len("module.") :]: v for k, v in obj.items()}
        return obj
    raise CheckpointError(f"{path}: expected a state dict (name -> tensor); found {type(obj).__name__}")


# ------------------------------------------------------------------ safetensors


def read_safetensors(path: str | os.PathLike) -> tuple[Arrays, dict[str, str]]:
    """Arrays and string metadata of a `.safetensors` file."""
    from safetensors import safe_open

    path = str(path)
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises SafetensorError / OSError on bad headers and sizes
        raise CheckpointError(f"{path}: not a readable safetensors file, corrupt or truncated ({e})") from None
    return arrays, dict(metadata)


def write_safetensors(path: str | os.PathLike, arrays: Arrays, metadata: dict[str, str] | None = None) -> None:
    """Write atomically: a temporary file in the same folder, renamed when complete."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=metadata)
    write_atomic(path, data)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------ dispatch


def read_any(path: str | os.PathLike) -> tuple[Arrays, dict[str, str], str]:
    """(arrays, metadata, container) of any supported file, sniffed from its first bytes."""
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if head[:4] == b"PK\x03\x04":
        return read_torch(path), {}, "torch"
    if head[:1] == b"\x80":  # a pickle: Paddle's dict of arrays (or a legacy torch file, refused)
        return read_pdparams(path), {}, "pickle"
    if len(head) == 8 and int.from_bytes(head, "little") < os.path.getsize(path):
        arrays, meta = read_safetensors(path)
        return arrays, meta, "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint (expected .pdparams pickle, PyTorch zip or safetensors; first bytes {head!r})"
    )


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _check_arrays(obj: dict, path: str) -> Arrays:
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str):
            raise CheckpointError(f"{path}: key {k!r} is not a string; not a state dict")
        if isinstance(v, (np.ndarray, np.generic)):
            out[k] = np.asarray(v)
        elif not isinstance(v, (dict, str, int, float, type(None))):
            raise CheckpointError(f"{path}: entry {k!r} is a {type(v).__name__}, not an array")
    if not out:
        raise CheckpointError(f"{path}: contains no arrays, not a checkpoint")
    return out
