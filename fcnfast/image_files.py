"""Which files are images, and the folder walk that finds them: what ``fcnfast segment`` and
``fcnfast.distributed.segment_dataset`` take as input. Outputs mirror the paths relative to the
inputs' common folder, so names never clash."""
from __future__ import annotations

import glob
import os
from typing import List, Optional, Sequence, Tuple

# Extensions Pillow registers an opener for but cannot read by itself (stub plugins needing a
# handler, Ghostscript, Windows-only metafiles) or that are mostly not pictures (.mpg: video).
_NOT_IMAGE_EXTS = frozenset((".bufr", ".grib", ".h5", ".hdf", ".mpeg", ".mpg", ".eps", ".ps",
                             ".emf", ".wmf"))


def image_extensions() -> tuple:
    """The file extensions a folder walk picks up: those Pillow can open."""
    from PIL import Image

    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items()
                        if fmt in Image.OPEN and ext not in _NOT_IMAGE_EXTS))


def image_files(items: Sequence[str], skip: Optional[str] = None) -> List[Tuple[str, str]]:
    """(path, path relative to the inputs' common folder) of every image named by files,
    directories (recursively) and globs; outputs mirror the relative paths, so names never clash.
    A folder walk does not enter ``skip`` (the output folder, so a rerun does not segment its own
    outputs). One folder given is the base itself, so the relative paths stay the same whichever
    of its files are there (a resumed job's outputs keep their names)."""
    exts = image_extensions()
    skip = os.path.realpath(skip) if skip else None
    found = []
    for item in items:
        if os.path.isdir(item):
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) != skip)
                found += [os.path.join(root, f) for f in sorted(files)
                          if f.lower().endswith(exts)]
        elif os.path.exists(item):
            found.append(item)
        elif glob.has_magic(item):
            matches = sorted(m for m in glob.glob(item, recursive=True) if os.path.isfile(m))
            if not matches:
                raise FileNotFoundError(f"no files match {item}")
            found += matches
        else:
            raise FileNotFoundError(f"image file not found: {item}")
    found = list(dict.fromkeys(os.path.abspath(p) for p in found))
    if not found:
        raise FileNotFoundError(f"no images found in {', '.join(items)}")
    if len(items) == 1 and os.path.isdir(items[0]):
        base = os.path.abspath(items[0])
    else:
        base = os.path.commonpath([os.path.dirname(p) for p in found])
    return [(p, os.path.relpath(p, base)) for p in found]
