"""Image generation from a network file: seeds or saved latents in, PNGs (+ grid, latents, JSON) out.

This is the library behind ``scripts/generate.py`` / ``styleforge generate``. For an official pickle and
the official flags it writes the official file names (``seed0000.png``, ``proj00.png``) with the official
pixel conversion, and z for seed ``s`` is drawn exactly as the official script draws it
(``numpy.random.RandomState(s).randn(1, z_dim)``), so the image for a seed does not depend on the batch.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .errors import StyleforgeError
from .utils.cli import resolve_device, shard_items
from .utils.fileio import ensure_outdir, save_image, save_json, save_npz


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """The official latent for ``seed``: ``RandomState(seed).randn(1, z_dim)`` (float64), as a [z_dim] row."""
    return np.random.RandomState(seed).randn(1, z_dim)[0]


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[N, C, H, W] float in ~[-1, 1] -> [N, H, W, C] uint8 exactly as official generate.py converts."""
    x = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.cpu().numpy()


def make_grid(images: Sequence[np.ndarray], cols: Optional[int] = None, pad: int = 0) -> np.ndarray:
    """Tile equally sized HWC uint8 images into one image (row-major)."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to tile")
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    h, w, c = images[0].shape
    grid = np.zeros((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad, c), dtype=np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = im
    return grid


def load_generator(network: Optional[Union[str, os.PathLike]], device=None, allow_download: Optional[bool] = None):
    """Resolve ``network`` (path, known name, URL or None for the bundled default) and load its generator."""
    from .assets import default_network_path
    from .networks.checkpoint import load_network
    from .utils.cache import resolve_file

    path = default_network_path() if network is None else resolve_file(str(network), allow_download, what="network file")
    G = load_network(path)
    if device is not None:
        G = G.to(device)
    return G.eval().requires_grad_(False), Path(path)


def class_label(G, class_idx: Optional[int], device) -> Optional[torch.Tensor]:
    """One-hot [1, c_dim] label for conditional networks (with the checks and messages users need)."""
    c_dim = getattr(G, "c_dim", 0)
    if c_dim == 0:
        if class_idx is not None:
            warnings.warn("--class is ignored: the network is unconditional")
        return None
    if class_idx is None:
        raise StyleforgeError(f"the network is conditional ({c_dim} classes): pass --class 0..{c_dim - 1}")
    if not 0 <= class_idx < c_dim:
        raise StyleforgeError(f"--class {class_idx} is out of range: the network has classes 0..{c_dim - 1}")
    c = torch.zeros([1, c_dim], device=device)
    c[0, class_idx] = 1
    return c


def load_ws(path: Union[str, os.PathLike], num_ws: int, w_dim: int) -> np.ndarray:
    """Read latents from an npz with key ``w`` shaped [N, num_ws, w_dim] (a [N, w_dim] array is broadcast)."""
    path = Path(path)
    if not path.is_file():
        raise StyleforgeError(f"{path}: no such latent file (expected an .npz with key 'w')")
    try:
        with np.load(path) as data:
            if "w" not in data:
                raise StyleforgeError(f"{path}: has no array 'w' (keys: {list(data.keys())}); save latents as w=[N, num_ws, w_dim]")
            w = np.asarray(data["w"], dtype=np.float32)
    except StyleforgeError:
        raise
    except Exception as e:
        raise StyleforgeError(f"{path}: not a readable .npz file ({type(e).__name__}); re-create it") from None
    if w.ndim == 2 and w.shape[1] == w_dim:
        w = np.repeat(w[:, None, :], num_ws, axis=1)
    if w.ndim != 3 or w.shape[1:] != (num_ws, w_dim):
        raise StyleforgeError(f"{path}: 'w' has shape {list(w.shape)}, this network needs [N, {num_ws}, {w_dim}]")
    return w


def default_batch_size(device: torch.device, fp16: bool = False) -> int:
    """Images per synthesis call when the user gives none. On CPU the low resolutions of a batch run together
    (reading the weights dominates there): paper256 batch 8 is ~15 % faster per image than batch 1, for ~0.4 GB
    more memory. GPUs gain from batches too; 4 keeps a 1024 px fp32 batch within ~2 GB (running out of memory
    is a one-line error suggesting a smaller --batch-size). fp16: one seed at a time, as official generate.py
    runs, because its fp16 roundings depend on the batch (so its PNGs are reproduced bit for bit)."""
    if fp16:
        return 1
    return 8 if device.type == "cpu" else 4


class BackgroundWriter:
    """Runs file writes on one worker thread, in order, so that encoding a PNG overlaps the next synthesis
    (``enabled=False``: inline). ``raise_errors()`` re-raises the first failure; leaving the ``with`` block
    waits for every write.

    Worth it while a GPU computes and the CPU waits; on a CPU that torch already keeps busy, the encoder
    only takes a core from torch's threads (measured on 2 cores: 16 paper256 images 0.3 s slower)."""

    def __init__(self, enabled: bool = True):
        self._pool = None
        if enabled:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="styleforge-writer")
        self._pending = []

    def submit(self, fn, *args) -> None:
        if self._pool is None:
            fn(*args)
        else:
            self._pending.append(self._pool.submit(fn, *args))

    def raise_errors(self, wait: bool = False) -> None:
        still = []
        for fut in self._pending:
            if wait or fut.done():
                fut.result()  # re-raises the writer's exception here
            else:
                still.append(fut)
        self._pending = still

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        cancel = exc_type is not None  # after a failure, writes still queued are cancelled, not run
        try:
            if not cancel:
                self.raise_errors(wait=True)
        except BaseException:
            cancel = True
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=cancel)


