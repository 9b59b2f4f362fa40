"""Latent interpolation: lerp in W / W+ between saved latents, slerp in Z (or lerp in W) between seeds.

Endpoints are either latent files (``.npz`` with ``w`` [N, num_ws, w_dim], e.g. ``projected_w.npz`` or
generate's ``ws.npz``; ``FILE.npz:K`` picks row K, default 0) or seeds (z drawn as the official scripts do,
``RandomState(seed).randn(z_dim)``). Spaces:

- ``z`` (seeds only): spherical interpolation of z, each frame mapped with the truncation settings;
- ``w``: linear interpolation of a single w (both endpoints must have the same w in every layer);
- ``w+``: linear interpolation of the full [num_ws, w_dim] latents (the default for latent files whose
  layers differ, e.g. W+ projections).

Frames are rendered with ``noise_mode='const'`` and converted like ``generate.py`` (x * 127.5 + 128), so
the first and last frames equal ``generate.py --projected-w`` of the endpoints. Outputs in ``outdir``:
``interp.png`` (all frames in one row), ``interp.mp4`` (or ``interp.gif``), ``interp.npz`` (``w`` [T,
num_ws, w_dim] readable by ``generate.py --projected-w``, ``t``, and ``z`` for Z-space runs) and
``interpolation.json``.

Every frame (and its latent) is held in memory for the strip and the video, so ``steps`` is bounded by
:data:`FRAMES_MAX_BYTES` for the network at hand (659 frames at FFHQ-1024, 83,886 for the bundled 32 px
model): more is a one-line error before any work, not a run that fills the memory after minutes.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import StyleforgeError, StyleforgeWarning
from ..images import make_grid, uint8_as_generate
from ..latents import check_truncation, load_ws, seed_to_z
from ..utils.fileio import ensure_outdir, save_image, save_json, save_npz
from ..utils.progress import Callback, reporter
from ..utils.runtime import check_outdir, resolve_device
from ..video import ffmpeg_available, write_gif, write_mp4
from ..zoo import load_generator

SPACES = ("z", "w", "w+")
FRAMES_MAX_BYTES = 2 << 30
"""Memory for the frames and their latents (pixels + float64 and float32 latents) that ``steps`` may need."""
PathLike = Union[str, os.PathLike]


def lerp(a: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    """Linear interpolation [T, *a.shape]; t=0 gives exactly a and t=1 exactly b."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(-1, *([1] * a.ndim))
    out = a + (b - a) * t
    out[np.isclose(t.reshape(-1), 0.0)] = a
    out[np.isclose(t.reshape(-1), 1.0)] = b
    return out


