"""The model side of the web UI, without any web framework: networks loaded once, latents, edits, renders, a
result cache, one forward pass at a time, and cancellable projection jobs.

Every request names what to draw as plain data (dicts, as the JSON API receives them), so the same request always
gives the same image and can be cached:

- a **latent**: ``{"seed": 3, "trunc": 0.7, "class": null}`` (z drawn and mapped as official generate.py does),
  ``{"latent": "<id>"}`` (a stored latent, e.g. a projected photo), ``{"w": [[...]]}`` (inline, [w_dim] or
  [num_ws, w_dim]) or ``{"mix": {"row": 85, "col": 55, "layers": "0-3", "trunc": 1}}`` (style mixing: the row
  seed's latents with ``layers`` taken from the column seed, as official style_mixing.py). A network without a
  W space (a baseline: ``G(z, c)`` straight to the image) takes seed latents only, its truncation scaling z
  towards 0 as generate.py's does; everything that needs W is refused (:class:`NoWSpace`, one readable line);
- **edits**: ``[{"direction": "sefa:all:0", "strength": 2.0, "layers": null}, ...]``, added one after the other
  (:func:`styleforge.directions.apply`). Direction ids: ``sefa:<layers>:<k>`` (SeFa factor k of those latent layers),
  ``ganspace:<layers>:<k>`` (GANSpace component k, strength in standard deviations), or the id of a loaded
  direction file (``file:<name>:<k>``).

Work on a network is serialised by a first-come-first-served lock (:class:`FifoLock`): concurrent users queue
instead of running N forward passes at once. A projection job holds it for one optimisation step at a time and
queues again after each, so slider moves keep answering while a photo is projected (on its own copy of the
networks, whose noise maps it changes).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import zoo
from ..directions import Direction, apply, load_directions, parse_layers
from ..directions.mixing import mix_ws
from ..errors import MissingNetworkError, StyleforgeError
from ..images import make_grid, uint8_as_generate
from ..latents import check_truncation, class_label, seed_to_z
from ..utils.cache import bundled_names
from ..utils.runtime import parse_int_list, resolve_device

SEED_MAX = 2**32 - 1  # numpy's RandomState takes seeds 0..2^32-1
NOISE_MODES = ("const", "random", "none")
FACTORS = 16  # SeFa factors / GANSpace components offered per layer range
GANSPACE_SAMPLES = 20_000


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; more is refused with a readable 4xx message before any work."""

    max_seeds: int = 64                  # seeds per generate call (and images per download)
    max_frames: int = 120                # interpolation steps
    max_project_steps: int = 1000        # projection steps
    max_upload_bytes: int = 20 << 20     # a photo or a direction file
    max_network_bytes: int = 1 << 30     # an uploaded checkpoint (--allow-uploads)
    max_photo_pixels: int = 50_000_000   # decoded size of an uploaded photo (about 8K x 6K)
    max_output_pixels: int = 1 << 26     # pixels of one response (grids, frames): 64 M


class LimitError(StyleforgeError):
    """A request over one of the :class:`Limits` (HTTP 413 for bytes, else 400)."""

    def __init__(self, message: str, *, param: Optional[str] = None, too_large: bool = False):
        super().__init__(message, param=param)
        self.too_large = too_large


class NotFound(StyleforgeError):
    """An id (latent, direction, job, network) that this server does not know (HTTP 404)."""


class Forbidden(StyleforgeError):
    """Something this server was not started to allow (HTTP 403)."""


class NoWSpace(StyleforgeError):
    """A request that needs a W space (editing, style mixing, projection, W latents) on a network without one,
    e.g. a baseline (HTTP 400)."""


# a baseline's registered kind -> its model names (unconditional, conditional) as ``train_baseline.py --model``
# knows them (wgan and wgan-gp train the dcgan networks: a checkpoint cannot tell them apart)
BASELINE_KINDS = {"mlp": ("gan", "cgan"), "dcgan": ("dcgan", "cdcgan"), "style": ("dcgan-style", ""),
                  "progan": ("progan", "")}


class FifoLock:
    """A re-entrant lock granted in arrival order (threading.Lock is not fair: a thread that releases and
    re-acquires at once would starve the others)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0
        self._owner: Optional[int] = None
        self._depth = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cond.wait()
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FifoLock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._serving += 1
                self._cond.notify_all()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


class LRU:
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int):
        self.size = size
        self._d: "OrderedDict[Any, Any]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key, default=None):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                self.hits += 1
                return self._d[key]
            self.misses += 1
            return default

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._d

    def __len__(self) -> int:
        return len(self._d)


def size_text(n: int) -> str:
    """Bytes in words: ``512 KiB``, ``1.5 MiB``."""
    return f"{n / 2**20:.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def png_bytes(img: np.ndarray) -> bytes:
    """An HWC uint8 image (C = 1 or 3) as PNG bytes."""
    import PIL.Image

    buf = io.BytesIO()
    PIL.Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def canonical(obj: Any) -> str:
    """A request as a stable cache key."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# ---------------------------------------------------------------------------------------------------------------------
# Networks