@dataclass
class GenerateResult:
    outdir: Path
    files: List[Path] = field(default_factory=list)
    skipped: List[Path] = field(default_factory=list)
    grid: Optional[Path] = None
    latents: Optional[Path] = None
    manifest: Optional[Path] = None
    network: Optional[Path] = None


def generate_images(
    outdir: Union[str, os.PathLike],
    network: Optional[Union[str, os.PathLike]] = None,
    seeds: Optional[Sequence[int]] = None,
    truncation_psi: float = 1.0,
    truncation_cutoff: Optional[int] = None,
    class_idx: Optional[int] = None,
    noise_mode: str = "const",
    projected_w: Optional[Union[str, os.PathLike]] = None,
    batch_size: Optional[int] = None,
    device: str = "auto",
    grid: bool = False,
    shard: Tuple[int, int] = (0, 1),
    fp16: bool = False,
    skip_existing: bool = False,
    allow_download: Optional[bool] = None,
    progress: bool = True,
    tune_allocator: bool = False,
) -> GenerateResult:
    """Generate images for ``seeds`` (or for the latents in ``projected_w``) and write them to ``outdir``.

    ``batch_size``: images per synthesis call (None: :func:`default_batch_size`). Results do not depend on it beyond
    float rounding: every seed is still mapped on its own, as the official script maps it, so ``ws.npz`` is
    the same for every batch size. ``tune_allocator``: on CPU, call
    :func:`~styleforge.utils.perf.tune_cpu_allocator` first (process-wide; the CLI turns it on).

    On a GPU, PNGs are encoded and written by one background thread while the next batch is synthesised;
    every file is still written atomically, and an error in writing one stops the run.
    """
    from tqdm import tqdm

    if noise_mode not in ("const", "random", "none"):
        raise StyleforgeError(f"--noise-mode {noise_mode!r}: use const, random or none")
    if batch_size is not None and batch_size < 1:
        raise StyleforgeError("--batch-size must be at least 1")
    if projected_w is None and not seeds:
        raise StyleforgeError("nothing to generate: pass --seeds (e.g. 0-7) or --projected-w FILE")
    dev = resolve_device(device)
    if batch_size is None:
        batch_size = default_batch_size(dev, fp16)
    if dev.type == "cpu" and tune_allocator:
        from .utils.perf import tune_cpu_allocator

        tune_cpu_allocator()
    outdir = ensure_outdir(outdir)
    G, net_path = load_generator(network, dev, allow_download)
    res = GenerateResult(outdir=outdir, network=net_path)
    has_w = getattr(G, "has_w_space", True)

    # Work items: (output file name, seed or index into the projected latents)
    if projected_w is not None:
        if not has_w:
            raise StyleforgeError("--projected-w needs a network with a W space (a StyleGAN generator)")
        if seeds:
            warnings.warn("--seeds is ignored when --projected-w is given")
        ws_all = load_ws(projected_w, G.num_ws, G.w_dim)
        items = [(f"proj{i:02d}.png", i) for i in range(len(ws_all))]
    else:
        items = [(f"seed{s:04d}.png", s) for s in seeds]
    items = shard_items(items, shard)
    c = class_label(G, class_idx, dev) if projected_w is None else None
    if truncation_cutoff is not None and truncation_cutoff < 0:
        raise StyleforgeError("--trunc-cutoff must be >= 0")

    def latents(keys) -> torch.Tensor:
        """ws for the given seeds (or indices into the projected latents), on the device."""
        if projected_w is not None:
            return torch.from_numpy(ws_all[list(keys)]).to(dev)
        # one seed at a time, as the official script maps them (bit-exact latents whatever the batch size)
        return torch.cat([
            G.mapping(torch.from_numpy(seed_to_z(s, G.z_dim)[None]).to(dev), c,
                      truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
            for s in keys
        ])

    todo = []
    for idx, (fname, key) in enumerate(items):
        path = outdir / fname
        if skip_existing and path.exists():
            res.skipped.append(path)
        else:
            todo.append((idx, path, key))
    if noise_mode == "random":
        batch_size = 1  # each image gets torch.manual_seed(seed) noise, independent of batching

    images = {}
    ws_rows = {}
    bar = tqdm(total=len(todo), unit="img", desc="generate", disable=not progress)
    # (the bar is closed, ending its line, before an error message is printed)
    with bar, torch.no_grad(), BackgroundWriter(enabled=dev.type != "cpu") as writer:
        for b in range(0, len(todo), batch_size):
            chunk = todo[b: b + batch_size]
            if noise_mode == "random":
                torch.manual_seed(chunk[0][2])
            if has_w:
                wb = latents([k for _, _, k in chunk])
                img = G.synthesis(wb, noise_mode=noise_mode, fp16=fp16)
                for (i, _, _), w in zip(chunk, wb.cpu()):
                    ws_rows[i] = w
            else:
                z = torch.from_numpy(np.stack([seed_to_z(k, G.z_dim) for _, _, k in chunk])).to(dev)
                cc = c.repeat(len(chunk), 1) if c is not None else None
                img = G(z, cc, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, noise_mode=noise_mode)
            for (i, path, _), a in zip(chunk, to_uint8(img)):
                writer.submit(save_image, a, path)
                res.files.append(path)
                if grid:
                    images[i] = a
            writer.raise_errors()
            bar.update(len(chunk))
        skipped_idx = [i for i, (fname, _) in enumerate(items) if i not in ws_rows]
        if has_w and skipped_idx:  # latents of skipped images too, so ws.npz always covers the whole shard
            for i, w in zip(skipped_idx, latents([items[i][1] for i in skipped_idx]).cpu()):
                ws_rows[i] = w
    ws = torch.stack([ws_rows[i] for i in range(len(items))]) if has_w and items else None

    suffix = "" if shard == (0, 1) else f"-shard{shard[0]}of{shard[1]}"
    if grid and items:
        from PIL import Image

        tiles = []
        for idx, (fname, _) in enumerate(items):
            if idx in images:
                tiles.append(images[idx])
            else:
                tiles.append(np.asarray(Image.open(outdir / fname).convert("RGB" if G.img_channels == 3 else "L")))
                if tiles[-1].ndim == 2:
                    tiles[-1] = tiles[-1][:, :, None]
        res.grid = save_image(make_grid(tiles), outdir / f"grid{suffix}.png")
    if ws is not None and len(items):
        keyname = "index" if projected_w is not None else "seeds"
        res.latents = save_npz(outdir / f"ws{suffix}.npz", w=ws.numpy(), **{keyname: np.array([k for _, k in items])})
    res.manifest = save_json(outdir / f"generate{suffix}.json", {
        "network": str(net_path),
        "seeds": None if projected_w is not None else [k for _, k in items],
        "projected_w": str(projected_w) if projected_w is not None else None,
        "truncation_psi": truncation_psi,
        "truncation_cutoff": truncation_cutoff,
        "class": class_idx,
        "noise_mode": noise_mode,
        "fp16": fp16,
        "shard": list(shard),
        "images": [fname for fname, _ in items],
        "grid": res.grid.name if res.grid else None,
        "latents": res.latents.name if res.latents else None,
    })
    return res
