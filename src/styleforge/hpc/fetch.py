"""``fetch``: put the files the tools need into the cache on a machine with internet, so that compute nodes
without it find them there (every "file missing" message names the fetch command).

The names come from the one registry of known files, :data:`styleforge.utils.cache.KNOWN_FILES` (published
networks, ``vgg16``, ``inception``, ``clip``), plus two groups: ``networks`` (every published network) and
``landmarks`` (the face-alignment detector's two weight files, which go where that package reads them,
``$TORCH_HOME/hub/checkpoints``; dlib's 68-point model ships inside ``face-recognition-models`` and needs no
fetch). A URL is fetched into the cache under its file name. Fetching is the explicit permission to download.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import StyleforgeError
from ..utils.cache import KNOWN_FILES, check_cache_dir, download, resolve_file
from ..utils.progress import Callback, reporter

GROUPS = {"networks": "every published network (.pkl) in the registry",
          "landmarks": "face-alignment's S3FD + 2D-FAN weights (--detector face-alignment)"}


@dataclass
class Fetched:
    name: str
    path: Path
    downloaded: bool  # False: it was there already


def fetchable() -> Dict[str, str]:
    """name -> what it is, for every name :func:`fetch` takes (URLs aside)."""
    out = {k: v.what or v.filename for k, v in sorted(KNOWN_FILES.items())}
    out.update(GROUPS)
    return out


def _network_names() -> List[str]:
    return [k for k, v in sorted(KNOWN_FILES.items()) if v.filename.endswith(".pkl")]


def _landmark_files() -> List[Tuple[str, str, Path]]:
    """(file name, URL, folder) of face-alignment's weights."""
    from ..align.landmarks import fan_checkpoint_dir, fan_urls

    folder = fan_checkpoint_dir()
    urls = fan_urls()
    return [(u.rsplit("/", 1)[-1], u, folder) for u in (urls["s3fd"], urls["2DFAN-4"])]


def expand(names: Sequence[str]) -> List[str]:
    """The names with the groups expanded (order kept, repeats dropped); an unknown name is an error listing the
    known ones."""
    out: List[str] = []
    for raw in names:
        name = str(raw).strip()
        low = name.lower()
        if "://" in name:
            items = [name]
        elif low == "networks":
            items = _network_names()
        elif low in KNOWN_FILES or low == "landmarks":
            items = [low]
        else:
            raise StyleforgeError(f"{name}: not a known file; fetch one of {', '.join(fetchable())} or a URL")
        out += [i for i in items if i not in out]
    if not out:
        raise StyleforgeError("name at least one file to fetch: " + ", ".join(fetchable()))
    return out


def fetch(names: Sequence[str], callback: Optional[Callback] = None) -> List[Fetched]:
    """Download every named file that is not there yet (into the cache; ``landmarks`` into torch's hub folder),
    with progress to ``callback``. The cache is checked to be writable before any download."""
    rep = reporter(callback)
    items = expand(names)
    cache = check_cache_dir()
    out: List[Fetched] = []
    for name in items:
        if name == "landmarks":
            for filename, url, folder in _landmark_files():
                target = folder / filename
                had = target.is_file() and target.stat().st_size > 0
                _check_writable(folder)
                if not had:
                    download(url, target, callback=rep)
                out.append(Fetched(f"landmarks:{filename}", target, not had))
            continue
        known = KNOWN_FILES.get(name)
        filename = known.filename if known else os.path.basename(name.split("?")[0]) or "download"
        had = (cache / filename).is_file() and (cache / filename).stat().st_size > 0
        path = resolve_file(name, allow_download=True, what="file", callback=rep)
        out.append(Fetched(name, path, not had))
    return out


def _check_writable(folder: Path) -> None:
    p = folder
    while not p.exists() and p.parent != p:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise StyleforgeError(f"{folder}: cannot write there ({p} is not a writable folder); set TORCH_HOME to a "
                              "writable folder")
