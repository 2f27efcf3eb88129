"""Safe readers and atomic writers for checkpoint files, with no paddle or torch needed.

- PaddlePaddle `.pdparams`: a pickle of name -> numpy array, read with a restricted
  unpickler that rebuilds numpy arrays and plain containers only.
- PyTorch `.pth`/`.pt`/`.bin`, zip format (torch >= 1.6) and legacy format (a run of
  pickles followed by the raw storages): the object's pickle is read with a restricted
  unpickler that allows only the tensor rebuilders of `torch._utils`, storage classes and
  `OrderedDict`; tensors are rebuilt as numpy arrays from the file's storages.
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
from typing import Any, BinaryIO, Callable, NamedTuple

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


def _unpickle(data: bytes | BinaryIO, unpickler: Callable[[BinaryIO], pickle.Unpickler], path: str, what: str) -> Any:
    """One pickle of `data` (bytes, or a file read from its position to the pickle's end)."""
    try:
        return unpickler(io.BytesIO(data) if isinstance(data, bytes) else data).load()
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
    with open(path, "rb") as f:  # only the first pickle: a legacy torch file holds more after its magic number
        obj = _unpickle(f, lambda s: _SafeUnpickler(s, encoding="latin1"), path, "PaddlePaddle pickle")
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


# ------------------------------------------------------------------ PyTorch tensors (zip and legacy files)


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


def _naturals(values: Any) -> bool:
    return isinstance(values, (tuple, list)) and all(isinstance(v, int) and v >= 0 for v in values)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """A copy of the strided view of `storage` (a 1-D array) that a pickled tensor describes."""
    if not (_naturals((offset,)) and _naturals(size) and _naturals(stride) and len(size) == len(stride)):
        raise ValueError(f"invalid tensor layout: offset {offset!r}, size {size!r}, stride {stride!r}")
    size, stride = tuple(size), tuple(stride)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else -1
    if last >= len(storage) or offset > len(storage):  # as_strided does not check bounds itself
        raise ValueError(
            f"tensor of size {size}, stride {stride}, offset {offset} exceeds its storage of {len(storage)} elements"
        )
    if not size:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * storage.dtype.itemsize for s in stride), writeable=False
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None):
    """An `nn.Parameter` pickled inside a state dict: its data."""
    return data


def _torch_unpickler(load_storage: Callable[[Any], Any], rebuild_tensor: Callable[..., Any]) -> type[_SafeUnpickler]:
    """A `_SafeUnpickler` that also allows tensors (built by `rebuild_tensor`) and the storage types;
    storages come from the persistent ids through `load_storage`."""

    class TorchUnpickler(_SafeUnpickler):
        extra = {
            ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): rebuild_tensor,  # torch < 0.4: same leading arguments
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            **{("torch", n): _StorageType(n) for n in _TORCH_DTYPES},
        }

        def persistent_load(self, pid: Any) -> Any:
            if not (isinstance(pid, tuple) and len(pid) > 2 and pid[0] in ("storage", b"storage")
                    and isinstance(pid[1], _StorageType)):
                raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
            return load_storage(pid)

    return TorchUnpickler


def _storage_array(raw: bytes, dtype: np.dtype, little_endian: bool) -> np.ndarray:
    """A storage's raw bytes as a 1-D array in native byte order."""
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<" if little_endian else ">")).astype(dtype.newbyteorder("="))


# ------------------------------------------------------------------ PyTorch zip


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

        def load_storage(pid: tuple) -> np.ndarray:
            key = str(pid[2])
            if key not in storages:
                try:
                    raw = zf.read(f"{root}data/{key}")
                except (KeyError, zipfile.BadZipFile, EOFError) as e:
                    raise CheckpointError(f"{path}: storage data/{key} missing or corrupt ({e})") from None
                storages[key] = _storage_array(raw, pid[1].dtype, byteorder == "little")
            return storages[key]

        try:
            data = zf.read(pkl[0])
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise CheckpointError(f"{path}: corrupt or truncated zip ({e})") from None
        obj = _unpickle(data, _torch_unpickler(load_storage, _rebuild_tensor_v2), path, "PyTorch checkpoint")
    return _check_arrays(_unwrap_state_dict(obj, path), path)


# ------------------------------------------------------------------ PyTorch legacy (pre-1.6, non-zip)

LEGACY_TORCH_PROTOCOL = 1001
# struct's standard sizes of "=h", "=i", "=l", what every torch writes whatever the platform (storage
# elements have fixed sizes, so these never describe the data)
_LEGACY_TYPE_SIZES = {"short": 2, "int": 4, "long": 4}


class _LegacyStorage(NamedTuple):
    """Elements `start:start + count` of root storage `key`, whose data follows the object's pickle."""

    key: Any
    dtype: np.dtype
    start: int
    count: int


class _LegacyTensor(NamedTuple):
    """A tensor whose storage is not read yet: built once the storages that follow the pickle are."""

    storage: _LegacyStorage
    offset: int
    size: tuple
    stride: tuple


def _defer_tensor(storage, offset, size, stride, *_rest) -> _LegacyTensor:
    if not isinstance(storage, _LegacyStorage):
        raise pickle.UnpicklingError(f"a tensor whose storage is a {type(storage).__name__}")
    return _LegacyTensor(storage, offset, size, stride)


