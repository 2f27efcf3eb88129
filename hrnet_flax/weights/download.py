"""Download checkpoints into a cache folder, atomically, with a progress bar (urllib only).

The cache is `$HRNET_FLAX_CACHE` (default `~/.cache/hrnet_flax`). A download goes to a
`.part` file that is renamed only when the byte count matches `Content-Length`, so an
interrupted transfer never leaves a file that looks complete.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from hrnet_flax.weights.checkpoint_io import CheckpointError

CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloads go: `$HRNET_FLAX_CACHE` or `~/.cache/hrnet_flax`."""
    return Path(os.environ.get("HRNET_FLAX_CACHE") or Path.home() / ".cache" / "hrnet_flax")


def download(url: str, *, filename: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """The cached file for `url`, downloading it first if absent."""
    name = filename or os.path.basename(urllib.parse.urlparse(url).path) or "checkpoint"
    dest = cache_dir() / name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    by_hand = f"download it by hand and save it as {dest}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total is not None else None
            received = _copy(response, part, total, name, progress)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(f"cannot download {url} ({reason}); {by_hand}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if total is not None and received != total:
        part.unlink(missing_ok=True)
        raise CheckpointError(
            f"incomplete download of {url}: got {received} of {total} bytes (connection closed early); "
            f"try again or {by_hand}"
        )
    os.replace(part, dest)
    return dest


def _copy(response, part: Path, total: int | None, name: str, progress: bool) -> int:
    from tqdm.auto import tqdm

    received = 0
    with open(part, "wb") as f, tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress
    ) as bar:
        while True:
            try:
                chunk = response.read(CHUNK)
            except Exception as e:  # http.client.IncompleteRead and friends: a cut transfer
                if total is not None:
                    break  # reported below as incomplete
                raise OSError(f"transfer interrupted: {e}") from None
            if not chunk:
                break
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received
