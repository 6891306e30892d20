"""Getting weights by name (``fcnfast.hub``, ``fcnfast download``), against an HTTP server the test
starts on 127.0.0.1 serving generated files: a tiny .caffemodel (written by test_caffe's writer) and
a state dict whose file name carries its SHA-256 prefix, as torchvision's do. No internet."""
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

import fcnfast
from fcnfast import hub
from fcnfast.checkpoint import CheckpointError
from fcnfast.models import build_model
from fcnfast.palette import VOC_CLASSES
from test_caffe import NARROW, caffemodel

CAFFE_NAME = "voc-fcn8s"  # a Caffe release: no published checksum
CAFFE_FILE = "fcn8s-heavy-pascal.caffemodel"
OFFICIAL = "http://dl.caffe.berkeleyvision.org/" + CAFFE_FILE  # voc-fcn8s/caffemodel-url
SUMMED_NAME = "fcn_resnet50_coco"  # a torchvision release: SHA-256 prefix in the file name


# --- generated release files ------------------------------------------------------------------

def _random(arch, seed):
    model = build_model(arch, 21, **NARROW).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def _scene(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (37, 53, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """{file name: (bytes, model it was written from)} and the patched torchvision-style entry."""
    folder = tmp_path_factory.mktemp("releases")
    fcn8s = _random("fcn8s", 0)
    caffe_bytes = caffemodel(fcn8s, folder / CAFFE_FILE).read_bytes()
    fcn32s = _random("fcn32s", 1)
    torch.save(fcn32s.state_dict(), folder / "state.pth")
    pth_bytes = (folder / "state.pth").read_bytes()
    sha = hashlib.sha256(pth_bytes).hexdigest()
    pth_file = f"fcn32s_narrow-{sha[:8]}.pth"
    entry = replace(hub.REGISTRY[SUMMED_NAME], arch="fcn32s", sha256=sha[:8],
                    url="https://download.pytorch.org/models/" + pth_file)
    labels = {name: fcnfast.Segmenter(m, device="cpu", backend="torch").segment(_scene())
              for name, m in ((CAFFE_FILE, fcn8s), (pth_file, fcn32s))}
    return {"files": {CAFFE_FILE: (caffe_bytes, fcn8s), pth_file: (pth_bytes, fcn32s)},
            "summed": entry, "labels": labels}


# --- the server -------------------------------------------------------------------------------

class Server:
    """Serves ``files`` under any folder; honours ``Range: bytes=N-`` (206) unless told not to;
    ``drop_first`` names files whose first response stops after half its bytes."""

    def __init__(self):
        self.files = {}
        self.requests = []  # (path, Range header or None)
        self.drop_first = set()
        self.honour_range = True
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                asked = self.headers.get("Range")
                state.requests.append((self.path, asked))
                if name not in state.files:
                    self.send_error(404)
                    return
                data, start = state.files[name], 0
                if asked and state.honour_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in state.drop_first:
                    state.drop_first.discard(name)
                    body = body[:len(body) // 2]  # then the connection closes (HTTP/1.0)
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mirror/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/models"


@pytest.fixture
def server(releases, tmp_path, monkeypatch):
    srv = Server()
    srv.files = {name: data for name, (data, _) in releases["files"].items()}
    monkeypatch.setitem(hub.REGISTRY, SUMMED_NAME, releases["summed"])
    monkeypatch.setenv("FCNFAST_HUB_MIRROR", srv.url)
    monkeypatch.setenv("FCNFAST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(var, "*")
    yield srv
    srv.close()


def _same_labels(name, expected):
    """fcnfast.load(name) labels a scene as the model the release was written from does."""
    loaded = fcnfast.load(name, device="cpu", backend="torch")
    assert np.array_equal(loaded.segment(_scene()), expected)
    assert loaded.classes == list(VOC_CLASSES)
    return loaded


def _leftovers(tmp_path):
    return sorted(p.name for p in (tmp_path / "home").rglob("*") if p.is_file()
                  and not p.name.endswith(".lock"))


# --- fetch ------------------------------------------------------------------------------------

def test_fetch_downloads_converts_once_and_load_takes_the_name(server, releases, tmp_path):
    path = hub.fetch(CAFFE_NAME, progress=False)
    assert path == tmp_path / "home" / "models" / "voc-fcn8s.safetensors"
    assert server.requests == [("/mirror/models/" + CAFFE_FILE, None)]
    assert _leftovers(tmp_path) == ["voc-fcn8s.safetensors"]  # the release file is consumed
    stamp = path.stat().st_mtime_ns
    loaded = _same_labels(CAFFE_NAME, releases["labels"][CAFFE_FILE])
    assert loaded.arch == "fcn8s" and loaded.input_convention == fcnfast.CAFFE_BGR
    assert hub.fetch(CAFFE_NAME) == path  # cached: no request, no conversion
    assert len(server.requests) == 1 and path.stat().st_mtime_ns == stamp


def test_checksum_is_verified_and_labels_match(server, releases):
    entry = releases["summed"]
    hub.fetch(SUMMED_NAME, progress=False)
    assert [p for p, _ in server.requests] == ["/mirror/models/" + entry.file]
    _same_labels(SUMMED_NAME, releases["labels"][entry.file])


def test_interrupted_download_resumes_with_a_range_request(server, releases):
    entry = releases["summed"]
    data = server.files[entry.file]
    server.drop_first.add(entry.file)
    hub.fetch(SUMMED_NAME, progress=False)
    assert [r for _, r in server.requests] == [None, f"bytes={len(data) // 2}-"]
    _same_labels(SUMMED_NAME, releases["labels"][entry.file])  # verified, complete


@pytest.mark.parametrize("honour_range", [True, False], ids=["206", "200-restart"])
def test_partial_download_is_kept_and_resumed_by_the_next_fetch(server, releases, tmp_path,
                                                                monkeypatch, honour_range):
    monkeypatch.setattr(hub, "_ATTEMPTS", 1)
    server.honour_range = honour_range
    server.drop_first.add(CAFFE_FILE)
    with pytest.raises(hub.HubError, match="interrupted at .* run it again to resume"):
        hub.fetch(CAFFE_NAME, progress=False)
    part = hub.download_file(CAFFE_NAME).with_name(CAFFE_FILE + ".part")
    size = len(server.files[CAFFE_FILE])
    assert part.stat().st_size == size // 2 and not hub.model_file(CAFFE_NAME).exists()
    hub.fetch(CAFFE_NAME, progress=False)
    assert server.requests[1][1] == f"bytes={size // 2}-"
    assert _leftovers(tmp_path) == ["voc-fcn8s.safetensors"]
    _same_labels(CAFFE_NAME, releases["labels"][CAFFE_FILE])


def test_corrupted_file_fails_verification_and_nothing_is_cached(server, releases, tmp_path):
    entry = releases["summed"]
    good = server.files[entry.file]
    server.files[entry.file] = good[:100] + bytes(b ^ 0xFF for b in good[100:200]) + good[200:]
    with pytest.raises(hub.HubError, match=f"failed verification: sha256 .* does not start with "
                                           f"the published {entry.sha256}"):
        hub.fetch(SUMMED_NAME, progress=False)
    assert _leftovers(tmp_path) == []


def test_offline_says_which_file_to_place_where_and_the_placed_file_works(server, releases,
                                                                          tmp_path, monkeypatch):
    monkeypatch.setenv("FCNFAST_HUB_MIRROR", _closed_port_url())
    raw = tmp_path / "home" / "downloads" / CAFFE_FILE
    with pytest.raises(hub.HubError) as e:
        hub.fetch(CAFFE_NAME, progress=False)
    msg = str(e.value)
    assert "cannot download http://127.0.0.1:" in msg and "\n" not in msg
    assert f"place {CAFFE_FILE} (from {OFFICIAL}) at {raw}" in msg
    raw.write_bytes(server.files[CAFFE_FILE])  # as told, still offline
    assert hub.fetch(CAFFE_NAME, progress=False).is_file() and not raw.exists()
    _same_labels(CAFFE_NAME, releases["labels"][CAFFE_FILE])


def test_http_error_names_the_url(server):
    del server.files[CAFFE_FILE]
    with pytest.raises(hub.HubError, match=f"cannot download {re.escape(server.url)}/{CAFFE_FILE}: "
                                           "HTTP 404"):
        hub.fetch(CAFFE_NAME, progress=False)


def test_torch_hub_cache_file_is_used_without_a_request(server, releases, tmp_path):
    entry = releases["summed"]
    cached = tmp_path / "torch" / "hub" / "checkpoints" / entry.file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(server.files[entry.file])
    hub.fetch(SUMMED_NAME, progress=False)
    assert server.requests == [] and cached.is_file()  # torch hub's file is left alone
    _same_labels(SUMMED_NAME, releases["labels"][entry.file])


def test_names_unknown_unsupported_and_paths(server, releases, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown model 'voc-fcn9s'; known: voc-fcn8s, "):
        hub.fetch("voc-fcn9s")
    monkeypatch.setitem(hub.REGISTRY, "nyud-fcn32s-color-hha",
                        replace(hub.REGISTRY["nyud-fcn32s-color-hha"], arch="not_an_arch"))
    with pytest.raises(hub.HubError, match="not supported by this build of fcnfast yet"):
        hub.fetch("nyud-fcn32s-color-hha")
    # A file that exists wins over a release name.
    monkeypatch.chdir(tmp_path)
    fcnfast.save(releases["files"][CAFFE_FILE][1], tmp_path / CAFFE_NAME)
    assert fcnfast.load(CAFFE_NAME, device="cpu", backend="torch").arch == "fcn8s"
    assert server.requests == []


def test_wrong_class_count_is_refused(server, monkeypatch):
    monkeypatch.setitem(hub.REGISTRY, CAFFE_NAME, replace(hub.REGISTRY[CAFFE_NAME], num_classes=60))
    with pytest.raises(CheckpointError, match="has 21 classes, the release has 60"):
        hub.fetch(CAFFE_NAME, progress=False)


@pytest.mark.parametrize("name", ["siftflow-fcn16s", "nyud-fcn32s-color",
                                  "nyud-fcn32s-color-hha"])
def test_the_other_families_convert_with_their_classes_and_means(server, tmp_path, name):
    """SIFT Flow's two heads, NYUDv2's 40 classes with its own means, the two-stream net."""
    from fcnfast.convention import NYUD_COLOR_BGR, NYUD_HHA
    from fcnfast.data import NYUD_CLASSES, SIFTFLOW_SEMANTIC_CLASSES
    from fcnfast.models import ARCHS

    entry = hub.REGISTRY[name]
    if entry.arch not in ARCHS:
        pytest.skip(f"{entry.arch} is not in this build yet")
    model = build_model(entry.arch, entry.num_classes, **NARROW).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    server.files[entry.file] = caffemodel(model, tmp_path / entry.file).read_bytes()
    seg = fcnfast.load(name, device="cpu", backend="torch")
    assert seg.arch == entry.arch and seg.num_classes == entry.num_classes
    if name.startswith("siftflow"):
        assert seg.classes == list(SIFTFLOW_SEMANTIC_CLASSES)
        assert seg.input_convention.mean == (114.578, 115.294, 108.353)  # siftflow_layers.py
    else:
        assert seg.classes == list(NYUD_CLASSES)
        want = (NYUD_COLOR_BGR, NYUD_HHA) if name.endswith("hha") else NYUD_COLOR_BGR
        assert seg.input_convention == want
    ref = fcnfast.Segmenter(model, device="cpu", backend="torch",
                            input_convention=seg.input_convention)
    if name.endswith("color-hha"):
        kw = dict(hha=_scene(1))
        assert np.array_equal(seg.segment(_scene(), **kw), ref.segment(_scene(), **kw))
    else:
        got, want = seg.segment(_scene()), ref.segment(_scene())
        if isinstance(want, dict):  # {head: labels}
            assert set(got) == set(want) and all(np.array_equal(got[h], want[h]) for h in want)
        else:
            assert np.array_equal(got, want)


# --- the command line -------------------------------------------------------------------------

def test_cli_download_and_list(server, tmp_path, run_main, monkeypatch):
    env = dict(os.environ, FCNFAST_HUB_MIRROR=server.url, FCNFAST_HOME=str(tmp_path / "home"))
    # as a user runs it
    proc = subprocess.run([sys.executable, "-m", "fcnfast", "download", CAFFE_NAME, "-q"], env=env,
                          text=True, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "home" / "models" / "voc-fcn8s.safetensors")
    monkeypatch.setenv("FCNFAST_HUB_MIRROR", _closed_port_url())
    monkeypatch.setenv("FCNFAST_HOME", str(tmp_path / "off"))
    r = run_main("download", CAFFE_NAME)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    assert r.stderr.startswith("fcnfast: error: cannot download ") and len(r.stderr.splitlines()) == 1
    assert f"place {CAFFE_FILE} (from {OFFICIAL}) at " \
           f"{tmp_path / 'off' / 'downloads' / CAFFE_FILE}" in r.stderr
    monkeypatch.setenv("FCNFAST_HUB_MIRROR", server.url)
    monkeypatch.setenv("FCNFAST_HOME", str(tmp_path / "home"))
    r = run_main("download", "--list")
    assert r.returncode == 0, r.stderr
    for name in hub.REGISTRY:
        assert re.search(rf"^{re.escape(name)}\s", r.stdout, re.M), name
    assert re.search(r"^voc-fcn8s\s+fcn8s\s+21\s+62\.7\s+Caffe release", r.stdout, re.M)
    r = run_main("download", "voc-fcn9s")
    assert r.returncode == 2 and "unknown model 'voc-fcn9s'" in r.stderr
