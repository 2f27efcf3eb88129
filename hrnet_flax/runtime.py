"""How JAX runs here: XLA:CPU flags, the persistent compilation cache, and the speed policy.

Entry points (the CLI, experiments, tests) call `use_fast_cpu_flags()` and
`enable_compilation_cache()` before JAX starts its backend; `speed_options` decides which
speed variant of the model a run uses on its platform. Measurements: docs/performance.md.
"""

from __future__ import annotations

import os

import jax

DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "hrnet_flax", "xla")


def enable_compilation_cache(path: str | None = None) -> str:
    """Turn on JAX's persistent cache at `path` (default: $HRNET_FLAX_XLA_CACHE or ~/.cache/hrnet_flax/xla),
    so a second run skips the minute-long HRNet compiles."""
    path = path or os.environ.get("HRNET_FLAX_XLA_CACHE") or DEFAULT_DIR
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# XLA:CPU flags (other backends ignore them). Without expensive LLVM passes the W18 train-step
# compile drops 159 s -> 114 s with identical results and speed. YNNPACK for reductions only
# (convolutions then run on Eigen, YNNPACK's are 2-5x slower on HRNet's thin layers): W18 inference
# 1.6x and training 1.4-1.9x faster; results agree with float64 as closely as with XLA's default.
FAST_CPU_FLAGS = {
    "xla_llvm_disable_expensive_passes": "true",
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE",
}


def use_fast_cpu_flags() -> None:
    """Add `FAST_CPU_FLAGS` to XLA_FLAGS, keeping any the user set; nothing when $JAX_PLATFORMS
    leaves out the CPU (another jaxlib may not know these flags, and XLA aborts on unknown ones).
    Takes effect only before JAX starts its backend."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms and "cpu" not in platforms.lower().split(","):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    extra = [f"--{name}={value}" for name, value in FAST_CPU_FLAGS.items() if f"--{name}=" not in flags]
    os.environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()


def speed_options(scan: bool | None = None, *, platform: str | None = None, num_devices: int = 1) -> dict[str, bool]:
    """The `create_model` speed options for a run on `num_devices` devices of `platform`.

    `scan` (trace identical layers once, stacked parameters): as given, or when None, on a
    one-device CPU run only. On CPUs a scanned model also takes the explicit convolution gradients
    (`explicit_conv_grads`), without which XLA:CPU runs the scanned backward pass slowly: the W18
    training step then compiles 3.5x faster and runs 2.8x faster on one CPU device. On an H200
    the plain bfloat16 W18 step runs 1.17x the scanned one.

    Refuses `scan=True` on several CPU devices while the persistent compilation cache is on:
    XLA:CPU (jaxlib 0.10.2) runs such a step wrongly once it loads it from the cache (wrong losses,
    NaNs, heap corruption; all-reduces inside loops; experiments/xla_cpu_cache_collectives.py).
    """
    platform = platform or jax.default_backend()
    if scan is None:
        scan = platform == "cpu" and num_devices == 1
    if scan and platform == "cpu" and num_devices > 1 and jax.config.jax_enable_compilation_cache:
        raise ValueError(
            f"config.scan=True on a mesh of {num_devices} CPU devices with the persistent compilation cache "
            "on: XLA:CPU runs such a scanned step wrongly when it loads it from the cache. Use scan=False "
            "(or None), or turn the cache off with JAX_ENABLE_COMPILATION_CACHE=false"
        )
    return {"scan": bool(scan), "explicit_conv_grads": bool(scan) and platform == "cpu"}
