"""Image generation from a network file: seeds or saved latents in, PNGs (+ grid, latents, JSON) out.

This is the library behind ``scripts/generate.py`` / ``styleforge generate``. For an official pickle and
the official flags it writes the official file names (``seed0000.png``, ``proj00.png``) with the official
pixel conversion, and z for seed ``s`` is drawn exactly as the official script draws it
(``numpy.random.RandomState(s).randn(1, z_dim)``), so the image for a seed does not depend on the batch.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .errors import StyleforgeError
from .utils.cli import SeedList, check_outdir, resolve_device, shard_items
from .utils.fileio import atomic_path, ensure_outdir, save_image, save_json

GRID_MAX_BYTES = 1 << 30
"""``--grid`` holds every image of the shard in memory: refused (before any work) above 1 GiB of pixels."""


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
    bad = np.flatnonzero(~np.isfinite(w).all(axis=(1, 2)))
    if len(bad):
        rows = ", ".join(map(str, bad[:5])) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise StyleforgeError(f"{path}: row(s) {rows} of 'w' hold NaN or infinite values; re-create the file")
    return w


def check_truncation(psi: float) -> float:
    """``--trunc`` must be a finite number (NaN or inf would only make black images)."""
    if not math.isfinite(psi):
        raise StyleforgeError(f"--trunc {psi}: must be a finite number, e.g. 0.7 (1 = no truncation)")
    return psi


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


class NpzStream:
    """An ``.npz`` written array by array, each array block by block, so that memory does not grow with its
    size: one uncompressed ``<name>.npy`` member per array, as ``np.savez`` lays it out (``np.load`` reads it).
    Made by :func:`npz_stream`."""

    def __init__(self, zf: zipfile.ZipFile):
        self._zf = zf
        self._member = None
        self._left = 0

    def begin(self, name: str, shape: Tuple[int, ...], dtype) -> None:
        """Start array ``name``; exactly ``prod(shape)`` values must follow, in C order, through :meth:`write`."""
        self.end()
        self._dtype = np.dtype(dtype)
        self._left = int(np.prod(shape)) * self._dtype.itemsize
        self._member = self._zf.open(name + ".npy", "w", force_zip64=self._left > (1 << 31) - (1 << 16))
        np.lib.format.write_array_header_1_0(self._member, {
            "descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False, "shape": tuple(shape)})

    def write(self, block) -> None:
        data = np.ascontiguousarray(block, dtype=self._dtype)
        if data.nbytes > self._left:
            raise ValueError("more values than the array's shape holds")
        self._member.write(memoryview(data).cast("B"))
        self._left -= data.nbytes

    def end(self) -> None:
        if self._member is not None:
            member, self._member = self._member, None
            member.close()
            if self._left:
                raise ValueError("an array of the .npz ended before its shape was filled")


@contextlib.contextmanager
def npz_stream(path: Union[str, os.PathLike]) -> Iterator[NpzStream]:
    """Write an .npz through :class:`NpzStream`, atomically (temporary name, renamed when the block ends)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        stream = NpzStream(zf)
        try:
            yield stream
            stream.end()  # checks that the last array is complete
        finally:
            stream._member, member = None, stream._member
            if member is not None:  # left open by a failure (zipfile cannot close with a member open)
                member.close()


class PathList(Sequence[Path]):
    """Output paths made on demand, ``outdir / name(keys[i])`` for ``i`` in ``index``: a result for 100
    million seeds does not hold 100 million paths."""

    def __init__(self, outdir: Path, name: Callable[[int], str], keys: Sequence[int], index: SeedList):
        self._outdir, self._name, self._keys, self._index = outdir, name, keys, index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        return self._outdir / self._name(self._keys[self._index[k]])


