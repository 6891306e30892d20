"""Batch segmentation of whole datasets on Ray Data: ``segment_dataset(source, dest, model)``.

The image paths become a Ray dataset; ``map_batches`` runs them through a stateful worker class,
so each actor loads the Segmenter (and its engine: CUDA graphs, bound kernels) once and reuses it
for every batch, and images of one size in a batch run as one engine batch. Workers write the
label maps straight into ``dest`` (on a cluster, a folder every node sees) under a temporary name
renamed into place, so a killed worker never leaves a half-written PNG; the driver streams the
per-image results back, records bad images in ``errors.jsonl`` and the class fractions in Parquet.
A rerun skips every output already written and retries only what failed or is missing.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from . import _ext

ERRORS_FILE = "errors.jsonl"
TABLE_DIR = "classes"  # the Parquet dataset of per-image class fractions
OUTPUTS = ("png", "parquet")
_TMP_MARK = ".fcnfast-tmp-"
_FLUSH_ROWS = 1000  # Parquet rows gathered before a part file is written


# --- what to segment ------------------------------------------------------------------------------

def _outputs(output) -> Tuple[str, ...]:
    kinds = output.split("+") if isinstance(output, str) else list(output)
    bad = [k for k in kinds if k not in OUTPUTS]
    if bad or not kinds:
        raise ValueError(f"output must be 'png', 'parquet' or 'png+parquet' (or a list of them); "
                         f"got {output!r}")
    return tuple(k for k in OUTPUTS if k in kinds)


def _names(paths: List[str]) -> List[str]:
    """Output names (relative, without extension) of source paths: relative to their common
    folder; two sources that would write one name are refused."""
    base = os.path.commonpath([os.path.dirname(p) for p in paths]) if paths else ""
    return [os.path.splitext(os.path.relpath(p, base))[0] for p in paths]


def _listing(source, dest: str):
    """(paths, output names, the Ray dataset given or None) of ``source``."""
    from .image_files import image_files

    ray = _ext.ray_module()
    if isinstance(source, ray.data.Dataset):
        if "path" not in source.columns():
            raise ValueError("a Ray dataset source needs a 'path' column (the output names come "
                             "from it): ray.data.read_images(..., include_paths=True) makes one")
        paths = [str(p) for p in source.select_columns(["path"]).to_pandas()["path"]]
        return paths, _names(paths), source
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if not os.path.isdir(source):
            raise NotADirectoryError(f"source {source} is not a folder; pass a folder, a list of "
                                     "image paths or a Ray dataset")
        found = image_files([source], skip=dest)
        return [p for p, _ in found], [os.path.splitext(r)[0] for _, r in found], None
    if isinstance(source, Iterable):
        items = [os.fspath(p) for p in source]
        if not items:
            raise ValueError("the list of images is empty")
        missing = [p for p in items if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"image file not found: {missing[0]}"
                                    + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        paths = list(dict.fromkeys(os.path.abspath(p) for p in items))
        return paths, _names(paths), None
    raise TypeError(f"source must be a folder, a list of paths or a ray.data.Dataset; got "
                    f"{type(source).__name__}")


def _check_unique(paths, names):
    seen = {}
    for p, n in zip(paths, names):
        if n in seen:
            raise ValueError(f"{seen[n]} and {p} would both write {n}.png; rename one or segment "
                             "them separately")
        seen[n] = p


def _label_files(dest: str, name: str, heads) -> List[str]:
    """The label map file(s) of one image: dest/name.png, or dest/name_<head>.png per head."""
    if not heads:
        return [os.path.join(dest, name + ".png")]
    return [os.path.join(dest, f"{name}_{h}.png") for h in heads]


# --- resuming -------------------------------------------------------------------------------------

def _recorded_paths(dest: str) -> set:
    """Source paths already in the Parquet table."""
    folder = os.path.join(dest, TABLE_DIR)
    if not os.path.isdir(folder):
        return set()
    pq = _ext.arrow_modules()[1]
    done = set()
    for f in sorted(os.listdir(folder)):
        if f.endswith(".parquet"):
            done.update(pq.read_table(os.path.join(folder, f), columns=["path"]).column(0).to_pylist())
    return done


def _remove_stale_temporaries(dest: str) -> int:
    """Temporary files a killed worker or driver left behind (never a finished output)."""
    n = 0
    for root, _, files in os.walk(dest):
        for f in files:
            if _TMP_MARK in f:
                os.remove(os.path.join(root, f))
                n += 1
    return n


def _write_atomically(path: str, write) -> None:
    """``write(file object)`` into a temporary beside ``path``, then rename it into place."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}{_TMP_MARK}{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class _ErrorLog:
    """``dest/errors.jsonl``: one {"path", "error"} object a line. Entries of images this run
    retries are dropped at its start; new failures are appended as they come (one per path)."""

    def __init__(self, dest: str, retried: set):
        self.path = os.path.join(dest, ERRORS_FILE)
        kept = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a kill
                    if isinstance(entry, dict) and entry.get("path") not in retried:
                        kept.append(entry)
        text = "".join(json.dumps(e) + "\n" for e in kept)
        _write_atomically(self.path, lambda f: f.write(text.encode("utf-8")))
        self.seen = {e.get("path") for e in kept}
        self.file = open(self.path, "a", encoding="utf-8")

    def add(self, path: str, error: str) -> None:
        if path in self.seen:
            return
        self.seen.add(path)
        self.file.write(json.dumps({"path": path, "error": error}) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


class _Table:
    """Parquet part files of per-image results under dest/classes/, each written atomically."""

    def __init__(self, dest: str, recorded: set):
        self.folder = os.path.join(dest, TABLE_DIR)
        self.rows, self.recorded = [], recorded
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.parts = 0

    def add(self, row: dict) -> None:
        if row["path"] in self.recorded:  # an earlier run's row (only its PNG was redone)
            return
        self.rows.append(row)
        if len(self.rows) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        pa, pq = _ext.arrow_modules()
        table = pa.Table.from_pylist(self.rows)
        self.rows = []
        path = os.path.join(self.folder, f"part-{self.run}-{self.parts:05d}.parquet")
        self.parts += 1
        _write_atomically(path, lambda f: pq.write_table(table, f))


# --- the worker -----------------------------------------------------------------------------------

class SegmentWorker:
    """One Ray actor: a Segmenter loaded once, then batch after batch of images segmented and
    their label maps written. Returns one row per image (never raises for a bad image)."""

    def __init__(self, model_file: str, model_copy: list, arch: Optional[str], dest: str,
                 outputs: Tuple[str, ...], backend: str, dtype: Optional[str], device: str,
                 batch_size: int, threads: Optional[int]):
        import torch

        from .api import load

        if threads:
            torch.set_num_threads(threads)
        if os.path.isfile(model_file):
            self.seg = self._load(load, model_file, device, backend, arch, dtype)
        else:  # a node that does not see the driver's file: the object store's copy of it
            with tempfile.TemporaryDirectory(prefix="fcnfast-model-") as tmp:
                path = os.path.join(tmp, "model" + (os.path.splitext(model_file)[1] or ".pt"))
                with open(path, "wb") as f:
                    f.write(_ext.ray_module().get(model_copy[0]))
                self.seg = self._load(load, path, device, backend, arch, dtype)
        self.dest, self.outputs, self.batch_size = dest, outputs, batch_size
        self.heads = self.seg.heads
        self.classes = list(self.seg.model.head_classes)

    @staticmethod
    def _load(load, path, device, backend, arch, dtype):
        import torch

        return load(path, device=device, backend=backend, arch=arch,
                    dtype=None if dtype is None else getattr(torch, dtype))

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        from .images import read_image

        paths, names = [str(p) for p in batch["path"]], [str(n) for n in batch["name"]]
        images = batch.get("image")
        rows = [None] * len(paths)
        decoded = {}
        for i, path in enumerate(paths):
            try:
                source = images[i] if images is not None else path
                decoded[i] = read_image(source, f"image {path}").pixels
            except Exception as e:  # noqa: BLE001 - any unreadable image is recorded, not raised
                rows[i] = self._failed(path, names[i], e)
        groups = {}
        for i, pixels in decoded.items():
            groups.setdefault((pixels.dtype, tuple(pixels.shape)), []).append(i)
        for idx in groups.values():
            try:
                labels = self.seg.segment_batch([decoded[i] for i in idx], batch_size=self.batch_size)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory: these images fail, the job goes on
                for i in idx:
                    rows[i] = self._failed(paths[i], names[i], e)
                continue
            for i, lab in zip(idx, labels):
                try:
                    rows[i] = self._written(paths[i], names[i], lab)
                except OSError as e:
                    rows[i] = self._failed(paths[i], names[i], e)
        out = {key: np.array([r[key] for r in rows], dtype=object)
               for key in ("path", "name", "status", "error")}
        out["height"] = np.array([r["height"] for r in rows], np.int64)
        out["width"] = np.array([r["width"] for r in rows], np.int64)
        out["fractions"] = np.stack([r["fractions"] for r in rows])
        return out

    def _per_head(self, labels):
        return [labels[h].cpu().numpy() for h in self.heads] if self.heads else [labels.cpu().numpy()]

    def _written(self, path: str, name: str, labels) -> dict:
        from .render import label_png

        maps = self._per_head(labels)
        files = _label_files(self.dest, name, self.heads)
        wrote = False
        if "png" in self.outputs:
            for lab, out in zip(maps, files):
                if not os.path.exists(out):  # a rerun never rewrites a finished output
                    im = label_png(lab, self.seg.palette)
                    _write_atomically(out, lambda f: im.save(f, format="PNG"))
                    wrote = True
        fractions = np.concatenate([np.bincount(lab.reshape(-1).astype(np.int64), minlength=c)[:c]
                                    / lab.size for lab, c in zip(maps, self.classes)])
        return {"path": path, "name": name, "status": "written" if wrote or "png" not in self.outputs
                else "exists", "error": "", "height": int(maps[0].shape[0]),
                "width": int(maps[0].shape[1]), "fractions": fractions.astype(np.float32)}

    def _failed(self, path: str, name: str, e: Exception) -> dict:
        return {"path": path, "name": name, "status": "failed",
                "error": " ".join(f"{type(e).__name__}: {e}".split()), "height": 0, "width": 0,
                "fractions": np.full(sum(self.classes), np.nan, np.float32)}


# --- the job --------------------------------------------------------------------------------------

def _positive_int(value, what: str, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def _start_ray(ray, address: Optional[str]) -> bool:
    """Connect (or start a local Ray: this machine's CPUs and GPUs, no dashboard); True when this
    call started it, so the job shuts it down again."""
    if ray.is_initialized():
        return False
    import logging

    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False, configure_logging=True)
    return True


def _pool(ray, concurrency: Optional[int], gpus: float):
    """(actor pool strategy, torch threads per worker).

    Each worker reserves one logical CPU, so the tasks that read a given Ray dataset still find
    one (a worker holding every CPU would starve them); its torch threads take its share of the
    node's cores, which its intra-op parallelism uses.
    """
    resources = ray.cluster_resources()
    total_cpus = max(1, int(resources.get("CPU", 1)))
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
    per_node = max(1, min(int(n["Resources"]["CPU"]) for n in nodes)) if nodes else total_cpus
    if gpus > 0:
        n = concurrency or max(1, int(resources.get("GPU", 0) // gpus))
        return ray.data.ActorPoolStrategy(size=n), None
    if concurrency:
        workers_per_node = max(1, -(-concurrency // max(1, len(nodes))))
        return ray.data.ActorPoolStrategy(size=concurrency), max(1, per_node // workers_per_node)
    # One worker per node, as fast as one process on one machine, and one more per added node.
    return ray.data.ActorPoolStrategy(size=max(1, len(nodes))), per_node


def segment_dataset(source, dest, model="default", *, batch_size: int = 8,
                    concurrency: Optional[int] = None, num_gpus_per_worker: Optional[float] = None,
                    address: Optional[str] = None, output="png", backend: str = "auto",
                    dtype=None, arch: Optional[str] = None, progress: bool = False) -> dict:
    """Segment every image of ``source`` into ``dest`` on Ray Data; returns
    ``{"written", "skipped", "failed", "seconds", "images_per_s"}``.

    ``source``: a folder (recursively, every file Pillow reads), a list of image paths, or a
    ``ray.data.Dataset`` with a ``path`` column (and optionally an ``image`` column of decoded
    arrays, as ``ray.data.read_images(..., include_paths=True)`` gives). ``model``: a checkpoint
    path, a release name (``fcnfast.hub``) or ``"default"``; ``arch`` as in ``fcnfast.load``.

    Output (``output``): ``"png"`` writes ``dest/<relative path without extension>.png`` label
    maps (pixel value = class id, palette attached; ``_<head>`` per head of a multi-head net);
    ``"parquet"`` writes per-image rows (path, label map file, size, the fraction of pixels of each
    class) under ``dest/classes/``; ``"png+parquet"`` both. Bad images go to
    ``dest/errors.jsonl`` (one {"path", "error"} a line) and never stop the job. Rerunning skips
    every output already written (none is rewritten) and retries what failed or is missing.

    Workers: ``concurrency`` actors (default: one per node on CPUs, one per GPU), each with
    ``num_gpus_per_worker`` GPUs (default: 1 where the cluster has GPUs, else 0); ``batch_size``
    images per Ray batch, the ones of one size run as one engine batch. ``address``: join that
    Ray cluster; default: the Ray already initialised in this process, else a local one (this
    machine's CPUs and GPUs, dashboard off) shut down afterwards. ``backend``/``dtype`` as in
    ``fcnfast.load`` (``dtype`` a torch dtype or its name).
    """
    from .api import BACKENDS, model_path

    batch_size = _positive_int(batch_size, "batch_size", allow_none=False)
    concurrency = _positive_int(concurrency, "concurrency")
    if num_gpus_per_worker is not None and (isinstance(num_gpus_per_worker, bool) or not isinstance(
            num_gpus_per_worker, (int, float)) or num_gpus_per_worker < 0):
        raise ValueError(f"num_gpus_per_worker must be a number >= 0, got {num_gpus_per_worker!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    dtype = None if dtype is None else str(dtype).replace("torch.", "")
    if dtype not in (None, "float32", "float16", "bfloat16", "float64"):
        raise TypeError(f"dtype must be float32, float16, bfloat16 or float64; got {dtype}")
    outputs = _outputs(output)
    dest = os.path.abspath(os.fspath(dest))
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise FileExistsError(f"dest {dest} is an existing file; give a folder for the outputs")

    # The model is read and checked here, once: a typo or a corrupt file fails before Ray starts,
    # and the workers get its bytes through the object store (no shared folder needed for it).
    from .api import load

    file = os.fspath(model_path(model))
    probe = load(file, device="cpu", backend="torch", arch=arch)
    if len(probe.input_names) > 1:
        raise ValueError(f"{probe.arch} takes colour + HHA pairs; segment_dataset segments single "
                         "images (use Segmenter.segment_batch(rgb, hha=...))")
    heads = probe.heads

    ray = _ext.ray_module()
    paths, names, given = _listing(source, dest)
    _check_unique(paths, names)
    os.makedirs(dest, exist_ok=True)
    _remove_stale_temporaries(dest)
    recorded = _recorded_paths(dest) if "parquet" in outputs else set()

    def done(path, name):
        if "png" in outputs and not all(os.path.exists(f) for f in _label_files(dest, name, heads)):
            return False
        return "parquet" not in outputs or path in recorded

    todo = {p: n for p, n in zip(paths, names) if not done(p, n)}
    skipped = len(paths) - len(todo)
    errors = _ErrorLog(dest, set(todo))
    counts = {"written": 0, "skipped": skipped, "failed": 0}
    started = time.perf_counter()
    if not todo:
        errors.close()
        return dict(counts, seconds=0.0, images_per_s=0.0)

    started_ray = _start_ray(ray, address)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        gpus = num_gpus_per_worker
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        compute, threads = _pool(ray, concurrency, gpus)
        with open(file, "rb") as f:
            model_copy = ray.put(f.read())
        if given is not None:
            ds = given.filter(lambda row: str(row["path"]) in todo).map(
                lambda row: dict(row, name=todo[str(row["path"])]))
        else:
            ds = ray.data.from_items([{"path": p, "name": n} for p, n in todo.items()])
        results = ds.map_batches(
            SegmentWorker, batch_size=batch_size, batch_format="numpy", compute=compute,
            num_cpus=1, num_gpus=gpus or None,
            fn_constructor_kwargs=dict(
                # In a list, the reference reaches the actor unresolved: only a node that cannot
                # see ``file`` fetches the bytes.
                model_file=file, model_copy=[model_copy], arch=arch, dest=dest, outputs=outputs, backend=backend, dtype=dtype,
                device="cuda" if gpus else "cpu", batch_size=batch_size, threads=threads))
        table = _Table(dest, recorded) if "parquet" in outputs else None
        bar = _progress(len(todo), progress)
        seen = set()
        try:
            for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
                _take(batch, seen, counts, errors, table, bar, probe, dest, heads, outputs)
        except ray.exceptions.RayError as e:
            done_now = counts["written"] + counts["failed"]
            raise RuntimeError(f"the Ray job stopped after {done_now} of {len(todo)} images "
                               f"({type(e).__name__}: {_first_line(e)}); rerun to finish: what "
                               "is written is kept") from e
        if table is not None:
            table.flush()
        if bar is not None:
            bar.close()
    finally:
        errors.close()
        if started_ray:
            ray.shutdown()
    seconds = time.perf_counter() - started
    return dict(counts, seconds=seconds, images_per_s=counts["written"] / seconds if seconds else 0.0)


def _take(batch, seen, counts, errors, table, bar, seg, dest, heads, outputs) -> None:
    """Count and record one batch of worker results."""
    for k in range(len(batch["path"])):
        path = str(batch["path"][k])
        if path in seen:  # a batch Ray ran again after a worker died
            continue
        seen.add(path)
        if batch["status"][k] == "failed":
            counts["failed"] += 1
            errors.add(path, str(batch["error"][k]))
        else:
            counts["written"] += 1
            if table is not None:
                table.add(_table_row(path, str(batch["name"][k]), batch, k, seg, dest, heads,
                                     outputs))
        if bar is not None:
            bar.update(1)


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""


def _table_row(path, name, batch, k, seg, dest, heads, outputs) -> dict:
    """One Parquet row: the source path, the label map file(s) relative to dest, the size, and
    ``fraction_<class>`` (``fraction_<head>_<class>`` per head) of its pixels."""
    row = {"path": path}
    files = _label_files(dest, name, heads)
    for h, f in zip(heads or (None,), files):
        row[f"label_path_{h}" if h else "label_path"] = (os.path.relpath(f, dest)
                                                         if "png" in outputs else None)
    row["height"], row["width"] = int(batch["height"][k]), int(batch["width"][k])
    fractions, offset = batch["fractions"][k], 0
    for h, c in zip(heads or (None,), seg.model.head_classes):
        names = seg.head_class_names[h] if h else seg.classes
        for i, cls in enumerate(names[:c]):
            row[f"fraction_{h}_{cls}" if h else f"fraction_{cls}"] = float(fractions[offset + i])
        offset += c
    return row


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="segment-dataset", dynamic_ncols=True)
