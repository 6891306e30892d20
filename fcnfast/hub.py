"""Getting weights: the known FCN releases by name, downloaded once, verified, converted to
fcnfast's native format and cached.

    path = fcnfast.hub.fetch("voc-fcn8s")   # $FCNFAST_HOME/models/voc-fcn8s.safetensors
    seg = fcnfast.load("voc-fcn8s")          # the same, through the API

The cache (``$FCNFAST_HOME``, default ``~/.cache/fcnfast``):

- ``downloads/<file>.part``: a download in progress; the next fetch resumes it (HTTP ``Range``).
- ``downloads/<file>``: a complete, verified release file. It is also where to place the file by
  hand without a network; it is removed once converted.
- ``models/<name>.safetensors``: the converted model. A fetch that finds it does no network and no
  conversion.

A file already in torch hub's cache (``$TORCH_HOME/hub/checkpoints/<file>``) is used instead of a
download (and left where it is). ``FCNFAST_HUB_MIRROR=<base URL>`` fetches ``<base URL>/<file>``
instead of each official URL (mirrors, air-gapped copies, tests). Checksums are verified where one
is published: torchvision's file names carry the first 8 hex digits of the file's SHA-256, checked
as a prefix as ``torch.hub`` does; the Caffe releases publish none, so their size (from the HTTP
headers) and the bounded Caffe reader are the check.
"""
from __future__ import annotations

import hashlib
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import checkpoint
from .convention import NYUD_COLOR_BGR, NYUD_HHA, SIFTFLOW_BGR, InputConvention
from .data.nyud import NYUD_CLASSES
from .data.siftflow import SIFTFLOW_SEMANTIC_CLASSES
from .palette import VOC_CLASSES

__all__ = ["HubError", "Release", "REGISTRY", "release", "releases", "fetch", "home",
           "model_file", "download_file", "torch_hub_dir"]


class HubError(RuntimeError):
    """A release that cannot be fetched; the message names the URL and the file to place by hand."""


@dataclass(frozen=True)
class Release:
    name: str
    url: str  # the official download URL
    arch: str  # an fcnfast.models.ARCHS name (looked up when converting)
    num_classes: int
    source: str  # one line: where the weights come from
    class_names: Optional[Tuple[str, ...]] = None
    sha256: Optional[str] = None  # the published SHA-256, or its published prefix
    mean_iu: Optional[float] = None  # the paper's (../shared/design/fcn-facts.md); None: not stated
    input_convention: Optional[InputConvention] = None  # None: the architecture's

    @property
    def file(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# --- the registry -------------------------------------------------------------------------------

# URLs: the official repository's `<net>/caffemodel-url` files (shelhamer/fcn.berkeleyvision.org)
# and torchvision/models/segmentation/fcn.py (FCN_ResNet{50,101}_Weights.COCO_WITH_VOC_LABELS_V1).
_CAFFE = "http://dl.caffe.berkeleyvision.org/"
_TORCHVISION = "https://download.pytorch.org/models/"

# data/pascal-context/classes-59.txt of the official repository, with 0 = background.
PASCAL_CONTEXT_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor", "bag", "bed", "bench", "book", "building", "cabinet", "ceiling",
    "clothes", "computer", "cup", "door", "fence", "floor", "flower", "food", "grass", "ground",
    "keyboard", "light", "mountain", "mouse", "curtain", "platform", "sign", "plate", "road",
    "rock", "shelves", "sidewalk", "sky", "snow", "bedcloth", "track", "tree", "truck", "wall",
    "water", "window", "wood",
)

# Input means of the official data layers (pascalcontext_layers.py; SIFT Flow's and NYUDv2's are
# fcnfast.convention's); the VOC nets and the two-stream NYUDv2 net use their architecture's.
_SIFTFLOW = SIFTFLOW_BGR
_PASCAL_CONTEXT = InputConvention("BGR", 255.0, (104.007, 116.669, 122.679))

_VOC = "Caffe release {net} (PASCAL VOC 2011 train + SBD)"


def _caffe(name, file, arch, n, source, names=None, mean_iu=None, convention=None) -> Release:
    return Release(name, _CAFFE + file, arch, n, source, names, None, mean_iu, convention)