@dataclass
class Network:
    """One loaded network and what is derived from it once (SeFa factors per layer range, GANSpace's PCA, the
    projector's W statistics)."""

    key: str
    label: str
    G: torch.nn.Module
    D: Optional[torch.nn.Module]
    path: Optional[Path]
    _sefa: Dict[str, List[Direction]] = field(default_factory=dict)
    _pca: Any = None
    _w_stats: Any = None

    @property
    def w_space(self) -> bool:
        """Whether G maps z to a W space (a StyleGAN generator); a baseline (``styleforge.baselines``) maps z
        straight to an image, ``G(z, c)``."""
        return bool(getattr(self.G, "has_w_space", False))

    @property
    def name(self) -> str:
        """How messages name the network (an upload by its file name, not its key)."""
        return self.label if self.key.startswith("upload:") else self.key

    def model_text(self) -> str:
        """What kind of network this is, in words: ``a cdcgan baseline`` (from the registered arch)."""
        if self.w_space:
            return "a StyleGAN generator"
        parts = str(getattr(self.G, "arch", "")).split(".")
        conditional = bool(getattr(self.G, "c_dim", 0))
        if len(parts) == 3 and parts[0] == "baselines":
            names = BASELINE_KINDS.get(parts[1])
            if names is not None and names[conditional]:
                return f"a {names[conditional]} baseline"
            return f"a {'conditional ' if conditional else ''}{(names or (parts[1],))[0]} baseline"
        return "a generator that maps z straight to images"

    def require_w(self, what: str) -> None:
        """Refuse (a 400 with one readable line) what needs a W space on a network without one."""
        if not self.w_space:
            raise NoWSpace(f"{{name}} {self.name} has no W space ({self.model_text()}): {what} needs a StyleGAN "
                           "network", param="network", label="network")

    def info(self) -> Dict[str, Any]:
        G = self.G
        c_dim = int(getattr(G, "c_dim", 0))
        out = {"network": self.key, "label": self.label, "resolution": int(G.img_resolution),
               "channels": int(G.img_channels), "z_dim": int(G.z_dim), "c_dim": c_dim,
               "classes": list(range(c_dim)), "w_space": self.w_space, "model": self.model_text(),
               "has_discriminator": self.D is not None}
        if not self.w_space:
            return {**out, "num_ws": None, "w_dim": None, "layer_presets": [], "factors": 0, "truncation": "z",
                    "note": f"{self.name} has no W space ({self.model_text()}): seeds"
                            + (", classes" if c_dim else "") + " and interpolation in Z work, truncation scales z "
                            "towards 0; editing, style mixing and photo projection need a StyleGAN network"}
        num_ws = int(G.num_ws)
        presets = ["all", "0-1"]
        if num_ws > 2:
            presets.append(f"2-{min(5, num_ws - 1)}")
        if num_ws > 6:
            presets.append(f"6-{num_ws - 1}")
        return {**out, "num_ws": num_ws, "w_dim": int(G.w_dim), "layer_presets": presets,
                "factors": min(FACTORS, int(G.w_dim)), "truncation": "w"}

    def sefa(self, layers: str) -> List[Direction]:
        from ..directions.sefa import sefa

        self.require_w("SeFa")

        spec = _layers_key(layers, self.G.num_ws)
        if spec not in self._sefa:
            self._sefa[spec] = sefa(self.G, spec, top=min(FACTORS, self.G.w_dim)).directions
        return self._sefa[spec]

    def ganspace(self, layers: str) -> List[Direction]:
        from ..directions.ganspace import ganspace_directions, pca_w

        self.require_w("GANSpace")

        spec = _layers_key(layers, self.G.num_ws)
        if self._pca is None:
            self._pca = pca_w(self.G, GANSPACE_SAMPLES, min(FACTORS, self.G.w_dim))
        return ganspace_directions(self._pca, None if spec == "all" else spec, self.G.num_ws)

    def w_stats(self):
        from ..project.projector import compute_w_stats

        self.require_w("photo projection")

        if self._w_stats is None:
            self._w_stats = compute_w_stats(self.G)
        return self._w_stats


def _layers_key(layers: Optional[str], num_ws: int) -> str:
    from ..directions import layers_text

    return layers_text(parse_layers(layers or "all", num_ws), num_ws)


# ---------------------------------------------------------------------------------------------------------------------
# Projection jobs

class Cancelled(Exception):
    pass