@dataclass
class GenerateResult:
    outdir: Path
    files: Sequence[Path] = field(default_factory=list)
    skipped: Sequence[Path] = field(default_factory=list)
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

    ``seeds``: any sequence of ints; a :class:`~styleforge.utils.cli.SeedList` (what ``--seeds`` parses to)
    keeps ranges as ranges, and the seeds are taken batch by batch, so memory does not grow with their count:
    ``ws.npz`` is streamed to disk and ``generate.json`` names the seeds as ranges.

    ``batch_size``: images per synthesis call (None: :func:`default_batch_size`). Results do not depend on it beyond
    float rounding: every seed is still mapped on its own, as the official script maps it, so ``ws.npz`` is
    the same for every batch size. ``tune_allocator``: on CPU, call
    :func:`~styleforge.utils.perf.tune_cpu_allocator` first (process-wide; the CLI turns it on).

    ``outdir`` is created when the first batch is ready, so a run that fails before (network, device, out of
    memory) leaves nothing behind. On a GPU, PNGs are encoded and written by one background thread while the
    next batch is synthesised; every file is still written atomically, and an error in writing one stops the run.
    """
    from tqdm import tqdm

    if noise_mode not in ("const", "random", "none"):
        raise StyleforgeError(f"--noise-mode {noise_mode!r}: use const, random or none")
    if batch_size is not None and batch_size < 1:
        raise StyleforgeError("--batch-size must be at least 1")
    if truncation_cutoff is not None and truncation_cutoff < 0:
        raise StyleforgeError("--trunc-cutoff must be >= 0")
    check_truncation(truncation_psi)
    if projected_w is None and not seeds:
        raise StyleforgeError("nothing to generate: pass --seeds (e.g. 0-7) or --projected-w FILE")
    outdir = check_outdir(outdir)
    dev = resolve_device(device)
    if batch_size is None:
        batch_size = default_batch_size(dev, fp16)
    if dev.type == "cpu" and tune_allocator:
        from .utils.perf import tune_cpu_allocator

        tune_cpu_allocator()
    G, net_path = load_generator(network, dev, allow_download)
    has_w = getattr(G, "has_w_space", True)

    # Work items: keys (seeds, or rows of the projected latents) and their file names
    if projected_w is not None:
        if not has_w:
            raise StyleforgeError("--projected-w needs a network with a W space (a StyleGAN generator)")
        if seeds:
            warnings.warn("--seeds is ignored when --projected-w is given")
        ws_all = load_ws(projected_w, G.num_ws, G.w_dim)
        keys, keyname, name_pattern = SeedList([range(len(ws_all))]), "index", "proj{:02d}.png"
    else:
        keys, keyname, name_pattern = SeedList.of(seeds), "seeds", "seed{:04d}.png"
    name = name_pattern.format

    keys = shard_items(keys, shard)
    n = len(keys)
    c = class_label(G, class_idx, dev) if projected_w is None else None
    if grid and n * G.img_resolution ** 2 * G.img_channels > GRID_MAX_BYTES:
        raise StyleforgeError(f"--grid: {n} images of {G.img_resolution}x{G.img_resolution} make a grid of "
                              f"{n * G.img_resolution ** 2 * G.img_channels / 2**30:.1f} GiB (at most "
                              f"{GRID_MAX_BYTES >> 30} GiB); drop --grid or pass fewer --seeds")

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

    if noise_mode == "random":
        batch_size = 1  # each image gets torch.manual_seed(seed) noise, independent of batching
    suffix = "" if shard == (0, 1) else f"-shard{shard[0]}of{shard[1]}"
    res = GenerateResult(outdir=outdir, network=net_path)
    written, skipped = SeedList(), SeedList()
    tiles = []
    bar = tqdm(total=n, unit="img", desc="generate", disable=not progress)
    # (the bar is closed, ending its line, before an error message is printed)
    with contextlib.ExitStack() as stack:
        stack.enter_context(bar)
        stack.enter_context(torch.no_grad())
        writer = stack.enter_context(BackgroundWriter(enabled=dev.type != "cpu"))
        ws_file = None
        for b in range(0, n, batch_size):
            chunk = keys[b: b + batch_size]
            paths = [outdir / name(k) for k in chunk]
            todo = [j for j, p in enumerate(paths) if not (skip_existing and p.exists())]
            # every latent, skipped images' too, so that ws.npz always covers the whole shard
            wb = latents(chunk) if has_w else None
            arrays = {}
            if todo:
                if noise_mode == "random":
                    torch.manual_seed(chunk[todo[0]])
                if has_w:
                    img = G.synthesis(wb if len(todo) == len(chunk) else wb[todo], noise_mode=noise_mode, fp16=fp16)
                else:
                    z = torch.from_numpy(np.stack([seed_to_z(chunk[j], G.z_dim) for j in todo])).to(dev)
                    cc = c.repeat(len(todo), 1) if c is not None else None
                    img = G(z, cc, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                            noise_mode=noise_mode)
                arrays = dict(zip(todo, to_uint8(img)))
            if b == 0:  # the first results exist: now the folder and the streamed latents file
                ensure_outdir(outdir)
                if has_w:
                    ws_file = stack.enter_context(npz_stream(outdir / f"ws{suffix}.npz"))
                    ws_file.begin("w", (n, G.num_ws, G.w_dim), np.float32)
            for j, path in enumerate(paths):
                if j in arrays:
                    writer.submit(save_image, arrays[j], path)
                    written.append(b + j)
                else:
                    skipped.append(b + j)
                if grid:
                    tiles.append(arrays[j] if j in arrays else _read_tile(path, G.img_channels))
            if ws_file is not None:
                ws_file.write(wb.cpu().numpy())
            writer.raise_errors()
            bar.update(len(chunk))
            if skipped:
                bar.set_postfix(skipped=len(skipped), refresh=False)
        writer.raise_errors(wait=True)
        if ws_file is not None:
            ws_file.begin(keyname, (n,), np.int64)
            for b in range(0, n, 1 << 20):
                block = keys[b: b + (1 << 20)]
                ws_file.write(np.fromiter(block, np.int64, len(block)))
            res.latents = outdir / f"ws{suffix}.npz"
    res.files = PathList(outdir, name, keys, written)
    res.skipped = PathList(outdir, name, keys, skipped)

    ensure_outdir(outdir)  # (an empty shard writes its manifest only)
    if grid and tiles:
        res.grid = save_image(make_grid(tiles), outdir / f"grid{suffix}.png")
    res.manifest = save_json(outdir / f"generate{suffix}.json", {
        "network": str(net_path),
        "seeds": str(keys) if projected_w is None else None,  # as ranges, e.g. "0-7,12"
        "projected_w": str(projected_w) if projected_w is not None else None,
        "index": str(keys) if projected_w is not None else None,  # rows of projected_w
        "count": n,
        "image_pattern": name_pattern,  # file name of each seed (or row): str.format(7) = seed0007.png
        "truncation_psi": truncation_psi,
        "truncation_cutoff": truncation_cutoff,
        "class": class_idx,
        "noise_mode": noise_mode,
        "fp16": fp16,
        "shard": list(shard),
        "grid": res.grid.name if res.grid else None,
        "latents": res.latents.name if res.latents else None,
    })
    return res


def _read_tile(path: Path, channels: int) -> np.ndarray:
    """An image written by an earlier run, as an HWC uint8 grid tile."""
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    return a[:, :, None] if a.ndim == 2 else a
