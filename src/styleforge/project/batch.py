"""Projection of files and folders: targets in, one output folder per target out (the library behind
``scripts/project.py`` / ``styleforge project``).

- ``target`` is one image file (outputs go to ``outdir`` itself, as the official projector writes them) or a
  folder, searched recursively for images (outputs go to ``outdir/<relative path without extension>/``);
- ``shard=(i, n)`` keeps the i-th of n contiguous slices of the sorted target list (default from SLURM
  array variables in the CLI); targets whose ``projection.json`` exists with the same settings are skipped,
  so a killed job can simply be run again;
- a target that cannot be read or written is reported (a ``failed`` note to the callback) and the others carry
  on; the result lists what was done, skipped and failed;
- several targets are optimised together with ``batch_size`` > 1 (each keeps its own RNG stream).

Per target: ``target.png`` (the preprocessed target), ``proj.png`` (the final projection, rendered with the
network's own noise maps exactly as the official projector and ``generate.py --projected-w`` render it),
``projected_w.npz`` (``w`` [1, num_ws, w_dim]), ``projected_noise.npz`` (the optimised noise maps, for an
even closer reconstruction), optionally ``proj.mp4`` (target | projection for every step, 10 fps, libx264
16M) and last ``projection.json`` (settings, final feature distance, PSNR, SSIM, timings), whose presence
marks the target as finished.

Target preprocessing is the official one: convert to RGB (or L for grayscale networks), centre-crop to a
square of side min(w, h), LANCZOS-resize to the network's resolution. Two deliberate additions: the EXIF
orientation is applied first (phone photos are otherwise sideways), and ``projection.json`` records when a
target had to be *upscaled* (smaller than the network's resolution), since an upscaled photo is blurry and
projects worse. Faces should be aligned like FFHQ first (see the align tool); the projector does not align.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from ..errors import MissingNetworkError, StyleforgeError, StyleforgeWarning
from ..images import find_images, read_image, unique_keys
from ..perceptual import DiscriminatorFeatures, FeatureNet, PixelLoss, VGG16LPIPS, psnr, ssim
from ..utils.cache import fetch_command
from ..utils.fileio import ensure_outdir, finished_record, save_image, save_json, save_npz
from ..utils.progress import Callback, Reporter, reporter
from ..utils.runtime import check_outdir, resolve_device, shard_items
from ..video import ffmpeg_available, write_mp4
from .. import zoo

LOSSES = ("vgg", "discriminator", "pixel")
DONE_FILE = "projection.json"
PathLike = Union[str, os.PathLike]

# ----------------------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    name: str  # '' for a single file (outputs in outdir itself), else the relative path without extension
    path: Path
    outdir: Path


def find_targets(target: PathLike, outdir: PathLike) -> List[Target]:
    """The images to project, sorted, each with its output folder (a folder's images as
    :func:`~styleforge.images.find_images` finds them: hidden files and ``outdir`` itself skipped)."""
    src = Path(target).expanduser()
    out = Path(outdir)
    if src.is_file():
        return [Target("", src, out)]
    if not src.exists():
        raise StyleforgeError(f"{src}: no such file or folder ({{name}})", param="target")
    if not src.is_dir():
        raise StyleforgeError(f"{src}: not a file or folder ({{name}})", param="target")
    found, _ = find_images(src, exclude=out)
    if not found:
        raise StyleforgeError(f"{src}: no images found (searched recursively for .png, .jpg, .webp and the other "
                              "formats Pillow reads)")
    return [Target(key, p, out / key) for p, key in unique_keys(found)]


def load_target_image(path: PathLike, resolution: int, channels: int = 3) -> Tuple[np.ndarray, dict]:
    """Read an image as the official projector does: RGB (L for 1-channel networks), centre square crop,
    LANCZOS resize to ``resolution``. Returns uint8 [H, W, C] and a small record of what was done."""
    import PIL.Image

    if channels not in (1, 3):
        raise StyleforgeError(
            f"the network makes {channels}-channel images; projection supports 1 (grayscale) or 3 (RGB) channels"
        )
    path = Path(path)
    try:
        with PIL.Image.open(path) as probe:
            mode_in = probe.mode
        im = read_image(path, "RGB" if channels == 3 else "L")
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as e:
        raise StyleforgeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2)
    im = im.crop(box).resize((resolution, resolution), PIL.Image.LANCZOS)
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    info = {"source": str(path), "size": [w, h], "mode": mode_in, "crop_box": list(box),
            "resize": f"lanczos {s}->{resolution}", "upscaled": s < resolution}
    return arr, info


# ----------------------------------------------------------------------------------------------------------
# Loss choice


def vgg_available(vgg: Optional[PathLike] = None) -> bool:
    if vgg is not None:
        return Path(vgg).expanduser().is_file()
    p = VGG16LPIPS.cached_path()
    return p.is_file() and p.stat().st_size > 0


def effective_loss(loss: Optional[str], vgg: Optional[PathLike] = None, allow_download: Optional[bool] = None) -> str:
    """The loss that will be used: ``loss`` if given; otherwise vgg when its file is present (or may be
    downloaded), else discriminator."""
    from ..utils.cache import downloads_allowed

    if loss is not None:
        if loss not in LOSSES:
            raise StyleforgeError(f"use {', '.join(LOSSES)}", param="loss", value=repr(loss))
        return loss
    if vgg is not None or vgg_available() or downloads_allowed(allow_download):
        return "vgg"
    return "discriminator"


def build_feature_net(
    loss: Optional[str],
    D: Optional[torch.nn.Module] = None,
    vgg: Optional[PathLike] = None,
    allow_download: Optional[bool] = None,
    device=None,
    callback: Optional[Callback] = None,
) -> FeatureNet:
    """The feature network for ``loss`` (None: vgg if its file is present, else the discriminator ``D`` with a
    note to ``callback``, which also hears of a download). ``D``: the network's discriminator, needed for the
    discriminator loss."""
    rep = reporter(callback)
    chosen = effective_loss(loss, vgg, allow_download)
    if loss is None and chosen == "discriminator":
        rep.note(StyleforgeWarning(
            f"{VGG16LPIPS.cached_path().name} not found (looked for {VGG16LPIPS.cached_path()}); using {{loss}} "
            f"discriminator instead of the official VGG16 LPIPS loss (get it with '{fetch_command('vgg16')}', "
            f"from {VGG16LPIPS.url()}, or pass {{allow_download}})", also={"loss": "loss", "allow_download": "allow_download=True"}))
    if chosen == "vgg":
        net: FeatureNet = VGG16LPIPS(vgg, allow_download, callback=rep)
    elif chosen == "discriminator":
        if D is None:
            raise ValueError("the discriminator loss needs the network's discriminator D")
        net = DiscriminatorFeatures(D.eval().requires_grad_(False))
    else:
        net = PixelLoss()
    return net.to(device) if device is not None else net


def load_networks_for(network: PathLike, need_D: bool, device=None):
    """The generator (and the discriminator, for the discriminator loss) of ``network``, read once."""
    try:
        bundle = zoo.load_networks(network, ("G", "D") if need_D else ("G",), device)
    except MissingNetworkError:
        if not need_D:
            raise
        raise StyleforgeError(
            f"{network}: holds no discriminator, which {{name}} discriminator needs; use {{name}} pixel, or "
            f"{{name}} vgg with NVIDIA's vgg16.pt ({VGG16LPIPS.url()})", param="loss"
        ) from None
    return bundle.networks["G"].eval().requires_grad_(False), bundle.networks.get("D")


# ----------------------------------------------------------------------------------------------------------
# The batch driver

_OUTPUT_SETTINGS = {"outdir": "output folder", "overwrite": "overwrite=True"}  # named by the notes about outputs


@dataclass
class BatchResult:
    outdir: Path
    done: List[Target] = field(default_factory=list)
    skipped: List[Target] = field(default_factory=list)
    failed: List[Tuple[Target, str]] = field(default_factory=list)
    loss: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        s = f"projected {len(self.done)} target(s)"
        if self.skipped:
            s += f", skipped {len(self.skipped)} already finished"
        if self.failed:
            s += f", {len(self.failed)} failed"
        return s + f" in {self.seconds:.1f}s; outputs in {self.outdir}"


def _settings(network: Path, space: str, num_steps: int, seed: int, loss: str) -> dict:
    return {"network": str(network), "space": space, "num_steps": num_steps, "seed": seed, "loss": loss}


def _finished(t: Target, settings: dict) -> Optional[bool]:
    """True: finished with these settings; False: not finished; None: finished with other settings."""
    record = finished_record(t.outdir / DONE_FILE, t.outdir / "projected_w.npz")
    if record is None:
        return False
    old = record.get("settings")
    old = old if isinstance(old, dict) else {}
    return True if all(old.get(k) == v for k, v in settings.items()) else None


def project_files(
    target: PathLike,
    outdir: PathLike,
    network: Optional[PathLike] = None,
    space: str = "w",
    num_steps: int = 1000,
    seed: int = 303,
    loss: Optional[str] = None,
    vgg: Optional[PathLike] = None,
    save_video: bool = True,
    shard: Tuple[int, int] = (0, 1),
    device: str = "auto",
    allow_download: Optional[bool] = None,
    batch_size: int = 1,
    overwrite: bool = False,
    feature_net: Optional[FeatureNet] = None,
    callback: Optional[Callback] = None,
    config=None,
    tune_allocator: bool = False,
) -> BatchResult:
    """Project every target image into ``network`` and write the per-target outputs (see module doc).

    ``feature_net`` overrides ``loss`` (e.g. a small net in tests); ``config`` a ProjectorConfig (its
    num_steps/space are replaced by the arguments). ``tune_allocator``: on CPU, call
    :func:`~styleforge.utils.perf.tune_cpu_allocator` first (process-wide; the CLI turns it on).
    ``callback`` hears of each batch's steps (a transient stage ``project <name>``), of every failed target as
    it happens (a ``failed`` note), and of skips and fallbacks (notes).
    """
    from ..utils.perf import tune_cpu_allocator
    from .projector import ProjectorConfig, check_projectable, compute_w_stats

    t_begin = time.perf_counter()
    rep = reporter(callback)
    cfg = replace(config or ProjectorConfig(), num_steps=num_steps, space=space)
    cfg.validate()
    if batch_size < 1:
        raise StyleforgeError("must be at least 1", param="batch_size", value=batch_size)
    targets = find_targets(target, outdir)
    single = len(targets) == 1 and targets[0].name == ""
    targets = shard_items(targets, shard)
    out_root = check_outdir(outdir)  # created with the first target's outputs
    res = BatchResult(outdir=out_root)

    def fail(t: Target, why) -> None:  # one note per failed target, as it happens
        res.failed.append((t, str(why)))
        rep.note(why, level="failed")

    net_path = zoo.resolve(network, allow_download, rep)
    loss_name = feature_net.name if feature_net is not None else effective_loss(loss, vgg, allow_download)
    settings = _settings(Path(net_path).resolve(), space, num_steps, seed, loss_name)

    todo: List[Target] = []
    for t in targets:
        state = False if overwrite else _finished(t, settings)
        if state is True:
            res.skipped.append(t)
        elif state is None:
            fail(t, StyleforgeWarning(f"{t.outdir} holds a projection made with other settings; use another "
                                      "{outdir} or {overwrite}", also=_OUTPUT_SETTINGS))
        else:
            todo.append(t)
    if single and res.skipped:
        rep.note(StyleforgeWarning(f"{targets[0].path} is already projected in {out_root} ({DONE_FILE} exists); "
                                   "pass {overwrite} to redo it", also=_OUTPUT_SETTINGS))
    if not todo:
        res.seconds = time.perf_counter() - t_begin
        return res

    dev = resolve_device(device)
    if dev.type == "cpu" and tune_allocator:
        tune_cpu_allocator()
    need_D = feature_net is None and loss_name == "discriminator"
    G, D = load_networks_for(net_path, need_D, dev)
    check_projectable(G)
    if G.img_channels not in (1, 3):
        raise StyleforgeError(f"{net_path}: the network makes {G.img_channels}-channel images; projection supports 1 or 3")
    if feature_net is None:
        feature_net = build_feature_net(loss, D, vgg, allow_download, dev, rep)
    else:
        feature_net = feature_net.to(dev)
    res.loss = loss_name
    if save_video:
        why = ffmpeg_available()
        if why is not None:
            rep.note(f"proj.mp4 is skipped: mp4 writing is unavailable ({why})")
            save_video = False

    # Load targets; a bad one is reported and skipped.
    loaded = []
    for t in todo:
        try:
            arr, info = load_target_image(t.path, G.img_resolution, G.img_channels)
            loaded.append((t, arr, info))
        except StyleforgeError as e:
            fail(t, e)
    if not loaded:
        res.seconds = time.perf_counter() - t_begin
        return res

    stats = compute_w_stats(G, cfg.w_avg_samples, cfg.w_avg_seed)
    start_img = None
    for b in range(0, len(loaded), batch_size):
        chunk = loaded[b: b + batch_size]
        try:
            outs, start_img = _project_chunk(G, chunk, feature_net, cfg, seed, stats, save_video, rep,
                                             settings, net_path, start_img)
        except StyleforgeError as e:
            for t, _, _ in chunk:
                fail(t, f"{t.path}: {e}")
            continue
        for t, _, _ in chunk:
            err = outs.get(t.name)
            if err:
                fail(t, err)
            else:
                res.done.append(t)
    res.seconds = time.perf_counter() - t_begin
    return res


def _project_chunk(G, chunk, feature_net, cfg, seed, stats, save_video, rep: Reporter, settings, net_path,
                   start_img):
    """Project one batch of loaded targets and write their outputs.

    Returns ({name: error message or None}, the start image (w_avg rendered), computed once per run)."""
    from ..images import to_image_range, uint8_as_projector as to_uint8
    from .projector import project, synthesize

    names = [t.name or t.path.name for t, _, _ in chunk]
    desc = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1})"
    arrs = np.stack([a for _, a, _ in chunk])  # [N, H, W, C]
    targets = torch.from_numpy(arrs).permute(0, 3, 1, 2).to(torch.float32)
    with rep.stage(f"project {desc}", total=cfg.num_steps, unit="step", transient=True) as advance:
        def cb(step, total, dist):
            if step % 10 == 0 or step == total - 1:
                advance(1, dist=" ".join(f"{d:.4f}" for d in dist.tolist()[:4]))
            else:
                advance(1)

        r = project(G, targets, feature_net, seeds=seed, config=cfg, stats=stats, keep_steps=save_video, callback=cb)
    out: dict = {}
    if start_img is None:
        start_img = to_uint8(synthesize(G, stats.w_avg.reshape(1, 1, -1).repeat(1, G.num_ws, 1)))[0]
    synth = synthesize(G, r.w)  # official rendering: the network's own noise maps
    synth_u8 = to_uint8(synth)
    synth_opt_noise = to_uint8(synthesize(G, r.w, r.noise)) if r.noise else synth_u8
    dev = next(G.parameters()).device
    with torch.no_grad():
        final_dist = feature_net.distance(feature_net(to_image_range(synth).to(dev)), feature_net(targets.to(dev))).cpu()
    for i, (t, arr, info) in enumerate(chunk):
        t0 = time.perf_counter()
        try:
            ensure_outdir(t.outdir, param="outdir")
            save_image(arr, t.outdir / "target.png")
            save_image(synth_u8[i], t.outdir / "proj.png")
            save_npz(t.outdir / "projected_w.npz", w=r.w[i: i + 1].numpy().astype(np.float32))
            if r.noise:
                save_npz(t.outdir / "projected_noise.npz", **{k: v[i].numpy() for k, v in r.noise.items()})
            video = None
            if save_video and r.w_steps is not None:
                frames = (np.concatenate([arr, to_uint8(synthesize(G, r.w_steps[i, s: s + 1]))[0]], axis=1)
                          for s in range(r.num_steps))
                video = write_mp4(frames, t.outdir / "proj.mp4", fps=10, bitrate="16M")
            a = torch.tensor(arr, dtype=torch.float64).permute(2, 0, 1)[None]
            p = torch.tensor(synth_u8[i], dtype=torch.float64).permute(2, 0, 1)[None]
            ps = psnr(synth_u8[i], arr)
            metrics = {
                "feature_distance": float(final_dist[i]),
                "lpips": float(final_dist[i]) if feature_net.name == "vgg" else None,
                "psnr": _finite(ps),
                "ssim": round(float(ssim(p, a, data_range=255.0)[0]), 6),
                "psnr_start": _finite(psnr(start_img, arr)),
                "psnr_with_optimised_noise": _finite(psnr(synth_opt_noise[i], arr)),
                "last_step_distance": float(r.dist[i]),
            }
            record = {
                "settings": settings,
                "target": info,
                "network": str(net_path),
                "space": r.space,
                "num_steps": r.num_steps,
                "seed": r.seeds[i],
                "loss": feature_net.describe(),
                "resolution": G.img_resolution,
                "num_ws": G.num_ws,
                "w_dim": G.w_dim,
                "batch_size": len(chunk),
                "final": metrics,
                "timings": {
                    "w_stats_s": round(stats.seconds, 3),
                    "projection_s": round(r.seconds, 3),
                    "s_per_step": round(r.seconds / r.num_steps, 5),
                    "outputs_s": round(time.perf_counter() - t0, 3),
                    "note": "projection_s covers the whole batch of batch_size targets",
                },
                "w_std": stats.w_std,
                "files": sorted(["target.png", "proj.png", "projected_w.npz"]
                                + (["projected_noise.npz"] if r.noise else []) + (["proj.mp4"] if video else [])),
                "render_note": "proj.png uses the network's noise_const maps (official; generate.py --projected-w "
                               "reproduces it); psnr_with_optimised_noise uses projected_noise.npz",
            }
            save_json(t.outdir / DONE_FILE, record)
            out[t.name] = None
        except (StyleforgeError, OSError) as e:
            out[t.name] = f"{t.path}: writing outputs failed ({e})"
    return out, start_img


def _finite(x: float) -> Optional[float]:
    return round(x, 4) if np.isfinite(x) else None
