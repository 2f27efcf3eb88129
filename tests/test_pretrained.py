"""The weight registry and the download cache, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import http.server
import socket
import threading

import numpy as np
import pytest
from convert_support import synthetic_state_dict
from safetensors.numpy import save

from hrnet_flax import load_pretrained
from hrnet_flax.weights import pretrained as P
from hrnet_flax.weights.checkpoint_io import CheckpointError
from hrnet_flax.weights.download import download
from hrnet_flax.models.registry import get_config, list_models


def test_registry_covers_every_published_weight():
    names = P.list_pretrained()
    for w in (18, 30, 32, 40, 44, 48, 64):
        assert f"hrnet_w{w}_c.paddle_in1k" in names and f"hrnet_w{w}.ms_in1k" in names
    for name in ("hrnet_w18_c_ssld.paddle_in1k", "hrnet_w48_c_ssld.paddle_in1k", "se_hrnet_w64_c_ssld.paddle_in1k",
                 "hrnet_w18.ms_aug_in1k", "hrnet_w18_small.ms_in1k", "hrnet_w18_small_v2.gluon_in1k",
                 "hrnet_w18_ssld.paddle_in1k", "hrnet_w48_ssld.paddle_in1k"):
        assert name in names
    for name in names:
        w = P.get_pretrained(name)
        assert w.arch in list_models(), name
        assert w.url.startswith("https://") and 70 < w.top1 < 90
        assert w.eval.size in (224, 288) and 0.8 < w.eval.size / w.eval.short_side <= 1.0 and w.eval.interpolation in ("bilinear", "bicubic")
        assert w.layout == ("paddle" if w.url.endswith(".pdparams") else "timm")


def test_registry_evaluation_settings():
    paddle = P.get_pretrained("hrnet_w18_c.paddle_in1k")
    assert (paddle.eval.resize_short, paddle.eval.size, paddle.top5) == (256, 224, 93.39)
    assert paddle.url.endswith("/legendary_models/HRNet_W18_C_pretrained.pdparams")
    ssld = P.get_pretrained("hrnet_w18_ssld.paddle_in1k")
    assert ssld.eval.crop_pct == 0.95 and ssld.test_eval.size == 288 and ssld.test_eval.crop_pct == 1.0
    assert ssld.url == "https://huggingface.co/timm/hrnet_w18_ssld.paddle_in1k/resolve/main/model.safetensors"
    assert P.get_pretrained("hrnet_w18.ms_aug_in1k").eval.crop_pct == 0.95
    from hrnet_flax.data.preprocess import eval_spec

    assert eval_spec(P.get_pretrained("hrnet_w18.ms_in1k")).short_side == 256
    assert eval_spec(P.get_pretrained("hrnet_w18.ms_aug_in1k")).short_side == 235  # floor(224 / 0.95), as timm
    assert P.get_pretrained("se_hrnet_w64_c_ssld.paddle_in1k").arch == "se_hrnet_w64_c"
    assert P.get_pretrained("HRNet_W18_C_SSLD.paddle_in1k").arch == "hrnet_w18_ssld"


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self):  # noqa: N802
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        cut = self.path.endswith("?cut")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 3] if cut else body)  # a cut transfer closes early
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    body = save(synthetic_state_dict("hrnet_w18_small", "timm"))
    _Handler.files = {"/small.safetensors": body}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_url_into_cache_then_reuse(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HRNET_FLAX_CACHE", str(tmp_path / "cache"))
    model, variables = load_pretrained(f"{server}/small.safetensors")
    assert model.config == get_config("hrnet_w18_small") and model.num_classes == 1000
    cached = tmp_path / "cache" / "small.safetensors"
    assert cached.read_bytes() == _Handler.files["/small.safetensors"]
    assert [p.name for p in cached.parent.iterdir()] == ["small.safetensors"]
    _Handler.files = {}  # a second call must not touch the network
    try:
        assert download(f"{server}/small.safetensors") == cached
    finally:
        _Handler.files = {"/small.safetensors": cached.read_bytes()}


def test_registered_name_downloads_from_its_url(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HRNET_FLAX_CACHE", str(tmp_path))
    entry = dataclasses.replace(P.PRETRAINED["hrnet_w18_small.ms_in1k"], url=f"{server}/small.safetensors")
    monkeypatch.setitem(P.PRETRAINED, entry.name, entry)
    model, variables = load_pretrained("hrnet_w18_small.ms_in1k")
    assert (tmp_path / "hrnet_w18_small.ms_in1k.safetensors").is_file()
    np.testing.assert_array_equal(
        np.asarray(variables["params"]["conv1"]["conv"]["kernel"]),
        synthetic_state_dict("hrnet_w18_small", "timm")["conv1.weight"].transpose(2, 3, 1, 0),
    )


def test_interrupted_download_leaves_no_complete_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HRNET_FLAX_CACHE", str(tmp_path))
    with pytest.raises(CheckpointError) as e:
        download(f"{server}/small.safetensors?cut", filename="small.safetensors", progress=False)
    assert "incomplete download" in str(e.value) and "small.safetensors" in str(e.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part is left


def test_offline_error_names_url_and_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HRNET_FLAX_CACHE", str(tmp_path))
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/HRNet_W18_C_pretrained.pdparams"
    with pytest.raises(CheckpointError) as e:
        download(url, progress=False)
    assert url in str(e.value) and str(tmp_path / "HRNet_W18_C_pretrained.pdparams") in str(e.value)
    assert list(tmp_path.iterdir()) == []