_RELEASES = [
    _caffe("voc-fcn8s", "fcn8s-heavy-pascal.caffemodel", "fcn8s", 21,
           _VOC.format(net="voc-fcn8s") + "; 65.5 mIU seg11valid, 67.2 seg12test", VOC_CLASSES,
           62.7),
    _caffe("voc-fcn8s-atonce", "fcn8s-atonce-pascal.caffemodel", "fcn8s_atonce", 21,
           _VOC.format(net="voc-fcn8s-atonce") + ", all at once; 65.4 mIU seg11valid", VOC_CLASSES),
    _caffe("voc-fcn16s", "fcn16s-heavy-pascal.caffemodel", "fcn16s", 21,
           _VOC.format(net="voc-fcn16s") + "; 65.0 mIU seg11valid", VOC_CLASSES, 62.4),
    _caffe("voc-fcn32s", "fcn32s-heavy-pascal.caffemodel", "fcn32s", 21,
           _VOC.format(net="voc-fcn32s") + "; 63.6 mIU seg11valid", VOC_CLASSES, 59.4),
    _caffe("voc-fcn-alexnet", "fcn-alexnet-pascal.caffemodel", "fcn_alexnet", 21,
           _VOC.format(net="voc-fcn-alexnet") + ", AlexNet trunk; 48.0 mIU seg11valid",
           VOC_CLASSES, 39.8),
    _caffe("siftflow-fcn32s", "siftflow-fcn32s-heavy.caffemodel", "siftflow_fcn32s", 33,
           "Caffe release siftflow-fcn32s: 33 semantic + 3 geometric classes (two heads)",
           SIFTFLOW_SEMANTIC_CLASSES, None, _SIFTFLOW),
    _caffe("siftflow-fcn16s", "siftflow-fcn16s-heavy.caffemodel", "siftflow_fcn16s", 33,
           "Caffe release siftflow-fcn16s: 33 semantic + 3 geometric classes (two heads)",
           SIFTFLOW_SEMANTIC_CLASSES, 39.5, _SIFTFLOW),
    _caffe("siftflow-fcn8s", "siftflow-fcn8s-heavy.caffemodel", "siftflow_fcn8s", 33,
           "Caffe release siftflow-fcn8s: 33 semantic + 3 geometric classes (two heads)",
           SIFTFLOW_SEMANTIC_CLASSES, None, _SIFTFLOW),
    _caffe("nyud-fcn32s-color", "nyud-fcn32s-color-heavy.caffemodel", "fcn32s", 40,
           "Caffe release nyud-fcn32s-color: NYUDv2 40 classes, color input",
           NYUD_CLASSES, None, NYUD_COLOR_BGR),
    _caffe("nyud-fcn32s-hha", "nyud-fcn32s-hha-heavy.caffemodel", "fcn32s", 40,
           "Caffe release nyud-fcn32s-hha: NYUDv2 40 classes, HHA input (fcnfast.data.hha_encode)",
           NYUD_CLASSES, None, NYUD_HHA),
    _caffe("nyud-fcn32s-color-hha", "nyud-fcn32s-color-hha-heavy.caffemodel",
           "nyud_fcn32s_color_hha", 40,
           "Caffe release nyud-fcn32s-color-hha: NYUDv2 40 classes, late fusion of color and HHA",
           NYUD_CLASSES),
    _caffe("pascalcontext-fcn32s", "pascalcontext-fcn32s-heavy.caffemodel", "fcn32s", 60,
           "Caffe release pascalcontext-fcn32s: PASCAL-Context 59 classes + background",
           PASCAL_CONTEXT_CLASSES, None, _PASCAL_CONTEXT),
    _caffe("pascalcontext-fcn16s", "pascalcontext-fcn16s-heavy.caffemodel", "fcn16s", 60,
           "Caffe release pascalcontext-fcn16s: PASCAL-Context 59 classes + background",
           PASCAL_CONTEXT_CLASSES, None, _PASCAL_CONTEXT),
    _caffe("pascalcontext-fcn8s", "pascalcontext-fcn8s-heavy.caffemodel", "fcn8s", 60,
           "Caffe release pascalcontext-fcn8s: PASCAL-Context 59 classes + background",
           PASCAL_CONTEXT_CLASSES, None, _PASCAL_CONTEXT),
    Release("fcn_resnet50_coco", _TORCHVISION + "fcn_resnet50_coco-1167a1af.pth", "fcn_resnet50",
            21, "torchvision FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1: COCO train2017 on VOC's "
            "classes; 60.5 mIU COCO val2017", VOC_CLASSES, "1167a1af"),
    Release("fcn_resnet101_coco", _TORCHVISION + "fcn_resnet101_coco-7ecb50ca.pth", "fcn_resnet101",
            21, "torchvision FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1: COCO train2017 on "
            "VOC's classes; 63.7 mIU COCO val2017", VOC_CLASSES, "7ecb50ca"),
]

REGISTRY: Dict[str, Release] = {r.name: r for r in _RELEASES}


def releases() -> List[Release]:
    return list(REGISTRY.values())


