"""The quick-start notebook runs from top to bottom (create, convert, train, predict, features)."""

import nbformat
from nbclient import NotebookClient

from conftest import ROOT


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's `tempfile.mkdtemp()` (about 370 MB) lands here
    nb = nbformat.read(ROOT / "experiments" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "\n".join(
        out.get("text", "") for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
    )
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
    assert "round trip identical: True" in text
    assert "steps: 6" in text and "'count': 359" in text
    assert "timm keys" in text
    for name in ("branch0", "branch3", "incre3", "hrnetv2", "pre_logits", "logits"):
        assert name in text, name
