"""Edit latents along a direction: every input at every strength, written per input as a strip PNG, a GIF or MP4
sweep, and the edited latents per strength.

Outputs in ``outdir`` for input ``k`` (00, 01, ... in the order given):

- ``edit{k}.png``: the images at every strength, left to right;
- ``edit{k}.gif`` (or ``.mp4``): the sweep there and back, looping;
- ``edit{k}_s{strength}.npz`` (``edit00_s-1.5.npz``, ``edit00_s+0.npz``): ``w`` [1, num_ws, w_dim], readable by
  ``generate.py --projected-w``;
- ``edit.json``: the network, the direction, the strengths, layers and what each input was.

``shard=(i, n)`` edits the i-th of n contiguous slices of the inputs (``utils.runtime.shard_items``, as every
batch command cuts its work); the files keep each input's index in the whole list, so n shards write the files of
one run, and the manifest is ``edit-shard{i}of{n}.json`` (its inputs only). ``skip_existing`` passes over inputs
whose files all exist (every file is written atomically, so an existing file is complete).

Inputs are processed one at a time, so memory holds one input's frames, whatever the number of inputs. The
folder is created when the first input's images exist, and every file is written atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import StyleforgeError
from ..images import make_grid
from ..utils.fileio import ensure_outdir, save_image, save_json, save_npz
from ..utils.progress import Callback, reporter
from ..utils.runtime import check_shard, shard_items
from ..video import ffmpeg_available, write_gif, write_mp4
from .direction import Direction, layers_text, parse_layers, sweep
from .render import check_latents, synthesize

PathLike = Union[str, os.PathLike]
VIDEO_FORMATS = ("gif", "mp4", "none")


def strength_tag(s: float) -> str:
    """``1.5`` -> ``+1.5``, ``-3`` -> ``-3``, ``0`` -> ``+0`` (file names)."""
    return f"{s:+g}"


def check_strengths(strengths: Sequence[float]) -> List[float]:
    s = [float(x) for x in strengths]
    if not s:
        raise StyleforgeError("no strengths given; use e.g. -3,-1.5,0,1.5,3", param="strengths")
    if not np.isfinite(s).all():
        raise StyleforgeError("must be finite numbers, e.g. -3,-1.5,0,1.5,3", param="strengths",
                              value=",".join(map(str, strengths)))
    tags = [strength_tag(x) for x in s]
    if len(set(tags)) != len(tags):
        raise StyleforgeError("a strength is repeated; give each once", param="strengths",
                              value=",".join(map(str, strengths)))
    return s


@dataclass
class EditResult:
    outdir: Optional[Path]
    strips: List[Path] = field(default_factory=list)
    videos: List[Path] = field(default_factory=list)
    latents: List[Path] = field(default_factory=list)
    manifest: Optional[Path] = None
    video_format: str = "none"
    skipped: List[int] = field(default_factory=list)  # inputs whose files were there already (skip_existing)


def edit_latents(G: torch.nn.Module, ws, direction: Direction, strengths: Sequence[float], outdir: PathLike,
                 layers: Union[None, str, Sequence[int]] = None, labels: Optional[Sequence[str]] = None,
                 video: str = "gif", fps: float = 5, noise_mode: str = "const", batch_size: int = 8,
                 callback: Optional[Callback] = None, info: Optional[Dict[str, Any]] = None,
                 shard: Tuple[int, int] = (0, 1), skip_existing: bool = False) -> EditResult:
    """Render every latent of ``ws`` [N, num_ws, w_dim] at every strength along ``direction`` in ``layers`` (default:
    the direction's own, else all) and write the outputs of the module doc. ``labels``: what each input is (for
    ``edit.json``); ``info``: more for ``edit.json`` (the network). An MP4 needs imageio-ffmpeg; without it the
    sweep is a GIF and a note says so. ``shard``, ``skip_existing``: see the module doc."""
    rep = reporter(callback)
    shard = check_shard(shard)
    if video not in VIDEO_FORMATS:
        raise StyleforgeError("use gif, mp4 or none", param="video", label="video format", value=repr(video))
    strengths = check_strengths(strengths)
    check_latents(ws, G)
    if len(ws) == 0:
        raise StyleforgeError("no latents to edit (the latent file is empty)")
    chosen = parse_layers(layers if layers is not None else direction.layers, G.num_ws)
    direction.for_network(G.num_ws, G.w_dim)  # a direction of another network fails before any work
    if video == "mp4" and ffmpeg_available() is not None:
        rep.note(f"mp4 writing is unavailable ({ffmpeg_available()}); writing GIFs instead")
        video = "gif"
    ws = ws.detach().cpu().numpy() if isinstance(ws, torch.Tensor) else np.asarray(ws, dtype=np.float32)
    labels = list(labels) if labels is not None else [f"latent {k}" for k in range(len(ws))]
    res = EditResult(None, video_format=video)
    out = None
    mine = shard_items(range(len(ws)), shard)
    with rep.stage("edit", total=len(mine) * len(strengths), unit="img") as advance:
        for k in mine:
            stem = f"edit{k:02d}"
            if skip_existing and _finished(Path(outdir), stem, strengths, video):
                res.skipped.append(k)
                advance(len(strengths))
                continue
            edited = sweep(ws[k: k + 1], direction, strengths, chosen)[0]  # [S, num_ws, w_dim]
            frames = []
            for i in range(0, len(edited), batch_size):
                frames.extend(synthesize(G, edited[i: i + batch_size], noise_mode, batch_size))
                advance(min(batch_size, len(edited) - i))
            out = out or ensure_outdir(outdir)
            res.outdir = out
            res.strips.append(save_image(make_grid(frames, cols=len(frames)), out / f"{stem}.png"))
            for s, w in zip(strengths, edited):
                res.latents.append(save_npz(out / f"{stem}_s{strength_tag(s)}.npz", w=w[None].astype(np.float32)))
            loop = frames + frames[-2:0:-1]  # there and back
            if video == "gif":
                res.videos.append(write_gif(loop, out / f"{stem}.gif", fps=fps))
            elif video == "mp4":
                res.videos.append(write_mp4(loop, out / f"{stem}.mp4", fps=fps))
    if out is None and res.skipped:
        out = res.outdir = Path(outdir)
    if out is not None:
        suffix = "" if shard == (0, 1) else f"-shard{shard[0]}of{shard[1]}"
        res.manifest = save_json(out / f"edit{suffix}.json", {
            **(info or {}),
            "direction": direction.to_json(),
            "layers": layers_text(chosen, G.num_ws),
            "strengths": strengths,
            "noise_mode": noise_mode,
            "inputs": {f"edit{k:02d}": labels[k] for k in mine},
            "files": {"strip": "edit{k:02d}.png", "latents": "edit{k:02d}_s{strength:+g}.npz",
                      "video": None if video == "none" else f"edit{{k:02d}}.{video}"},
        })
    return res


def _finished(outdir: Path, stem: str, strengths: Sequence[float], video: str) -> bool:
    """Whether every file of input ``stem`` exists (strip, latents per strength, the sweep)."""
    files = [outdir / f"{stem}.png"] + [outdir / f"{stem}_s{strength_tag(s)}.npz" for s in strengths]
    if video != "none":
        files.append(outdir / f"{stem}.{video}")
    return all(f.is_file() for f in files)