@dataclass
class ProjectJob:
    id: str
    network: str
    total: int
    state: str = "queued"  # queued | projecting | done | failed | cancelled
    step: int = 0
    dist: Optional[float] = None
    error: Optional[str] = None
    latent: Optional[str] = None
    loss: str = ""
    notes: List[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    seconds: Optional[float] = None
    target_png: bytes = b""
    result_png: bytes = b""
    cancel_event: threading.Event = field(default_factory=threading.Event)

    def status(self) -> Dict[str, Any]:
        return {"job": self.id, "network": self.network, "state": self.state, "step": self.step, "total": self.total,
                "dist": self.dist, "error": self.error, "latent": self.latent, "loss": self.loss,
                "notes": list(self.notes), "seconds": self.seconds}


# ---------------------------------------------------------------------------------------------------------------------
# The engine

class Engine:
    """Everything the UI and the API compute, behind one lock. ``network``: the default network spec (None: the
    bundled default model); ``preloaded``: networks given as modules, by key (a benchmark's in-memory network);
    ``threads``: torch's CPU threads (process-wide; None leaves torch's default). On a busy CPU one thread is much
    faster for small networks: faces32 takes 8 ms per image with 1 thread and 100-600 ms with 2 when other
    processes load both cores (their threads wait for each other)."""

    def __init__(self, network: Optional[str] = None, device: str = "auto", allow_uploads: bool = False,
                 allow_download: Optional[bool] = False, limits: Limits = Limits(),
                 directions: Sequence[str] = (), preloaded: Optional[Dict[str, torch.nn.Module]] = None,
                 cache_size: int = 256, max_networks: int = 3, threads: Optional[int] = None):
        self.device = resolve_device(device)
        if threads is not None:  # process-wide: torch's CPU threads for every forward pass
            if threads < 1:
                raise StyleforgeError("must be at least 1", param="threads", value=threads)
            torch.set_num_threads(int(threads))
        self.allow_uploads = allow_uploads
        self.allow_download = allow_download
        self.limits = limits
        self.lock = FifoLock()
        self._load_lock = threading.Lock()
        self._nets: "OrderedDict[str, Network]" = OrderedDict()
        self._pinned: Dict[str, Network] = {}
        self.max_networks = max_networks
        self.cache = LRU(cache_size)
        self.latents = LRU(256)       # id -> (network key, ws [1, num_ws, w_dim] float32)
        self.directions: "OrderedDict[str, Direction]" = OrderedDict()
        self.jobs: "OrderedDict[str, ProjectJob]" = OrderedDict()
        self.upload_dir = Path(tempfile.mkdtemp(prefix="styleforge-ui-"))  # uploads live while the engine does
        weakref.finalize(self, shutil.rmtree, str(self.upload_dir), True)
        for key, G in (preloaded or {}).items():
            G = G.eval().requires_grad_(False).to(self.device)
            self._pinned[key] = Network(key, f"{key} (in memory)", G, None, None)
        if network is None and self._pinned:
            self.default_network = next(iter(self._pinned))
        else:
            self.default_network = self._key(network)
            self.network(self.default_network)  # loaded now: a bad --network fails at start, not on the first request
        G = self.network().G
        if directions:
            self.network().require_w("loading direction files")
        for spec in directions:  # given at start: checked against the default network now
            for d in self.add_direction_file(Path(spec), name=Path(spec).stem):
                self.directions[d["id"]].for_network(G.num_ws, G.w_dim, source=str(spec))

    # -- networks ----------------------------------------------------------------------------------------------
    @staticmethod
    def _key(spec: Optional[str]) -> str:
        if spec is None or not str(spec).strip():
            from ..assets import bundled_model_path, default_network_path

            bundled = bundled_model_path()
            return bundled.stem if bundled is not None else str(default_network_path())
        return str(spec).strip()

    def network(self, spec: Optional[str] = None) -> Network:
        """The network ``spec`` (a bundled name, a path on this machine, an uploaded network's key; None: the
        default), loaded once and kept (the last ``max_networks`` used)."""
        key = self.default_network if spec is None or not str(spec).strip() else str(spec).strip()
        if key in self._pinned:
            return self._pinned[key]
        with self._load_lock:
            if key in self._nets:
                self._nets.move_to_end(key)
                return self._nets[key]
            if key.startswith("upload:"):
                raise NotFound(f"no uploaded network {key!r} on this server (uploads are kept while it runs); "
                               "upload it again", param="network")
            try:
                net = self._load(key, key)
            except StyleforgeError as e:  # name the field: the page marks its network picker
                if e.param is not None:
                    raise
                raise StyleforgeError(str(e), param="network") from None
            self._nets[key] = net
            self._evict()
            return net

    def _evict(self) -> None:
        """Forget the least recently used networks beyond ``max_networks`` (never the default one)."""
        for old in [k for k in self._nets if k != self.default_network]:
            if len(self._nets) <= self.max_networks:
                break
            self._nets.pop(old)

    def _load(self, key: str, spec: str, label: Optional[str] = None) -> Network:
        """Read G (and D, for the projector's discriminator loss) through the zoo: official pickles only through
        the safe reader, nothing in a file is executed."""
        try:
            bundle = zoo.load_networks(spec, ("G", "D"), self.device, self.allow_download)
            G, D = bundle.networks["G"], bundle.networks["D"]
        except MissingNetworkError:
            bundle = zoo.load_networks(spec, ("G",), self.device, self.allow_download)
            G, D = bundle.networks["G"], None
        G = G.eval().requires_grad_(False)
        if D is not None:
            D = D.eval().requires_grad_(False)
        name = label or (f"{key} (bundled)" if key in bundled_names() else key)
        return Network(key, name, G, D, bundle.path)

    def add_network_upload(self, data: bytes, filename: str = "") -> Network:
        """An uploaded checkpoint (only with ``allow_uploads``), read by the safe reader like any network file."""
        if not self.allow_uploads:
            raise Forbidden("uploading networks is off on this server; start it with --allow-uploads, or give a "
                            "path on the server", param="network")
        if len(data) > self.limits.max_network_bytes:
            raise LimitError(f"the network file is {size_text(len(data))}, at most "
                             f"{size_text(self.limits.max_network_bytes)}", param="network", too_large=True)
        key = "upload:" + hashlib.sha256(data).hexdigest()[:12]
        with self._load_lock:
            if key in self._nets:
                return self._nets[key]
            path = self.upload_dir / key.replace(":", "-")
            path.write_bytes(data)
            try:
                net = self._load(key, str(path), label=f"{Path(filename).name or 'upload'} (uploaded)")
            except StyleforgeError as e:
                path.unlink(missing_ok=True)
                raise StyleforgeError(f"{Path(filename).name or 'the upload'}: " + str(e).replace(str(path), "")
                                      .lstrip(": "), param="network") from None
            self._nets[key] = net
            self._evict()
            return net

    # -- latents -----------------------------------------------------------------------------------------------
    def _seed_ws(self, net: Network, seed: Any, trunc: float, class_idx: Optional[int]) -> torch.Tensor:
        net.require_w("a W latent")
        seed = check_seed(seed)
        check_truncation(float(trunc))
        G = net.G
        c = class_label(G, class_idx, self.device)
        z = torch.from_numpy(seed_to_z(seed, G.z_dim)[None]).to(self.device)
        with torch.no_grad():
            return G.mapping(z, c, truncation_psi=float(trunc))

    def ws_of(self, net: Network, spec: Dict[str, Any]) -> torch.Tensor:
        """[1, num_ws, w_dim] on the device for one latent spec (see the module doc)."""
        G = net.G
        if not isinstance(spec, dict):
            raise StyleforgeError("a latent is an object: {seed, trunc}, {latent}, {w} or {mix}", param="latent")
        given = [k for k in ("seed", "latent", "w", "mix") if spec.get(k) is not None]
        if len(given) != 1:
            raise StyleforgeError("give exactly one of seed, latent, w or mix", param="latent")
        kind = given[0]
        net.require_w({"seed": "a W latent", "latent": "a stored W latent", "w": "a W latent",
                       "mix": "style mixing"}[kind])
        trunc = spec.get("trunc", 1.0)
        if kind == "seed":
            return self._seed_ws(net, spec["seed"], trunc if trunc is not None else 1.0, spec.get("class"))
        if kind == "latent":
            got = self.latents.get(str(spec["latent"]))
            if got is None:
                raise NotFound(f"no stored latent {spec['latent']!r} (latents live while the server runs)",
                               param="latent")
            if got[0] != net.key:
                raise StyleforgeError(f"latent {spec['latent']!r} belongs to network {got[0]}, not {net.key}",
                                      param="latent")
            return torch.from_numpy(got[1]).to(self.device)
        if kind == "w":
            try:
                w = np.asarray(spec["w"], dtype=np.float32)
            except (TypeError, ValueError):
                raise StyleforgeError("must be a list of numbers, [w_dim] or [num_ws, w_dim]", param="w") from None
            if w.ndim == 3 and w.shape[0] == 1:
                w = w[0]
            if w.ndim == 1 and w.shape[0] == G.w_dim:
                w = np.repeat(w[None], G.num_ws, axis=0)
            if w.shape != (G.num_ws, G.w_dim):
                raise StyleforgeError(f"has shape {list(w.shape)}; this network needs [{G.w_dim}] or "
                                      f"[{G.num_ws}, {G.w_dim}]", param="w")
            if not np.isfinite(w).all():
                raise StyleforgeError("holds NaN or infinite values", param="w")
            return torch.from_numpy(w[None]).to(self.device)
        mix = spec["mix"]
        if not isinstance(mix, dict) or mix.get("row") is None or mix.get("col") is None:
            raise StyleforgeError("needs row and col seeds, and layers (e.g. 0-3)", param="mix")
        t = mix.get("trunc", trunc if trunc is not None else 1.0)
        layers = parse_layers(mix.get("layers") or "all", G.num_ws, param="layers")
        # official style_mixing: mapped without truncation, then w_avg + (w - w_avg) * psi by hand
        rows = self._seed_ws(net, mix["row"], 1.0, mix.get("class"))
        cols = self._seed_ws(net, mix["col"], 1.0, mix.get("class"))
        w_avg = G.mapping.w_avg
        rows, cols = (w_avg + (x - w_avg) * float(t) for x in (rows, cols))
        return mix_ws(rows[0], cols[0], layers)[None]

    def store_latent(self, net: Network, ws: np.ndarray, name: str = "") -> str:
        net.require_w("a W latent")
        lid = (name or "w") + "-" + uuid.uuid4().hex[:10]
        self.latents.put(lid, (net.key, np.asarray(ws, dtype=np.float32).reshape(1, net.G.num_ws, net.G.w_dim)))
        return lid

    # -- directions --------------------------------------------------------------------------------------------
    def direction(self, net: Network, spec: Any) -> Direction:
        if isinstance(spec, dict) and "vector" in spec:
            try:
                return Direction(np.asarray(spec["vector"], dtype=np.float32), name="inline")
            except (TypeError, ValueError):
                raise StyleforgeError("vector must be a list of numbers", param="direction") from None
        sid = str(spec)
        if sid in self.directions:
            return self.directions[sid]
        method, _, rest = sid.partition(":")
        if method in ("sefa", "ganspace"):
            layers, _, k = rest.rpartition(":")
            if not k.isdigit():
                raise StyleforgeError(f"{sid!r}: write {method}:<layers>:<k>, e.g. {method}:all:0", param="direction")
            dirs = net.sefa(layers) if method == "sefa" else net.ganspace(layers)
            if int(k) >= len(dirs):
                raise StyleforgeError(f"{sid!r}: factor {k} out of range 0-{len(dirs) - 1}", param="direction")
            return dirs[int(k)]
        raise NotFound(f"unknown direction {sid!r}: use sefa:<layers>:<k>, ganspace:<layers>:<k> or a loaded "
                       f"file's id ({', '.join(list(self.directions)[:5]) or 'none loaded'})", param="direction")

    def add_direction_file(self, path: Path, name: str = "") -> List[Dict[str, Any]]:
        """Load the directions of a ``.npy``/``.npz`` file (read without unpickling) and give each an id."""
        dirs = load_directions(path)
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in (name or path.stem))[:40] or "file"
        out = []
        for k, d in enumerate(dirs):
            did = f"file:{stem}:{k}"
            self.directions[did] = d
            out.append({"id": did, "name": d.name or f"{stem}:{k}", "origin": d.origin, "scale": d.scale,
                        "layers": None if d.layers is None else list(d.layers), "w_dim": d.w_dim})
        return out

    def add_direction_upload(self, data: bytes, filename: str) -> List[Dict[str, Any]]:
        self.check_upload_size(data, "direction")
        suffix = Path(filename or "").suffix.lower()
        if suffix not in (".npy", ".npz"):
            raise StyleforgeError(f"{filename or 'the upload'}: a direction file is .npy or .npz", param="direction")
        with tempfile.TemporaryDirectory(dir=self.upload_dir) as tmp:
            p = Path(tmp) / f"direction{suffix}"
            p.write_bytes(data)
            try:
                return self.add_direction_file(p, name=Path(filename).stem)
            except StyleforgeError as e:
                raise StyleforgeError(str(e).replace(str(p), Path(filename).name), param="direction") from None

    def check_upload_size(self, data: bytes, param: str) -> None:
        if len(data) > self.limits.max_upload_bytes:
            raise LimitError(f"the upload is {size_text(len(data))}, at most {size_text(self.limits.max_upload_bytes)}",
                             param=param, too_large=True)

    def edited(self, net: Network, ws: torch.Tensor, edits: Sequence[Dict[str, Any]]) -> torch.Tensor:
        if edits:
            net.require_w("editing")
        for e in edits or ():
            if not isinstance(e, dict) or e.get("direction") is None:
                raise StyleforgeError("each edit is {direction, strength, layers}", param="edits")
            s = float(e.get("strength", 0.0) or 0.0)
            if not np.isfinite(s):
                raise StyleforgeError("must be a finite number", param="strength", value=s)
            d = self.direction(net, e["direction"])
            if s != 0.0:
                ws = apply(ws, d, s, e.get("layers"))
        return ws

    # -- rendering ---------------------------------------------------------------------------------------------
    def synthesize(self, net: Network, ws: torch.Tensor, noise_mode: str = "const",
                   seeds: Optional[Sequence[int]] = None) -> np.ndarray:
        """[N, H, W, C] uint8 as official generate.py converts; noise ``random`` is seeded per image with
        ``torch.manual_seed(seed)`` (the image's seed, else 0), as generate.py does."""
        net.require_w("a W latent")
        check_noise_mode(noise_mode)
        self.check_output(len(ws), net)
        out = []
        with self.lock, torch.no_grad():
            if noise_mode == "random":
                for i in range(len(ws)):
                    torch.manual_seed(int(seeds[i]) if seeds is not None else 0)
                    out.append(uint8_as_generate(net.G.synthesis(ws[i: i + 1], noise_mode="random")))
            else:
                for i in range(0, len(ws), 8):
                    out.append(uint8_as_generate(net.G.synthesis(ws[i: i + 8], noise_mode=noise_mode)))
        return np.concatenate(out)

    def z_images(self, net: Network, z: np.ndarray, c: Optional[torch.Tensor], trunc: float = 1.0) -> np.ndarray:
        """[N, H, W, C] uint8 of a network without a W space: ``G(z, c, truncation_psi=trunc)`` as generate.py
        calls it (z [N, z_dim] as drawn from the seeds; its truncation scales z towards 0); ``c``: None, one label
        [1, c_dim] for all, or one per latent [N, c_dim] (soft labels between classes too)."""
        check_truncation(float(trunc))
        self.check_output(len(z), net)
        out = []
        with self.lock, torch.no_grad():
            for i in range(0, len(z), 8):
                zb = torch.from_numpy(np.ascontiguousarray(z[i: i + 8])).to(self.device)
                cb = None if c is None else (c.repeat(len(zb), 1) if len(c) == 1 else c[i: i + 8])
                out.append(uint8_as_generate(net.G(zb, cb, truncation_psi=float(trunc))))
        return np.concatenate(out)

    def _seed_only(self, net: Network, latent: Any) -> int:
        """The seed of a ``{seed, trunc, class}`` latent, the only kind a network without a W space draws; any
        other latent is refused with what it needs (a W space, or one latent)."""
        given = [k for k in ("seed", "latent", "w", "mix") if isinstance(latent, dict) and latent.get(k) is not None]
        if given != ["seed"]:
            self.ws_of(net, latent)  # raises: not one latent, or a W latent / style mixing on a z-only network
        return check_seed(latent["seed"])

    def check_output(self, n: int, net: Network) -> None:
        px = n * net.G.img_resolution ** 2
        if px > self.limits.max_output_pixels:
            raise LimitError(f"{n} images of {net.G.img_resolution}x{net.G.img_resolution} are "
                             f"{px / 2**20:.0f} M pixels, at most {self.limits.max_output_pixels / 2**20:.0f} M per "
                             "request; ask for fewer", param="seeds")

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        k = canonical(key)
        hit = self.cache.get(k)
        if hit is not None:
            return hit
        value = make()
        self.cache.put(k, value)
        return value

    def render(self, network: Optional[str], latent: Dict[str, Any], edits: Sequence[Dict[str, Any]] = (),
               noise_mode: str = "const") -> bytes:
        """One image (PNG bytes) of a latent with edits; cached by request."""
        net = self.network(network)
        if not net.w_space:  # a seed, no edits: the image /api/generate makes
            seed = self._seed_only(net, latent)
            if edits:
                net.require_w("editing")
            trunc = latent.get("trunc")
            return self.generate(net.key, [seed], 1.0 if trunc is None else trunc, latent.get("class"),
                                 noise_mode)[0]

        def make():
            with self.lock:  # mapping, directions (SeFa, GANSpace on first use) and synthesis: one job at a time
                ws = self.edited(net, self.ws_of(net, latent), edits)
                seed = latent.get("seed") if isinstance(latent, dict) else None
                img = self.synthesize(net, ws, noise_mode, [seed or 0])[0]
            return png_bytes(img)

        return self.cached(("render", net.key, latent, list(edits or ()), noise_mode), make)

    def generate(self, network: Optional[str], seeds: Sequence[int], trunc: float = 1.0,
                 class_idx: Optional[int] = None, noise_mode: str = "const") -> List[bytes]:
        """PNG bytes per seed, as official generate.py makes them (each seed mapped on its own; a network without a
        W space gets ``G(z, c)``, its truncation scaling z)."""
        net = self.network(network)
        seeds = check_seeds(seeds, self.limits)
        check_noise_mode(noise_mode)
        check_truncation(float(trunc))
        c = None if net.w_space else class_label(net.G, class_idx, self.device)  # checked before any work

        def one(s):
            def make():
                if not net.w_space:  # (no noise inputs: noise_mode changes nothing)
                    return png_bytes(self.z_images(net, seed_to_z(s, net.G.z_dim)[None], c, trunc)[0])
                with self.lock:
                    img = self.synthesize(net, self._seed_ws(net, s, trunc, class_idx), noise_mode, [s])[0]
                return png_bytes(img)
            return self.cached(("generate", net.key, s, trunc, class_idx, noise_mode), make)

        self.check_output(len(seeds), net)
        return [one(s) for s in seeds]

    def grid(self, pngs: Sequence[bytes], cols: Optional[int] = None) -> bytes:
        import PIL.Image

        arrs = []
        for b in pngs:
            a = np.asarray(PIL.Image.open(io.BytesIO(b)))
            arrs.append(a[:, :, None] if a.ndim == 2 else a)
        return png_bytes(make_grid(arrs, cols))

    def latents_of(self, network: Optional[str], items: Sequence[Dict[str, Any]]) -> Tuple[Network, np.ndarray]:
        """[N, num_ws, w_dim] float32 for items ``{latent, edits}``; for a network without a W space the seeds'
        z [N, z_dim] as drawn (before truncation; seed latents without edits only)."""
        net = self.network(network)
        if not net.w_space:
            zs = []
            for it in items:
                seed = self._seed_only(net, it.get("latent") or {})
                if it.get("edits"):
                    net.require_w("editing")
                zs.append(seed_to_z(seed, net.G.z_dim))
            return net, np.stack(zs).astype(np.float32)
        with self.lock:
            ws = [self.edited(net, self.ws_of(net, it.get("latent") or {}), it.get("edits") or ()) for it in items]
        return net, torch.cat(ws).cpu().numpy().astype(np.float32)

    def interpolate(self, network: Optional[str], start: Dict[str, Any], end: Dict[str, Any], steps: int,
                    space: Optional[str] = None, noise_mode: str = "const") -> Tuple[np.ndarray, np.ndarray, str]:
        """(frames [T, H, W, C] uint8, their latents [T, num_ws, w_dim], the space): slerp in Z between two
        seeds (``space`` z, the default for two seeds), lerp in W / W+ otherwise. A network without a W space:
        slerp in Z between two seeds only (latents [T, z_dim]); a conditional one takes each end's class (one
        end's class serves both), the labels lerped between two classes."""
        net = self.network(network)
        with self.lock:
            return self._interpolate(net, start, end, steps, space, noise_mode)

    def _interpolate(self, net: Network, start: Dict[str, Any], end: Dict[str, Any], steps: int,
                     space: Optional[str], noise_mode: str) -> Tuple[np.ndarray, np.ndarray, str]:
        from ..project.interpolate import interpolate_latents, lerp

        if not 2 <= int(steps) <= self.limits.max_frames:
            raise LimitError(f"use 2 to {self.limits.max_frames} frames", param="steps")
        self.check_output(int(steps), net)
        if not net.w_space:
            return self._interpolate_z(net, start, end, int(steps), space)
        both_seeds = all(isinstance(e, dict) and e.get("seed") is not None and len(
            [k for k in ("latent", "w", "mix") if e.get(k) is not None]) == 0 for e in (start, end))
        if space not in (None, "z", "w", "w+"):
            raise StyleforgeError("use z, w or w+", param="space", value=repr(space))
        if space == "z" and not both_seeds:
            raise StyleforgeError("z needs seeds at both ends", param="space")
        if (space in (None, "z")) and both_seeds and start.get("class") is None and end.get("class") is None and \
                not getattr(net.G, "c_dim", 0):
            check_seed(start["seed"]), check_seed(end["seed"])
            trunc = float(start.get("trunc", 1.0) if start.get("trunc") is not None else 1.0)
            it = interpolate_latents(net.G, int(steps), "z", from_seed=int(start["seed"]), to_seed=int(end["seed"]),
                                     truncation_psi=trunc)
            ws, used = it.ws, "z"
        else:
            a, b = (self.ws_of(net, e)[0].cpu().numpy().astype(np.float64) for e in (start, end))
            same = all(np.array_equal(e, np.broadcast_to(e[:1], e.shape)) for e in (a, b))
            used = space if space in ("w", "w+") else ("w" if same else "w+")
            if used == "w" and not same:
                raise StyleforgeError("w: an end is a W+ latent (its layers differ); use w+", param="space")
            t = np.linspace(0.0, 1.0, int(steps))
            ws = (lerp(a[0], b[0], t)[:, None, :].repeat(net.G.num_ws, axis=1) if used == "w" else lerp(a, b, t))
            ws = ws.astype(np.float32)
        frames = self.synthesize(net, torch.from_numpy(np.ascontiguousarray(ws)).to(self.device), noise_mode)
        return frames, ws, used

    def _interpolate_z(self, net: Network, start: Dict[str, Any], end: Dict[str, Any], steps: int,
                       space: Optional[str]) -> Tuple[np.ndarray, np.ndarray, str]:
        from ..project.interpolate import lerp, slerp

        if space not in (None, "z"):
            if space not in ("w", "w+"):
                raise StyleforgeError("use z, w or w+", param="space", value=repr(space))
            net.require_w(f"interpolation in {space.upper()}")
        a, b = self._seed_only(net, start), self._seed_only(net, end)
        trunc = start.get("trunc")
        t = np.linspace(0.0, 1.0, steps)
        z = slerp(seed_to_z(a, net.G.z_dim), seed_to_z(b, net.G.z_dim), t)
        ca, cb = start.get("class"), end.get("class")
        c = None
        if getattr(net.G, "c_dim", 0):
            ca, cb = (cb if ca is None else ca), (ca if cb is None else cb)
            la, lb = (class_label(net.G, k, "cpu")[0].numpy() for k in (ca, cb))
            c = torch.from_numpy(lerp(la, lb, t).astype(np.float32)).to(self.device)
        else:
            class_label(net.G, ca if ca is not None else cb, self.device)  # a class here: warned, ignored
        frames = self.z_images(net, z, c, 1.0 if trunc is None else float(trunc))
        return frames, z.astype(np.float32), "z"

    # -- projection --------------------------------------------------------------------------------------------
    def prepare_photo(self, net: Network, data: bytes, filename: str = "photo", align: bool = True
                      ) -> np.ndarray:
        """An uploaded photo as the projector's target ([H, W, C] uint8 at the network's resolution): decoded
        (size checked first), FFHQ-aligned with dlib when ``align`` (a photo without a face is refused), else
        centre-cropped and resized as the official projector does."""
        import PIL.Image

        from ..images import read_image
        from ..project.batch import load_target_image

        net.require_w("photo projection")
        self.check_upload_size(data, "photo")
        name = Path(filename or "photo").name
        try:
            with PIL.Image.open(io.BytesIO(data)) as probe:
                w, h = probe.size
            if w * h > self.limits.max_photo_pixels:
                raise LimitError(f"{name}: {w}x{h} pixels, at most {self.limits.max_photo_pixels / 1e6:.0f} M; "
                                 "scale it down", param="photo", too_large=True)
            img = read_image(io.BytesIO(data), "RGB")
        except StyleforgeError:
            raise
        except Exception as e:  # PIL: UnidentifiedImageError, truncated files, decompression bombs
            why = "not an image Pillow can read" if isinstance(e, PIL.UnidentifiedImageError) else type(e).__name__
            raise StyleforgeError(f"{name}: not a readable image ({why}); upload a PNG or JPEG photo",
                                  param="photo") from None
        res = net.G.img_resolution
        with tempfile.TemporaryDirectory(dir=self.upload_dir) as tmp:
            src = Path(tmp) / "photo.png"
            if align:
                from ..align.batch import default_transform_size
                from ..align.ffhq import align_face
                from ..align.landmarks import get_detector

                try:
                    det = get_detector("dlib")
                except ImportError:
                    raise StyleforgeError("aligning photos needs dlib: pip install 'styleforge[align]'; or untick "
                                          "align for a photo that is already aligned", param="align") from None
                rgb = np.asarray(img, dtype=np.uint8)
                faces = det.detect(rgb)
                if not faces:
                    raise StyleforgeError(f"{name}: no face found; upload a photo with a face in it, or untick "
                                          "align to project the whole photo", param="photo")
                aligned, _ = align_face(rgb, faces[0].landmarks68, output_size=res,
                                        transform_size=default_transform_size(res))
                PIL.Image.fromarray(aligned).save(src)
            else:
                img.save(src)
            target, _ = load_target_image(src, res, net.G.img_channels)
        return target

    def start_projection(self, network: Optional[str], target: np.ndarray, steps: int = 200, seed: int = 303,
                         space: str = "w") -> ProjectJob:
        """Project ``target`` in a background thread (cancellable with :meth:`cancel`); the result is stored
        as a latent whose id is in the job's status."""
        from ..project.projector import ProjectorConfig

        net = self.network(network)
        net.require_w("photo projection")
        if not 1 <= int(steps) <= self.limits.max_project_steps:
            raise LimitError(f"use 1 to {self.limits.max_project_steps} steps", param="steps")
        ProjectorConfig(num_steps=int(steps), space=space).validate()
        job = ProjectJob(uuid.uuid4().hex[:12], net.key, int(steps))
        job.target_png = png_bytes(target)
        self.jobs[job.id] = job
        while len(self.jobs) > 32:
            old = next(iter(self.jobs))
            if self.jobs[old].state in ("queued", "projecting"):
                break
            self.jobs.pop(old)
        threading.Thread(target=self._project, args=(job, net, target, int(steps), seed, space), daemon=True,
                         name=f"project-{job.id}").start()
        return job

    def _project(self, job: ProjectJob, net: Network, target: np.ndarray, steps: int, seed: int, space: str) -> None:
        from ..project.batch import build_feature_net
        from ..project.projector import project

        held = False

        def notes(ev):
            if getattr(ev, "kind", "") == "note" and ev.message is not None:
                job.notes.append(str(ev.message))

        def step_cb(step, total, dist):
            nonlocal held
            job.step, job.dist = step + 1, float(dist.mean())
            self.lock.release()  # let queued renders through between steps
            held = False
            if job.cancel_event.is_set():
                raise Cancelled()
            self.lock.acquire()
            held = True

        t0 = time.perf_counter()
        try:
            self.lock.acquire()
            held = True
            if job.cancel_event.is_set():
                raise Cancelled()
            job.state = "projecting"
            stats = net.w_stats()
            # its own copies: the projector replaces the noise maps while renders go on between its steps
            G = copy.deepcopy(net.G)
            D = copy.deepcopy(net.D) if net.D is not None else None
            loss = None if D is not None else "pixel"
            fnet = build_feature_net(loss, D=D, device=self.device, callback=notes)
            job.loss = type(fnet).__name__
            res = project(G, np.array(target.transpose(2, 0, 1)[None]), fnet, seeds=seed,
                          num_steps=steps, space=space, stats=stats, callback=step_cb)
            ws = res.w.numpy()
            job.latent = self.store_latent(net, ws, "proj")
            if not held:
                self.lock.acquire()
                held = True
            with torch.no_grad():
                job.result_png = png_bytes(uint8_as_generate(
                    net.G.synthesis(torch.from_numpy(ws).to(self.device), noise_mode="const"))[0])
            job.state = "done"
        except Cancelled:
            job.state = "cancelled"
        except StyleforgeError as e:
            job.state, job.error = "failed", str(e)
        except Exception as e:  # a bug or out of memory: the job fails, the server goes on
            job.state, job.error = "failed", f"{type(e).__name__}: {e}"
        finally:
            job.seconds = time.perf_counter() - t0
            if held:
                self.lock.release()

    def job(self, job_id: str) -> ProjectJob:
        if job_id not in self.jobs:
            raise NotFound(f"no projection job {job_id!r}", param="job")
        return self.jobs[job_id]

    def cancel(self, job_id: str) -> ProjectJob:
        job = self.job(job_id)
        job.cancel_event.set()
        return job

    def info(self, network: Optional[str] = None) -> Dict[str, Any]:
        net = self.network(network)
        return {**net.info(), "device": str(self.device), "bundled": bundled_names(),
                "editable": editable_bundled_names(),
                "default_network": self.default_network, "allow_uploads": self.allow_uploads,
                "directions": [{"id": k, "name": d.name or k, "w_dim": d.w_dim, "scale": d.scale}
                               for k, d in self.directions.items()],
                "limits": {k: getattr(self.limits, k) for k in self.limits.__dataclass_fields__}}