def release(name: str) -> Release:
    """The registry entry called ``name``; a ValueError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


# --- where things live --------------------------------------------------------------------------

def home() -> Path:
    """The cache folder: ``$FCNFAST_HOME``, default ``~/.cache/fcnfast``."""
    return Path(os.environ.get("FCNFAST_HOME") or "~/.cache/fcnfast").expanduser()


def torch_hub_dir() -> Path:
    """torch hub's checkpoint cache, found as torch.hub finds it (without importing torch.hub)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or "~/.cache", "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def model_file(name: str) -> Path:
    """Where the converted model of ``name`` is cached."""
    return home() / "models" / f"{release(name).name}.safetensors"


def download_file(name: str) -> Path:
    """Where the release file of ``name`` is downloaded to (and may be placed by hand)."""
    return home() / "downloads" / release(name).file


def _url(entry: Release) -> str:
    mirror = os.environ.get("FCNFAST_HUB_MIRROR")
    return f"{mirror.rstrip('/')}/{entry.file}" if mirror else entry.url


def _place_hint(entry: Release, url: str) -> str:
    origin = "" if url == entry.url else f" (from {entry.url})"
    also = (f" or at {torch_hub_dir() / entry.file}" if entry.url.startswith(_TORCHVISION) else "")
    return (f"to proceed without a network, place {entry.file}{origin} at "
            f"{download_file(entry.name)}{also}")


# --- checksums ----------------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _mismatch(path: Path, entry: Release) -> Optional[str]:
    """The file's SHA-256 if it does not match the published one (None: it matches, or none is
    published)."""
    if not entry.sha256:
        return None
    digest = _sha256(path)
    return None if digest.startswith(entry.sha256.lower()) else digest


# --- downloading --------------------------------------------------------------------------------

# Tries per fetch when the connection drops mid-file; each resumes where the last one stopped.
_ATTEMPTS = 5
_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


def _content_range(value: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """(first byte, total size) of a ``Content-Range: bytes A-B/T`` (or ``bytes */T``) header."""
    try:
        _unit, _, spec = (value or "").strip().partition(" ")
        span, _, total = spec.partition("/")
        first = None if span == "*" else int(span.split("-")[0])
        return first, (None if total in ("", "*") else int(total))
    except ValueError:
        return None, None


def _download(url: str, part: Path, *, progress: bool, hint: str) -> None:
    """Bring ``url``'s bytes into ``part``, resuming what it already holds: ``Range: bytes=N-``,
    appending on 206, starting over on 200. A dropped connection is retried (resuming) up to
    ``_ATTEMPTS`` times; after that the bytes stay in ``part`` for the next fetch to resume."""
    import http.client
    import urllib.error
    import urllib.request

    from tqdm.auto import tqdm

    from . import __version__

    bar = None
    try:
        for attempt in range(1, _ATTEMPTS + 1):
            have = part.stat().st_size if part.exists() else 0
            request = urllib.request.Request(url, headers={
                "User-Agent": f"fcnfast/{__version__}", "Accept-Encoding": "identity"})
            if have:
                request.add_header("Range", f"bytes={have}-")
            try:
                response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
            except urllib.error.HTTPError as e:
                e.close()
                if e.code == 416 and have:  # nothing left after `have`: complete, or not this file
                    if _content_range(e.headers.get("Content-Range"))[1] == have:
                        return
                    part.unlink()
                    continue
                raise HubError(f"cannot download {url}: HTTP {e.code} {e.reason}; {hint}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", None) or e
                kept = (f" (the {have} bytes downloaded so far stay in {part} and are resumed next "
                        "time)" if have else "")
                raise HubError(f"cannot download {url}: {reason}{kept}; {hint}") from None
            with response:
                status = getattr(response, "status", None)
                total: Optional[int]
                if status == 206:
                    first, total = _content_range(response.headers.get("Content-Range"))
                    if first != have:  # not the bytes asked for: start over
                        part.unlink()
                        continue
                    mode = "ab"
                else:  # the whole file (the server did not take the range)
                    have, mode = 0, "wb"
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                if bar is None:
                    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True,
                               unit_divisor=1024, desc=part.name[:-len(".part")], file=sys.stderr,
                               disable=not progress, dynamic_ncols=True)
                else:
                    bar.reset(total=total)
                    bar.update(have)
                dropped = None
                with open(part, mode) as f:
                    try:
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            f.write(chunk)
                            bar.update(len(chunk))
                    except (OSError, http.client.HTTPException) as e:  # reset, timeout, ...
                        dropped = e
            size = part.stat().st_size
            if total is None and dropped is None:
                return  # no length announced: the end of the body is the end of the file
            if total is not None and size == total:
                return
            if total is not None and size > total:
                part.unlink()
                raise HubError(f"cannot download {url}: got {size} bytes of a {total}-byte file; "
                               f"the partial file was deleted, run it again; {hint}")
            why = f"{dropped}" if dropped is not None else "the connection closed early"
            if attempt == _ATTEMPTS:
                of = f" of {total}" if total is not None else ""
                raise HubError(f"the download of {url} was interrupted at {size}{of} bytes "
                               f"({why}); run it again to resume from {part}, or {hint}")
        # Every try ended in a restart (416, or a range other than the one asked for).
        raise HubError(f"cannot download {url}: the server's answers to range requests did not "
                       f"fit the file after {_ATTEMPTS} tries; run it again, or {hint}")
    finally:
        if bar is not None:
            bar.close()


