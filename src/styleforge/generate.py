"""Image generation from a network file: seeds or saved latents in, PNGs (+ grid, latents, JSON) out.

This is the library behind ``scripts/generate.py`` / ``styleforge generate``. For an official pickle and
the official flags it writes the official file names (``seed0000.png``, ``proj00.png``) with the official
pixel conversion, and z for seed ``s`` is drawn exactly as the official script draws it
(``numpy.random.RandomState(s).randn(1, z_dim)``), so the image for a seed does not depend on the batch.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .errors import StyleforgeError, StyleforgeWarning
from .images import make_grid, read_image, uint8_as_generate
from .latents import check_truncation, class_label, load_ws, seed_to_z
from .utils.fileio import ensure_outdir, npz_stream, save_image, save_json
from .utils.progress import Callback, reporter
from .utils.runtime import SeedList, check_outdir, resolve_device, shard_items
from .zoo import load_generator

GRID_MAX_BYTES = 1 << 30
"""``--grid`` holds every image of the shard in memory: refused (before any work) above 1 GiB of pixels."""


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
    callback: Optional[Callback] = None,
    tune_allocator: bool = False,
) -> GenerateResult:
    """Generate images for ``seeds`` (or for the latents in ``projected_w``) and write them to ``outdir``.

    ``seeds``: any sequence of ints; a :class:`~styleforge.utils.runtime.SeedList` (what ``--seeds`` parses to)
    keeps ranges as ranges, and the seeds are taken batch by batch, so memory does not grow with their count:
    ``ws.npz`` is streamed to disk and ``generate.json`` names the seeds as ranges.

    ``batch_size``: images per synthesis call (None: :func:`default_batch_size`). Results do not depend on it beyond
    float rounding: every seed is still mapped on its own, as the official script maps it, so ``ws.npz`` is
    the same for every batch size. ``tune_allocator``: on CPU, call
    :func:`~styleforge.utils.perf.tune_cpu_allocator` first (process-wide; the CLI turns it on).

    ``outdir`` is created when the first batch is ready, so a run that fails before (network, device, out of
    memory) leaves nothing behind. On a GPU, PNGs are encoded and written by one background thread while the
    next batch is synthesised; every file is still written atomically, and an error in writing one stops the run.
    Progress (stage ``generate``, one advance per image) and downloads go to ``callback``.
    """
    rep = reporter(callback)
    if noise_mode not in ("const", "random", "none"):
        raise StyleforgeError("use const, random or none", param="noise_mode", value=repr(noise_mode))
    if batch_size is not None and batch_size < 1:
        raise StyleforgeError("must be at least 1", param="batch_size", value=batch_size)
    if truncation_cutoff is not None and truncation_cutoff < 0:
        raise StyleforgeError("must be >= 0", param="truncation_cutoff", value=truncation_cutoff)
    check_truncation(truncation_psi)
    if projected_w is None and not seeds:
        raise StyleforgeError("nothing to generate: give {name} (e.g. 0-7) or a latent file", param="seeds")
    outdir = check_outdir(outdir)
    dev = resolve_device(device)
    if batch_size is None:
        batch_size = default_batch_size(dev, fp16)
    if dev.type == "cpu" and tune_allocator:
        from .utils.perf import tune_cpu_allocator

        tune_cpu_allocator()
    G, net_path = load_generator(network, dev, allow_download, rep)
    has_w = getattr(G, "has_w_space", True)

    # Work items: keys (seeds, or rows of the projected latents) and their file names
    if projected_w is not None:
        if not has_w:
            raise StyleforgeError("{name} needs a network with a W space (a StyleGAN generator)",
                                  param="projected_w", label="a latent file")
        if seeds:
            warnings.warn(StyleforgeWarning("{name} are ignored when latents are given", param="seeds"))
        ws_all = load_ws(projected_w, G.num_ws, G.w_dim)
        keys, keyname, name_pattern = SeedList([range(len(ws_all))]), "index", "proj{:02d}.png"
    else:
        keys, keyname, name_pattern = SeedList.of(seeds), "seeds", "seed{:04d}.png"
    name = name_pattern.format

    keys = shard_items(keys, shard)
    n = len(keys)
    c = class_label(G, class_idx, dev) if projected_w is None else None
    if grid and n * G.img_resolution ** 2 * G.img_channels > GRID_MAX_BYTES:
        raise StyleforgeError(f"{n} images of {G.img_resolution}x{G.img_resolution} make a grid of "
                              f"{n * G.img_resolution ** 2 * G.img_channels / 2**30:.1f} GiB (at most "
                              f"{GRID_MAX_BYTES >> 30} GiB); drop the grid or generate fewer seeds", param="grid")

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
    with contextlib.ExitStack() as stack:
        # (the stage ends, closing a bar's line, before an error message is printed)
        advance = stack.enter_context(rep.stage("generate", total=n, unit="img"))
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
                arrays = dict(zip(todo, uint8_as_generate(img)))
            if b == 0:  # the first results exist: now the folder and the streamed latents file
                ensure_outdir(outdir, param="outdir")
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
            advance(len(chunk), **({"skipped": len(skipped)} if skipped else {}))
        writer.raise_errors(wait=True)
        if ws_file is not None:
            ws_file.begin(keyname, (n,), np.int64)
            for b in range(0, n, 1 << 20):
                block = keys[b: b + (1 << 20)]
                ws_file.write(np.fromiter(block, np.int64, len(block)))
            res.latents = outdir / f"ws{suffix}.npz"
    res.files = PathList(outdir, name, keys, written)
    res.skipped = PathList(outdir, name, keys, skipped)

    ensure_outdir(outdir, param="outdir")  # (an empty shard writes its manifest only)
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
    a = np.asarray(read_image(path, "RGB" if channels == 3 else "L"))
    return a[:, :, None] if a.ndim == 2 else a
