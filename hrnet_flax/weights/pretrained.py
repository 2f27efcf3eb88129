"""Published HRNet weights as data, and `load_pretrained` (file, URL or registered name).

Every entry records where the weights live, the accuracy their authors report on
ImageNet-1k val, and the evaluation preprocessing that accuracy was measured with.
Importing this module is cheap (no jax); loading imports the converters lazily.

Naming: `<arch-like name>.<tag>`, timm style. PaddleClas files are `hrnet_w*_c.paddle_in1k`
(arch `hrnet_w*_c`, head convs without bias); PaddleClas SSLD files are
`hrnet_w{18,48}_c_ssld.paddle_in1k` with arch `hrnet_w{18,48}_ssld` (the same network as
`hrnet_w*_c`; the arch name says the weights are distilled and matches timm's port, which is
registered as `hrnet_w{18,48}_ssld.paddle_in1k` with timm's own evaluation settings).
`*.ms_in1k` are the official Microsoft weights as timm republished them (safetensors).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any

from hrnet_flax.data.preprocess import PRESETS, EvalSpec
from hrnet_flax.weights.checkpoint_io import CheckpointError

PADDLE_BASE = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/legendary_models/"
TIMM_BASE = "https://huggingface.co/timm/{name}/resolve/main/model.safetensors"


@dataclasses.dataclass(frozen=True)
class PretrainedWeight:
    """One published checkpoint. `top1`/`top5` are the reported ImageNet-1k val accuracies (%)
    under `eval`; `test_eval`/`test_top1` is a second reported setting (timm SSLD at 288)."""

    name: str
    arch: str
    url: str
    top1: float
    top5: float | None
    eval: EvalSpec
    layout: str  # "paddle" or "timm" (timm/official state dict)
    source: str  # who published it
    test_eval: EvalSpec | None = None
    test_top1: float | None = None

    @property
    def filename(self) -> str:
        """File name in the download cache (unique per registered name)."""
        ext = self.url.rsplit(".", 1)[-1]
        return f"{self.name}.{ext}"


_PADDLE_TOP = {  # width: (top1, top5) from PaddleClas
    18: (76.92, 93.39),
    30: (78.04, 94.02),
    32: (78.28, 94.24),
    40: (78.77, 94.47),
    44: (79.00, 94.51),
    48: (78.95, 94.42),
    64: (79.30, 94.61),
}
_MS_TOP1 = {  # timm's measurement of the official Microsoft weights
    "hrnet_w18_small": 72.34,
    "hrnet_w18_small_v2": 75.09,
    "hrnet_w18": 76.77,
    "hrnet_w30": 78.20,
    "hrnet_w32": 78.45,
    "hrnet_w40": 78.93,
    "hrnet_w44": 78.89,
    "hrnet_w48": 79.33,
    "hrnet_w64": 79.46,
}


def _paddle(name: str, arch: str, file: str, top1: float, top5: float) -> PretrainedWeight:
    return PretrainedWeight(name, arch, PADDLE_BASE + file, top1, top5, PRESETS["paddle"], "paddle", "PaddleClas")


def _timm(name: str, top1: float, source: str, **kwargs: Any) -> PretrainedWeight:
    eval_kwargs = {k: kwargs.pop(k) for k in ("crop_pct", "interpolation") if k in kwargs}
    ev = dataclasses.replace(PRESETS["timm"], **eval_kwargs)
    arch = name.split(".", 1)[0]
    return PretrainedWeight(name, arch, TIMM_BASE.format(name=name), top1, None, ev, "timm", source, **kwargs)


def _build() -> dict[str, PretrainedWeight]:
    weights = [
        *(
            _paddle(f"hrnet_w{w}_c.paddle_in1k", f"hrnet_w{w}_c", f"HRNet_W{w}_C_pretrained.pdparams", *top)
            for w, top in _PADDLE_TOP.items()
        ),
        _paddle("hrnet_w18_c_ssld.paddle_in1k", "hrnet_w18_ssld", "HRNet_W18_C_ssld_pretrained.pdparams", 81.16, 95.80),
        _paddle("hrnet_w48_c_ssld.paddle_in1k", "hrnet_w48_ssld", "HRNet_W48_C_ssld_pretrained.pdparams", 83.63, 96.82),
        _paddle(
            "se_hrnet_w64_c_ssld.paddle_in1k", "se_hrnet_w64_c", "SE_HRNet_W64_C_ssld_pretrained.pdparams", 84.75, 97.26
        ),
        *(_timm(f"{arch}.ms_in1k", top1, "Microsoft (official), via timm") for arch, top1 in _MS_TOP1.items()),
        _timm("hrnet_w18.ms_aug_in1k", 78.11, "Microsoft (official, augmented), via timm", crop_pct=0.95),
        _timm("hrnet_w18_small.gluon_in1k", 73.93, "GluonCV, via timm", interpolation="bicubic"),
        _timm("hrnet_w18_small_v2.gluon_in1k", 78.20, "GluonCV, via timm", interpolation="bicubic"),
        *(
            _timm(
                f"hrnet_w{w}_ssld.paddle_in1k",
                top1,
                "PaddleClas SSLD, via timm",
                crop_pct=0.95,
                test_eval=EvalSpec(size=288, crop_pct=1.0),
                test_top1=test_top1,
            )
            for w, top1, test_top1 in ((18, 81.11, 82.05), (48, 83.66, 84.48))
        ),
    ]
    return {w.name: w for w in weights}


PRETRAINED: dict[str, PretrainedWeight] = _build()


def list_pretrained(pattern: str = "*") -> list[str]:
    """Registered weight names, optionally filtered by an fnmatch pattern."""
    import fnmatch

    return sorted(n for n in PRETRAINED if fnmatch.fnmatch(n, pattern.lower()))


def get_pretrained(name: str) -> PretrainedWeight:
    """The registry entry for `name`; an unknown name raises `CheckpointError` listing close ones.

    A bare arch name (e.g. `hrnet_w18`) picks its first registered weight.
    """
    key = name.strip().lower()
    if key in PRETRAINED:
        return PRETRAINED[key]
    prefixed = [n for n in sorted(PRETRAINED) if n.split(".", 1)[0] == key]
    if prefixed:
        return PRETRAINED[prefixed[0]]
    close = difflib.get_close_matches(key, PRETRAINED, n=6, cutoff=0.5)
    hint = f"; close names: {', '.join(close)}" if close else ""
    raise CheckpointError(f"unknown pretrained weight {name!r}{hint} (all: {', '.join(list_pretrained())})")


def load_pretrained(source: str, *, arch: str | None = None, num_classes: int | None = None, **model_kwargs: Any):
    """Load weights into a Flax HRNet: returns `(model, variables)`.

    `source` is a local file (PaddleClas `.pdparams`, current or 2.0 names; timm/official or
    mmpretrain `.safetensors`/`.pth`/`.pt`/`.bin`; our own `save_checkpoint` file), an http(s)
    URL (downloaded into `download.cache_dir()`), or a registered name (see `list_pretrained`;
    a bare arch such as `hrnet_w18` takes its first registered weight).
    Format and arch are detected from the keys and shapes; a given `arch` must match.
    With `num_classes` different from the checkpoint's, the classifier is re-initialised
    (a warning names both counts); `num_classes=0` drops it. `model_kwargs` go to
    `create_model` (e.g. `dtype`, `axis_name`).
    """
    from hrnet_flax.weights.convert import load_checkpoint_file
    from hrnet_flax.weights.download import download

    path, registered_arch = source, None
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        path = download(source)
    elif isinstance(source, str) and not _looks_like_path(source):
        weight = get_pretrained(source)
        path, registered_arch = download(weight.url, filename=weight.filename), weight.arch
    return load_checkpoint_file(
        path, arch=arch or registered_arch, num_classes=num_classes, model_kwargs=model_kwargs
    )


def _looks_like_path(source: str) -> bool:
    return os.path.exists(source) or os.sep in source or source.endswith(
        (".pdparams", ".safetensors", ".pth", ".pt", ".bin", ".msgpack")
    )


def default_spec(source: str) -> Any:
    """The evaluation preprocessing of a weight source: a registered weight's own; for a file or
    URL the `paddle` preset for `.pdparams`, else `timm`."""
    if os.path.exists(source) or "://" in source:
        return "paddle" if source.endswith(".pdparams") else "timm"
    try:
        return get_pretrained(source)
    except CheckpointError:  # not a registered name: the loader will say so
        return "timm"


def convert(
    src: str, dst: str | os.PathLike, *, arch: str | None = None, num_classes: int | None = None, to: str = "flax"
) -> str:
    """Load `src` (file, URL or registered name) and write it to `dst` as `to` (flax or timm);
    returns the arch written."""
    from hrnet_flax.models.registry import canonical_name
    from hrnet_flax.weights.convert import arch_name, export_timm, save_checkpoint

    if to not in ("flax", "timm"):
        raise ValueError(f"unknown output format {to!r}; use flax or timm")
    model, variables = load_pretrained(src, arch=arch, num_classes=num_classes)
    if arch is not None:
        name = canonical_name(arch)
    elif str(src).lower() in PRETRAINED:
        name = get_pretrained(str(src)).arch
    else:
        name = arch_name(model.config)
    if to == "timm":
        export_timm(dst, variables, arch=name)
    else:
        save_checkpoint(dst, variables, arch=name, num_classes=model.num_classes, source=str(src))
    return name
