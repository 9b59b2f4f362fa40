"""Files in, files out: the library behind ``clip_generate.py`` and ``clip_direction.py``.

:func:`clip_generate` loads the network (``zoo``) and CLIP (:func:`~styleforge.perceptual.clip.load_clip`), picks
the start latents (the mean latent, seeds, or a latent file), runs :func:`~.optimize.optimize_latents` and writes,
in ``outdir`` (created with the first output; every file atomic), per start latent k:

- ``clip{k:02d}.png``: the final image (official generate.py conversion: ``generate.py --projected-w clip_w.npz``
  renders the same pixels);
- ``frames/clip{k:02d}-{step:04d}.png``: the image every ``frame_every`` steps and at the end;
- ``clip{k:02d}.gif`` (or ``.mp4``): those frames as an animation;

and ``clip_w.npz`` (``w`` final [N, num_ws, w_dim], ``w0`` start, ``seeds`` when started from seeds), last
``clip.json`` (settings, the CLIP model and weights, similarity to the prompt per step and image, timings).

:func:`load_direction_inputs` does the loading for a text direction (:func:`~.direction.text_direction`); the
caller saves it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from .. import zoo
from ..errors import StyleforgeError
from ..latents import load_ws
from ..utils.fileio import ensure_outdir, save_image, save_json, save_npz
from ..utils.perf import tune_cpu_allocator
from ..utils.progress import Callback, reporter
from ..utils.runtime import check_outdir, resolve_device
from ..video import ffmpeg_available, write_gif, write_mp4
from .optimize import MODES, TextGuideConfig, optimize_latents, start_latents

PathLike = Union[str, os.PathLike]


@dataclass
class GenerateRun:
    outdir: Path
    images: List[Path] = field(default_factory=list)
    videos: List[Path] = field(default_factory=list)
    similarity_start: List[float] = field(default_factory=list)
    similarity_final: List[float] = field(default_factory=list)
    seconds_per_step: float = 0.0

    def __str__(self) -> str:
        sims = ", ".join(f"{a:.3f} -> {b:.3f}" for a, b in zip(self.similarity_start, self.similarity_final))
        vid = f", {self.videos[0].name}" if self.videos else ""
        return (f"wrote {len(self.images)} image(s) to {self.outdir}: clip00.png{vid}, frames/, clip_w.npz, clip.json "
                f"(similarity to the prompt {sims}; {self.seconds_per_step:.3f} s/step)")


def _load_generator(network, device, allow_download, callback):
    dev = resolve_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    G, path = zoo.load_generator(network, dev, allow_download, callback)
    return G, path, dev


def _load_clip(clip_model, clip_weights, dev, allow_download, callback):
    from ..perceptual.clip import load_clip

    return load_clip(clip_model, clip_weights, device=dev, allow_download=allow_download, callback=callback)


def _identity_net(kind: Optional[str], network, dev, allow_download, callback):
    if kind is None:
        return None
    from ..perceptual import DiscriminatorFeatures, VGG16LPIPS

    if kind == "vgg":
        return VGG16LPIPS(allow_download=allow_download, map_location=dev, callback=callback).to(dev)
    if kind == "discriminator":
        D = zoo.load_networks(network, roles=("D",), device=dev, allow_download=allow_download).networks["D"]
        return DiscriminatorFeatures(D).to(dev)
    raise StyleforgeError("use vgg or discriminator", param="identity", value=repr(kind))


def clip_generate(
    outdir: PathLike, prompt: str, *, network=None, seeds: Optional[Sequence[int]] = None, truncation_psi: float = 0.7,
    class_idx: Optional[int] = None, w_file: Optional[PathLike] = None, mode: Optional[str] = None,
    num_steps: int = 300, l2_lambda: float = 0.008, initial_learning_rate: float = 0.1,
    identity: Optional[str] = None, identity_lambda: Optional[float] = None, clip_model: str = "ViT-B-32",
    clip_weights: str = "openai", frame_every: int = 20, video: str = "gif", fps: float = 10, device: str = "auto",
    allow_download: Optional[bool] = None, callback: Optional[Callback] = None,
) -> GenerateRun:
    """See the module docstring. ``mode`` None: ``edit`` when ``w_file`` is given, else ``generate``."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise StyleforgeError('is empty; describe the image in words, e.g. "a smiling face"', param="prompt",
                              value=repr(prompt))
    mode = mode or ("edit" if w_file is not None else "generate")
    if mode not in MODES:
        raise StyleforgeError(f"use {' or '.join(MODES)}", param="mode", value=repr(mode))
    if identity is not None and mode != "edit":
        raise StyleforgeError("the identity term needs edit mode (--w, or --mode edit)", param="identity")
    outdir = check_outdir(outdir)
    rep = reporter(callback)
    if identity == "vgg":  # a missing vgg16.pt is reported before anything is loaded
        from ..perceptual import VGG16LPIPS

        VGG16LPIPS.locate(None, allow_download, rep)
    G, net_path, dev = _load_generator(network, device, allow_download, rep)
    w = load_ws(w_file, G.num_ws, G.w_dim) if w_file is not None else None
    w0 = start_latents(G, seeds=seeds, w=w, truncation_psi=truncation_psi, class_idx=class_idx)
    clip = _load_clip(clip_model, clip_weights, dev, allow_download, rep)
    ident = _identity_net(identity, network, dev, allow_download, rep)
    cfg = TextGuideConfig(num_steps=num_steps, mode=mode, initial_learning_rate=initial_learning_rate,
                          l2_lambda=l2_lambda, identity_lambda=identity_lambda or 0.0, frame_every=frame_every)
    res = optimize_latents(G, clip, prompt, w0, config=cfg, identity=ident, callback=rep)

    ensure_outdir(outdir, param="outdir")
    run = GenerateRun(outdir)
    frames_dir = ensure_outdir(outdir / "frames", param="outdir")
    for k in range(res.images.shape[0]):
        for step, imgs in res.frames:
            save_image(imgs[k], frames_dir / f"clip{k:02d}-{step:04d}.png")
        run.images.append(save_image(res.images[k], outdir / f"clip{k:02d}.png"))
    if video == "mp4" and ffmpeg_available() is not None:
        rep.note(f"mp4 writing is unavailable ({ffmpeg_available()}); writing GIFs instead")
        video = "gif"
    if video in ("gif", "mp4"):
        for k in range(res.images.shape[0]):
            frames = [imgs[k] for _, imgs in res.frames]
            if video == "gif":
                run.videos.append(write_gif(frames, outdir / f"clip{k:02d}.gif", fps=fps, max_side=512))
            else:
                run.videos.append(write_mp4(frames, outdir / f"clip{k:02d}.mp4", fps=fps))
    extra = {"seeds": np.asarray(list(seeds), dtype=np.int64)} if seeds is not None else {}
    save_npz(outdir / "clip_w.npz", w=res.w.numpy().astype(np.float32), w0=res.w0.numpy().astype(np.float32), **extra)
    start = (f"latents {w_file}" if w_file is not None else
             f"seeds {','.join(map(str, seeds))} (truncation {truncation_psi})" if seeds is not None else "mean latent")
    save_json(outdir / "clip.json", {
        "prompt": prompt, "network": str(net_path), "start": start, "clip": clip.source,
        "identity": identity, **res.summary(),
        "similarity_per_step": [[round(float(v), 6) for v in row] for row in res.similarity.T],
        "loss_per_step": [[round(float(v), 6) for v in row] for row in res.loss.T],
        "distance_per_step": [[round(float(v), 6) for v in row] for row in res.distance.T],
        "note": "similarity_per_step[k][s]: cosine similarity of image k to the prompt before step s; the last "
                "entry is the final latent's",
    })
    run.similarity_start = res.similarity[0].tolist()
    run.similarity_final = res.similarity[-1].tolist()
    run.seconds_per_step = float(np.median(res.step_seconds))
    return run


def load_direction_inputs(network=None, clip_model: str = "ViT-B-32", clip_weights: str = "openai",
                          w_files: Sequence[PathLike] = (), device: str = "auto",
                          allow_download: Optional[bool] = None, callback: Optional[Callback] = None):
    """(G, its file, CLIP, sample latents or None) for :func:`~.direction.text_direction`."""
    rep = reporter(callback)
    G, net_path, dev = _load_generator(network, device, allow_download, rep)
    w = np.concatenate([load_ws(f, G.num_ws, G.w_dim) for f in w_files]) if w_files else None
    clip = _load_clip(clip_model, clip_weights, dev, allow_download, rep)
    return G, net_path, clip, w