def editable_bundled_names() -> List[str]:
    """The bundled models with a W space (StyleGAN generators: every tool of the UI works on them), told from each
    file's metadata without loading it. The UI offers every bundled model (:func:`bundled_names`); the
    baselines (``dcgan-mnist``, ``cdcgan-mnist``) generate and interpolate in Z, and are not in this list."""
    from safetensors import safe_open

    from ..utils.cache import BUNDLED_MODELS_DIR

    out = []
    for name in bundled_names():
        try:
            with safe_open(str(BUNDLED_MODELS_DIR / f"{name}.safetensors"), "pt") as f:
                nets = json.loads((f.metadata() or {}).get("styleforge", "{}")).get("networks", {})
            arch = (nets.get("G_ema") or nets.get("G") or {}).get("arch", "")
        except Exception:  # unreadable metadata: offer it, loading will say what is wrong
            arch = "stylegan2"
        if arch.startswith("stylegan2"):
            out.append(name)
    return out


def check_noise_mode(noise_mode: Any) -> None:
    if noise_mode not in NOISE_MODES:
        raise StyleforgeError("use const, random or none", param="noise_mode", value=repr(noise_mode))


def check_seed(seed: Any) -> int:
    try:
        s = int(seed)
        if s != seed and not isinstance(seed, str):
            raise ValueError
    except (TypeError, ValueError):
        raise StyleforgeError(f"must be a whole number 0..{SEED_MAX}", param="seed", value=seed) from None
    if not 0 <= s <= SEED_MAX:
        raise StyleforgeError(f"out of range: seeds are 0..{SEED_MAX}", param="seed", value=seed)
    return s


def check_seeds(seeds: Any, limits: Limits) -> List[int]:
    """Seeds from a list or ``'0-7,12'``, each 0..2^32-1, at most ``limits.max_seeds``."""
    if isinstance(seeds, str):
        parsed = parse_int_list(seeds, "seeds")
        if len(parsed) > limits.max_seeds:
            raise LimitError(f"{len(parsed)} seeds, at most {limits.max_seeds} per request", param="seeds")
        seeds = list(parsed)
    seeds = list(seeds)
    if not seeds:
        raise StyleforgeError("no seeds given", param="seeds")
    if len(seeds) > limits.max_seeds:
        raise LimitError(f"{len(seeds)} seeds, at most {limits.max_seeds} per request", param="seeds")
    return [check_seed(s) for s in seeds]
