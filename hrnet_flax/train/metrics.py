"""Training metrics: a JSON-lines log and TensorBoard event files, written by process 0 alone."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import jax


class MetricWriter:
    """`write(step, {name: number})` appends to `<workdir>/metrics.jsonl` and `<workdir>/tensorboard`."""

    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self._jsonl = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: dict[str, Any]) -> None:
        """Numbers as they are; a list (e.g. per-class IoU) as `name/0`, `name/1`, ... (None entries left out)."""
        if not self.enabled:
            return
        values = {}
        for k, v in scalars.items():
            if isinstance(v, (list, tuple)):
                values.update({f"{k}/{i}": float(x) for i, x in enumerate(v) if x is not None})
            else:
                values[k] = float(v)
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        for name, value in values.items():
            self._tb.add_scalar(name, value, int(step))
        self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tb.close()