def _is_tar(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def _tar_error(path: str) -> CheckpointError:
    return CheckpointError(
        f"{path}: a tar archive, the PyTorch format of torch < 0.1.10, which is not supported; "
        "load it with that torch and re-save its state_dict() with a newer one"
    )


def read_torch_legacy(path: str | os.PathLike) -> Arrays:
    """Arrays of a pre-1.6 (non-zip) PyTorch file, without torch (state dict, possibly wrapped).

    The file is a run of pickles: magic number, protocol version, sys_info, the object (storages as
    persistent ids), the list of storage keys; then each storage in that order as an int64 element
    count and its little-endian bytes. The object is read with the same restricted unpickler as zip
    files; its tensors are built once the storages are read.
    """
    path = str(path)
    plain = _SafeUnpickler
    with open(path, "rb") as f:
        if _is_tar(f.read(512)):
            raise _tar_error(path)
        f.seek(0)
        magic = _unpickle(f, plain, path, "legacy PyTorch header")
        if magic != LEGACY_TORCH_MAGIC:
            raise CheckpointError(f"{path}: not a legacy PyTorch file (its first pickle is not torch's magic number)")
        protocol = _unpickle(f, plain, path, "legacy PyTorch header")
        if protocol != LEGACY_TORCH_PROTOCOL:
            raise CheckpointError(
                f"{path}: legacy PyTorch protocol version {protocol!r}; only {LEGACY_TORCH_PROTOCOL} is known"
            )
        _check_sys_info(_unpickle(f, plain, path, "legacy PyTorch header"), path)

        roots: dict[Any, tuple[np.dtype, int]] = {}  # root storage key -> (dtype, element count)

        def load_storage(pid: tuple) -> _LegacyStorage:
            if len(pid) != 6:
                raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
            _, storage_type, key, _location, numel, view = pid
            dtype = storage_type.dtype
            if not (isinstance(numel, int) and numel >= 0) or roots.setdefault(key, (dtype, numel)) != (dtype, numel):
                raise pickle.UnpicklingError(f"storage {key!r} has conflicting or invalid types and sizes")
            if view is None:
                return _LegacyStorage(key, dtype, 0, numel)
            if not (isinstance(view, tuple) and len(view) == 3 and _naturals(view[1:])
                    and view[1] + view[2] <= numel):
                raise pickle.UnpicklingError(f"invalid view {view!r} of storage {key!r} with {numel} elements")
            return _LegacyStorage(key, dtype, view[1], view[2])

        unpickler = _torch_unpickler(load_storage, _defer_tensor)
        obj = _unpickle(f, lambda s: unpickler(s, encoding="utf-8"), path, "PyTorch checkpoint")
        keys = _unpickle(f, plain, path, "legacy PyTorch storage list")
        if not _same_keys(keys, roots):
            raise CheckpointError(f"{path}: the storage list does not match the storages the object uses (corrupt?)")
        storages = {key: _read_legacy_storage(f, key, *roots[key], path) for key in keys}

    state = _unwrap_state_dict(obj, path)
    out = {}
    for name, value in state.items():
        if isinstance(value, _LegacyTensor):
            s = value.storage
            try:
                value = _rebuild_tensor_v2(storages[s.key][s.start : s.start + s.count], *value[1:])
            except ValueError as e:
                raise CheckpointError(f"{path}: tensor {name!r}: {e}") from None
        out[name] = value
    return _check_arrays(out, path)


def _same_keys(keys: Any, roots: dict) -> bool:
    """Whether the pickled storage list names each storage the object uses exactly once."""
    try:
        return isinstance(keys, list) and len(keys) == len(roots) and set(keys) == set(roots)
    except TypeError:  # an unhashable entry
        return False


def _check_sys_info(info: Any, path: str) -> None:
    """Only files written on little-endian machines with torch's usual type sizes can be read."""
    sizes = info.get("type_sizes") if isinstance(info, dict) else None
    if not isinstance(info, dict) or info.get("little_endian") is not True or sizes != _LEGACY_TYPE_SIZES:
        raise CheckpointError(
            f"{path}: legacy PyTorch file written with sys_info {info!r}; only little-endian files with type sizes "
            f"{_LEGACY_TYPE_SIZES} can be read"
        )


def _read_legacy_storage(f: BinaryIO, key: Any, dtype: np.dtype, numel: int, path: str) -> np.ndarray:
    head = f.read(8)
    count = int.from_bytes(head, "little", signed=True) if len(head) == 8 else None
    if count != numel:
        raise CheckpointError(
            f"{path}: storage {key!r} should hold {numel} elements; the file "
            + ("ends before it (truncated?)" if count is None else f"says {count} (corrupt?)")
        )
    nbytes = numel * dtype.itemsize
    left = os.fstat(f.fileno()).st_size - f.tell()
    if nbytes > left:
        raise CheckpointError(f"{path}: storage {key!r} needs {nbytes} bytes but only {left} remain (truncated?)")
    return _storage_array(f.read(nbytes), dtype, little_endian=True)


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
        head = f.read(512)
    if not head:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    if head[:4] == b"PK\x03\x04":
        return read_torch(path), {}, "torch"
    if head[:1] == b"\x80":  # a pickle: Paddle's dict of arrays, or a legacy torch file
        return read_pdparams(path), {}, "pickle"
    if _is_tar(head):
        raise _tar_error(path)
    if len(head) >= 8 and int.from_bytes(head[:8], "little") < os.path.getsize(path):
        arrays, meta = read_safetensors(path)
        return arrays, meta, "safetensors"
    raise CheckpointError(
        f"{path}: not a checkpoint (expected .pdparams pickle, PyTorch zip or safetensors; first bytes {head[:8]!r})"
    )


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