@contextmanager
def _locked(path: Path):
    """One process at a time per release file (DDP ranks loading the same name, two shells):
    the others wait, then find the model converted. No lock where fcntl is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "ab") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _local_copy(entry: Release, raw: Path, torch_hub: bool) -> Optional[Path]:
    """A verified release file already on this machine: ours, or torch hub's."""
    if raw.is_file():
        digest = _mismatch(raw, entry)
        if digest is not None:
            raise HubError(f"{raw} is not {entry.file}: its sha256 {digest[:16]}... does not start "
                           f"with the published {entry.sha256}; replace it with the file from "
                           f"{entry.url}, or delete it (or fetch with force) to download it again")
        return raw
    cached = torch_hub_dir() / entry.file
    if torch_hub and cached.is_file():
        digest = _mismatch(cached, entry)
        if digest is None:
            return cached
        warnings.warn(f"fcnfast: ignoring {cached}: its sha256 {digest[:16]}... does not start "
                      f"with the published {entry.sha256}", RuntimeWarning, stacklevel=3)
    return None


def _convert(entry: Release, source: Path, out: Path) -> None:
    """Read the release once and write it in the native format (atomically: save_native)."""
    try:
        model, _ = checkpoint.load_model(source, arch=entry.arch)
    except checkpoint.CheckpointError as e:
        raise checkpoint.CheckpointError(f"{entry.name}: {e} (the file is kept; fetch with force "
                                         "to download it again)") from e
    if model.num_classes != entry.num_classes:
        raise checkpoint.CheckpointError(
            f"{entry.name}: {source} has {model.num_classes} classes, the release has "
            f"{entry.num_classes}: not the release file (fetch with force to download it again)")
    names = entry.class_names
    names = list(names) if names is not None and len(names) == model.num_classes else None
    checkpoint.save_native(model, out, class_names=names, input_convention=entry.input_convention)


def _check_supported(entry: Release) -> None:
    from .models import ARCHS

    if entry.arch not in ARCHS:
        raise HubError(f"{entry.name} is not supported by this build of fcnfast yet: it needs the "
                       f"{entry.arch} architecture (this build has {', '.join(ARCHS)})")


def fetch(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """The converted native ``.safetensors`` of the release ``name``, fetched if needed.

    Cached: a second fetch does no network and no conversion. Otherwise the release file comes
    from the cache's ``downloads/`` folder, torch hub's cache, or the network (resumed where a
    previous download stopped, with a tqdm bar on stderr unless ``progress=False``), is verified
    against its published checksum, converted once and removed (torch hub's copy is left alone).
    ``force=True`` downloads and converts again. A ``HubError`` says which URL failed and which
    file to place where to proceed without a network; an unknown name is a ValueError.
    """
    entry = release(name)
    native = model_file(entry.name)
    if native.is_file() and not force:
        return native
    _check_supported(entry)
    raw = download_file(entry.name)
    part = raw.with_name(raw.name + ".part")
    for folder in (raw.parent, native.parent):
        folder.mkdir(parents=True, exist_ok=True)
    with _locked(raw.with_name(raw.name + ".lock")):
        if native.is_file() and not force:  # another process converted it while we waited
            return native
        if force:
            for stale in (raw, part):
                stale.unlink(missing_ok=True)
        source = _local_copy(entry, raw, torch_hub=not force)
        if source is None:
            url = _url(entry)
            _download(url, part, progress=progress, hint=_place_hint(entry, url))
            digest = _mismatch(part, entry)
            if digest is not None:
                part.unlink()
                raise HubError(f"{url} failed verification: sha256 {digest} does not start with "
                               f"the published {entry.sha256}; the download was deleted, run it "
                               f"again, or {_place_hint(entry, url)}")
            os.replace(part, raw)  # a complete, verified file only ever appears under its name
            source = raw
        _convert(entry, source, native)
        if source == raw:
            raw.unlink()  # the native file holds the same weights
    return native
