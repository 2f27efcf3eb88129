"""The quick-start notebook runs from top to bottom and shows what its text says: the weights'
round trip and timm export, the trained demos' accuracy, mIoU and PCK, their figures and the
feature maps."""

import re

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT, run_fast_xla_flags

pytestmark = pytest.mark.slow


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's `tempfile.mkdtemp()` (about 210 MB of checkpoints) lands here
    monkeypatch.setenv("XLA_FLAGS", run_fast_xla_flags())  # the kernel trains the three demos: it runs more than it compiles
    nb = nbformat.read(ROOT / "experiments" / "quickstart.ipynb", as_version=4)  # executed in memory only
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, tmp_path / "quickstart.executed.ipynb")  # to look at when this fails; the committed file is untouched

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    errors = [f"{out['ename']}: {out['evalue']}" for out in outputs if out.get("output_type") == "error"]
    assert not errors, errors
    text = "\n".join(out.get("text", "") for out in outputs)

    assert "round trip identical: True" in text
    assert "timm keys" in text

    # The full demo config: 3 epochs of 64 images on the 1437 training digits, 359 validation digits.
    summary = re.search(r"hrnet_w18_small on digits: (\d+) steps .*validation top-1 ([\d.]+)%.*\((\d+) images\)", text)
    assert summary, text
    steps, top1, count = int(summary[1]), float(summary[2]), int(summary[3])
    assert (steps, count) == (66, 359)
    assert top1 >= 80.0, summary[0]

    # The segmentation demo: 300 steps, the 256 validation canvases, its >= 60% mIoU (a per-colour
    # predictor scores 11-14%).
    seg = re.search(r"hrnetv2_w18_small_seg on canvases: (\d+) steps .*validation mIoU ([\d.]+)%.*\((\d+) images\)", text)
    assert seg, text
    assert (int(seg[1]), int(seg[3])) == (300, 256)
    assert float(seg[2]) >= 60.0, seg[0]
    assert "IoU per class: background" in text

    # The pose demo: the 256 validation figures, its >= 80% PCK@0.1 (the mean pose scores about 25%).
    pose = re.search(r"pose_hrnet_w18_small on figures: (\d+) steps .*validation PCK@0.1 ([\d.]+)%.*\((\d+) images\)", text)
    assert pose, text
    assert int(pose[3]) == 256 and float(pose[2]) >= 80.0, pose[0]
    assert "mean joint error on these eight" in text

    # Training curve, digit grid (+ a row of mistakes when there are any), label maps, skeletons,
    # photos with top-5, feature maps.
    figures = sum("image/png" in out.get("data", {}) for out in outputs)
    assert figures >= 6, figures
    assert "using the pretrained weights" in text or "not downloaded" in text

    for name in ("stem", "branch0", "branch1", "branch2", "branch3", "incre3", "hrnetv2", "pre_logits", "logits"):
        assert re.search(rf"^{name}\s+\(4, ", text, re.M), name