def slerp(a: np.ndarray, b: np.ndarray, t, eps: float = 1e-7) -> np.ndarray:
    """Spherical interpolation of vectors [D] -> [T, D]: the direction moves along the great circle from a
    to b at constant angular speed, the length changes linearly (unit vectors stay on the unit sphere).
    Falls back to lerp for (anti)parallel vectors. t=0 gives exactly a and t=1 exactly b."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na < eps or nb < eps:
        return lerp(a, b, t)
    ua, ub = a / na, b / nb
    cos = float(np.clip(np.dot(ua, ub), -1.0, 1.0))
    omega = np.arccos(cos)
    so = np.sin(omega)
    if so < eps:
        return lerp(a, b, t)
    direction = (np.sin((1 - t) * omega)[:, None] * ua + np.sin(t * omega)[:, None] * ub) / so
    out = direction * ((1 - t) * na + t * nb)[:, None]
    out[np.isclose(t, 0.0)] = a
    out[np.isclose(t, 1.0)] = b
    return out


_ROW = re.compile(r"^(.*\.npz):(\d+)$", re.IGNORECASE)


def load_latent(spec: PathLike, num_ws: int, w_dim: int) -> Tuple[np.ndarray, str]:
    """One latent [num_ws, w_dim] from ``FILE.npz`` or ``FILE.npz:K``; returns it and a label."""
    spec = os.fspath(spec)
    row = 0
    m = _ROW.match(spec)
    if m and not Path(spec).exists():
        spec, row = m.group(1), int(m.group(2))
    ws = load_ws(spec, num_ws, w_dim)
    if not 0 <= row < len(ws):
        raise StyleforgeError(f"{spec}: has {len(ws)} latent(s); row {row} does not exist")
    if row == 0 and len(ws) > 1:
        warnings.warn(f"{spec} holds {len(ws)} latents; using the first (pick another with {spec}:K)")
    return ws[row].astype(np.float64), f"{spec}:{row}" if len(ws) > 1 else spec


@dataclass
class Interpolation:
    t: np.ndarray
    ws: np.ndarray  # [T, num_ws, w_dim] float32
    space: str
    z: Optional[np.ndarray] = None  # [T, z_dim] for Z-space runs
    endpoints: List[str] = field(default_factory=list)


def interpolate_latents(
    G,
    steps: int = 8,
    space: Optional[str] = None,
    from_w: Optional[PathLike] = None,
    to_w: Optional[PathLike] = None,
    from_seed: Optional[int] = None,
    to_seed: Optional[int] = None,
    truncation_psi: float = 1.0,
) -> Interpolation:
    """The frames' latents between two endpoints (each a latent file or a seed); see the module doc."""
    if steps < 2:
        raise StyleforgeError("must be at least 2 (the two endpoints)", param="steps", value=steps)
    check_truncation(truncation_psi)
    if space is not None and space not in SPACES:
        raise StyleforgeError("use z, w or w+", param="space", value=repr(space))
    for a, b, what in ((from_w, from_seed, "from"), (to_w, to_seed, "to")):
        names = {f"{what}_w": "a latent file", f"{what}_seed": "a seed"}
        end = "start" if what == "from" else "end"
        if a is not None and b is not None:
            raise StyleforgeError(f"give either {{{what}_w}} or {{{what}_seed}} for the {end}, not both", also=names)
        if a is None and b is None:
            raise StyleforgeError(f"missing the {end}: give {{{what}_w}} or {{{what}_seed}}", also=names)
    if not getattr(G, "has_w_space", False):
        raise StyleforgeError("interpolation needs a StyleGAN generator with a W space")
    seeds_only = from_w is None and to_w is None
    if seeds_only and getattr(G, "c_dim", 0):
        raise StyleforgeError("interpolating between seeds needs an unconditional network (this one is conditional)")
    if space is None:
        space = "z" if seeds_only else None
    if space == "z" and not seeds_only:
        raise StyleforgeError("needs seeds at both ends ({from_seed} and {to_seed})", param="space", value="z",
                              also={"from_seed": "a start seed", "to_seed": "an end seed"})
    if from_w is not None and to_w is not None and truncation_psi != 1:
        warnings.warn(StyleforgeWarning("{name} applies to seeds only; latent files are used as saved",
                                        param="truncation_psi", label="truncation"))
    t = np.linspace(0.0, 1.0, steps)
    dev = next(G.parameters()).device

    def map_z(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = G.mapping(torch.from_numpy(np.asarray(z)).to(dev), None, truncation_psi=truncation_psi)
        return out.cpu().numpy().astype(np.float64)

    labels = []
    if space == "z":
        za, zb = seed_to_z(from_seed, G.z_dim), seed_to_z(to_seed, G.z_dim)
        z = slerp(za, zb, t)
        ws = np.concatenate([map_z(z[i: i + 64]) for i in range(0, steps, 64)])
        return Interpolation(t, ws.astype(np.float32), "z", z, [f"seed {from_seed}", f"seed {to_seed}"])

    ends = []
    for w_file, seed in ((from_w, from_seed), (to_w, to_seed)):
        if w_file is not None:
            w, label = load_latent(w_file, G.num_ws, G.w_dim)
        else:
            w, label = map_z(seed_to_z(seed, G.z_dim)[None])[0], f"seed {seed}"
        ends.append(w)
        labels.append(label)
    same_layers = all(np.array_equal(e, np.broadcast_to(e[:1], e.shape)) for e in ends)
    if space is None:
        space = "w" if same_layers else "w+"
    if space == "w" and not same_layers:
        raise StyleforgeError("{name} w: an endpoint is a W+ latent (its layers differ); use {name} w+", param="space")
    if space == "w":
        ws = lerp(ends[0][0], ends[1][0], t)[:, None, :].repeat(G.num_ws, axis=1)
    else:
        ws = lerp(ends[0], ends[1], t)
    return Interpolation(t, ws.astype(np.float32), space, None, labels)


@dataclass
class InterpolateResult:
    outdir: Path
    strip: Path
    latents: Path
    video: Optional[Path]
    manifest: Path
    space: str


def max_steps(G) -> int:
    """The most frames :func:`run_interpolation` renders for ``G`` (see :data:`FRAMES_MAX_BYTES`)."""
    per_frame = G.img_resolution ** 2 * G.img_channels + G.num_ws * G.w_dim * (8 + 4)
    return max(2, FRAMES_MAX_BYTES // per_frame)


def run_interpolation(
    outdir: PathLike,
    network: Optional[PathLike] = None,
    from_w: Optional[PathLike] = None,
    to_w: Optional[PathLike] = None,
    from_seed: Optional[int] = None,
    to_seed: Optional[int] = None,
    space: Optional[str] = None,
    steps: int = 8,
    truncation_psi: float = 1.0,
    video: str = "mp4",
    fps: float = 10,
    device: str = "auto",
    allow_download: Optional[bool] = None,
    callback: Optional[Callback] = None,
) -> InterpolateResult:
    """Interpolate, render every frame and write the strip, the video and the latents to ``outdir`` (created
    only when the frames are rendered, so a failed run leaves nothing behind). Progress (stage ``interpolate``,
    one advance per frame), downloads and the note when mp4 falls back to GIF go to ``callback``."""
    rep = reporter(callback)
    if video not in ("mp4", "gif", "none"):
        raise StyleforgeError("use mp4, gif or none", param="video", label="video format", value=repr(video))
    if not (fps > 0 and math.isfinite(fps)):
        raise StyleforgeError("must be a positive number, e.g. 10", param="fps", value=fps)
    check_truncation(truncation_psi)
    check_outdir(outdir)
    dev = resolve_device(device)
    G, net_path = load_generator(network, dev, allow_download, rep)
    if steps > max_steps(G):
        raise StyleforgeError(f"at most {max_steps(G)} frames for this {G.img_resolution} px network (every frame is "
                              "kept in memory for the strip and the video); use fewer steps", param="steps", value=steps)
    it = interpolate_latents(G, steps, space, from_w, to_w, from_seed, to_seed, truncation_psi)
    frames = []
    with torch.no_grad(), rep.stage("interpolate", total=len(it.ws), unit="frame") as advance:
        for i in range(len(it.ws)):
            img = G.synthesis(torch.from_numpy(it.ws[i: i + 1]).to(dev), noise_mode="const")
            frames.append(uint8_as_generate(img)[0])
            advance()
    out = ensure_outdir(outdir, param="outdir")
    strip = save_image(make_grid(frames, cols=len(frames)), out / "interp.png")
    arrays = {"w": it.ws, "t": it.t.astype(np.float32)}
    if it.z is not None:
        arrays["z"] = it.z
        arrays["seeds"] = np.array([from_seed, to_seed])
    latents = save_npz(out / "interp.npz", **arrays)
    vid = None
    if video == "mp4":
        why = ffmpeg_available()
        if why is None:
            vid = write_mp4(frames, out / "interp.mp4", fps=fps, bitrate="16M")
        else:
            rep.note(f"mp4 writing is unavailable ({why}); writing interp.gif instead")
            video = "gif"
    if video == "gif":
        vid = write_gif(frames, out / "interp.gif", fps=fps)
    manifest = save_json(out / "interpolation.json", {
        "network": str(net_path),
        "space": it.space,
        "steps": steps,
        "endpoints": it.endpoints,
        "truncation_psi": truncation_psi,
        "noise_mode": "const",
        "fps": fps,
        "files": [p.name for p in (strip, latents, vid) if p is not None],
    })
    return InterpolateResult(out, strip, latents, vid, manifest, it.space)
