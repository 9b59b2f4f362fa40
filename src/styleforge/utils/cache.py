"""One cache for weights and networks, and the single helper every tool uses to find a file.

``resolve_file(spec)`` accepts a local path, the name of a model bundled with the package
(``faces32``), a known name (``ffhq``, ``vgg16``...) or a URL. It looks in the given path, then in the
cache (``$STYLEFORGE_CACHE``, default ``~/.cache/styleforge``), and downloads only when the user allows it
(``allow_download=True``, the CLIs' ``--allow-download``, or ``STYLEFORGE_ALLOW_DOWNLOAD=1``), verifying a sha256
when one is known, with its progress reported through a :mod:`~styleforge.utils.progress` callback. Offline, the
error names the file, where to put it, and the URL.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from ..errors import StyleforgeError
from .fileio import atomic_path
from .progress import Callback, reporter


@dataclass(frozen=True)
class KnownFile:
    url: str
    filename: str
    sha256: Optional[str] = None
    what: str = ""


_NV = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained"

# Published files users commonly want. Checksums are filled in where we could verify them; without one the
# download is still atomic and size-checked, and its sha256 is printed so users can pin it.
KNOWN_FILES: Dict[str, KnownFile] = {
    "ffhq": KnownFile(f"{_NV}/ffhq.pkl", "ffhq.pkl", what="FFHQ 1024x1024 StyleGAN2-ADA generator"),
    "metfaces": KnownFile(f"{_NV}/metfaces.pkl", "metfaces.pkl", what="MetFaces 1024x1024"),
    "afhqcat": KnownFile(f"{_NV}/afhqcat.pkl", "afhqcat.pkl", what="AFHQ Cat 512x512"),
    "afhqdog": KnownFile(f"{_NV}/afhqdog.pkl", "afhqdog.pkl", what="AFHQ Dog 512x512"),
    "afhqwild": KnownFile(f"{_NV}/afhqwild.pkl", "afhqwild.pkl", what="AFHQ Wild 512x512"),
    "brecahad": KnownFile(f"{_NV}/brecahad.pkl", "brecahad.pkl", what="BreCaHAD 512x512"),
    "cifar10": KnownFile(f"{_NV}/cifar10.pkl", "cifar10.pkl", what="CIFAR-10 32x32, class-conditional"),
    "vgg16": KnownFile(f"{_NV}/metrics/vgg16.pt", "vgg16.pt", what="VGG16 LPIPS feature network (TorchScript)"),
    "inception": KnownFile(
        f"{_NV}/metrics/inception-2015-12-05.pt", "inception-2015-12-05.pt", what="Inception-v3 FID features"
    ),
    # OpenAI's CLIP ViT-B/32 (TorchScript archive; its URL carries its sha256, which OpenAI's own loader checks)
    "clip": KnownFile(
        "https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt", "ViT-B-32.pt",
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", what="CLIP ViT-B/32 (OpenAI)",
    ),
    # the same file under the name the CLIP loader asks for;
    # CLIP weights by tag, named clip-<model>-<tag> (clip_weights_name); OpenAI's URL carries the file's sha256
    "clip-vit-b-32-openai": KnownFile(
        "https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt", "ViT-B-32.pt",
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        what="OpenAI CLIP ViT-B/32 (TorchScript archive; styleforge reads its tensors only)",
    ),
}


def fetch_command(*names: str) -> str:
    """The command that puts known files (or URLs) into the cache on a machine with internet (``styleforge fetch``):
    what every "file missing" message tells the user to run."""
    return " ".join(["styleforge fetch", *names])


def check_cache_dir() -> Path:
    """The cache folder, checked without creating anything to be a writable folder or one that can be created
    (else one error naming it and ``STYLEFORGE_CACHE``): downloads and computed statistics go there."""
    folder = cache_dir()
    p = folder
    while not p.exists() and p.parent != p:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        why = f"{p} is a file" if not p.is_dir() else f"{p} is not writable"
        raise StyleforgeError(f"{folder}: the styleforge cache cannot be written ({why}); point STYLEFORGE_CACHE "
                              "at a writable folder (on a cluster, one that every node sees)")
    return folder
def clip_weights_name(model: str, tag: str) -> str:
    """The :data:`KNOWN_FILES` name of CLIP weights ``tag`` (``openai``) for ``model`` (``ViT-B-32``; the
    ``-quickgelu`` variant shares its base model's files)."""
    base = model[: -len("-quickgelu")] if model.lower().endswith("-quickgelu") else model
    return f"clip-{base}-{tag}".lower()


def cache_dir() -> Path:
    """The styleforge cache folder (created on demand)."""
    env = os.environ.get("STYLEFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "styleforge"


def downloads_allowed(flag: Optional[bool] = None) -> bool:
    if flag:
        return True
    return os.environ.get("STYLEFORGE_ALLOW_DOWNLOAD", "").strip().lower() in ("1", "true", "yes", "on")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _is_url(s: str) -> bool:
    return urllib.parse.urlparse(s).scheme in ("http", "https")


# Models that ship inside the package (package data), by name: <name>.safetensors in this folder.
BUNDLED_MODELS_DIR = Path(__file__).resolve().parents[1] / "assets" / "models"


def bundled_names() -> list:
    return sorted(p.stem for p in BUNDLED_MODELS_DIR.glob("*.safetensors"))


def resolve_file(spec: str, allow_download: Optional[bool] = None, what: str = "file",
                 callback: Optional[Callback] = None) -> Path:
    """Return a local path for ``spec`` (path, bundled or known name, or URL), downloading only if allowed (the
    download's progress goes to ``callback``)."""
    spec = os.fspath(spec)
    p = Path(spec).expanduser()
    if p.exists():
        return p
    bundled = BUNDLED_MODELS_DIR / f"{spec.lower()}.safetensors"
    if os.sep not in spec and "." not in spec and bundled.is_file():
        return bundled
    known = KNOWN_FILES.get(spec.lower()) if not _is_url(spec) else None
    if known is None and not _is_url(spec):
        names = bundled_names() + sorted(KNOWN_FILES)
        hint = f"; known names: {', '.join(names)}" if os.sep not in spec and "." not in spec else ""
        raise StyleforgeError(f"{spec}: no such {what}{hint}")
    if known is not None:
        url, filename, sha = known.url, known.filename, known.sha256
    else:
        url = spec
        filename = os.path.basename(urllib.parse.urlparse(url).path) or "download"
        sha = None
    target = cache_dir() / filename
    if target.exists() and target.stat().st_size > 0:
        return target
    if not downloads_allowed(allow_download):
        raise StyleforgeError(
            f"{filename} is not in the cache: put it at {target} (or pass its local path), run "
            f"'{fetch_command(spec.lower() if known is not None else url)}' on a machine with internet, or allow the "
            f"download from {url} with {{allow_download}} / STYLEFORGE_ALLOW_DOWNLOAD=1",
            also={"allow_download": "allow_download=True"},
        )
    return download(url, target, sha256=sha, callback=callback)


def download(url: str, target: Path, sha256: Optional[str] = None, timeout: float = 60.0,
             callback: Optional[Callback] = None) -> Path:
    """Download ``url`` to ``target`` atomically, with an optional checksum; progress (a stage named after the
    file, in bytes) goes to ``callback``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
                total = int(r.headers.get("Content-Length") or 0) or None
                with reporter(callback).stage(target.name, total=total, unit="B") as advance:
                    while True:
                        b = r.read(1 << 20)
                        if not b:
                            break
                        out.write(b)
                        advance(len(b))
            if total is not None and tmp.stat().st_size != total:
                raise StyleforgeError(f"{url}: download was cut short; try again")
            digest = sha256_of(tmp)
            if sha256 and digest != sha256:
                raise StyleforgeError(f"{url}: checksum mismatch (got {digest}, expected {sha256}); try again")
    except OSError as e:
        raise StyleforgeError(
            f"{url}: download failed ({getattr(e, 'reason', e)}); download it yourself and put it at {target}"
        ) from None
    return target


def copy_into_cache(src: Path, filename: Optional[str] = None) -> Path:
    """Copy a local file into the cache (used by tools that want a stable location)."""
    dst = cache_dir() / (filename or src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst
