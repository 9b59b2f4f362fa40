"""Text-guided latent optimisation in W+ (StyleCLIP's optimisation method), for generation and for editing.

:func:`optimize_latents` moves latents ``w`` [N, num_ws, w_dim] (one w per synthesis layer, W+) so that CLIP finds
the generated images closer to a prompt:

- start ``w0``: the network's mean latent repeated over the layers, a seed's (truncated) latent, or a given latent
  (:func:`start_latents`);
- loss per image: ``1 - cos(CLIP(image), CLIP(prompt))`` (StyleCLIP's ``1 - logits / 100`` for ViT-B/32, whose
  logit scale is 100, written for any logit scale); in **edit** mode plus ``l2_lambda * sum((w - w0)^2)`` (the
  squared distance over all layers and dimensions) and, when a feature network is given,
  ``identity_lambda * distance(features(image), features(image of w0))`` (StyleCLIP's ArcFace term, here any
  :class:`~styleforge.perceptual.features.FeatureNet`); **generate** mode has the CLIP term only;
- Adam (betas 0.9, 0.999), lr ``0.1 x ramp(t)``, t = step / num_steps: cosine ramp-down over the last 25 %,
  linear ramp-up over the first 5 % (StyleCLIP's ``get_lr``, the official projector's schedule; lr 0 at step 0);
  300 steps; synthesis noise constant (``noise_mode='const'``);
- the image reaches CLIP through :func:`~styleforge.perceptual.clip.preprocess.preprocess_tensor`: generator range
  [-1, 1] to [0, 1], shortest side bicubic (antialiased) to CLIP's input size, centre crop, **CLIP's mean/std
  normalisation**. StyleCLIP instead upsamples x7 and average-pools by ``size // 32`` and feeds [-1, 1] pixels
  without CLIP's normalisation, so its similarities are computed on inputs CLIP was not trained on.

Each image's loss depends only on its own latent and Adam works element-wise, so images optimised together give
what each gives alone (up to float rounding of the batched convolutions). Similarity is recorded for the latent
*before* every update, and once more for the final latent. The generator and CLIP stay frozen.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..errors import StyleforgeError
from ..images import uint8_as_generate
from ..latents import check_truncation, seed_to_z
from ..perceptual.features import FeatureNet
from ..utils.progress import Callback, reporter

__all__ = ["TextGuideConfig", "TextGuideResult", "optimize_latents", "start_latents", "learning_rate", "MODES"]

MODES = ("generate", "edit")


@dataclass(frozen=True)
class TextGuideConfig:
    """Settings; defaults are StyleCLIP's (``run_optimization.py``), ``identity_lambda`` included (0: off)."""

    num_steps: int = 300
    mode: str = "generate"  # 'generate' (CLIP term only) or 'edit' (+ l2 to w0, + identity)
    initial_learning_rate: float = 0.1
    lr_rampdown_length: float = 0.25
    lr_rampup_length: float = 0.05
    l2_lambda: float = 0.008
    identity_lambda: float = 0.0
    noise_mode: str = "const"
    frame_every: int = 20  # keep the images every k steps (StyleCLIP saves every 20); 0: none
    fused_modconv: Optional[bool] = False  # see ProjectorConfig: input gradients only, ~2x faster on CPU

    def validate(self) -> "TextGuideConfig":
        if self.mode not in MODES:
            raise StyleforgeError(f"use {' or '.join(MODES)}", param="mode", value=repr(self.mode))
        if self.num_steps < 1:
            raise StyleforgeError("must be at least 1", param="num_steps", label="number of steps", value=self.num_steps)
        for name in ("initial_learning_rate", "l2_lambda", "identity_lambda"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise StyleforgeError("must be a finite number >= 0", param=name, value=v)
        if self.frame_every < 0:
            raise StyleforgeError("must be >= 0 (0: no frames)", param="frame_every", value=self.frame_every)
        return self


def learning_rate(step: int, cfg: TextGuideConfig) -> float:
    """lr at ``step``: ``initial_learning_rate`` x (cosine ramp-down over the last ``lr_rampdown_length``) x
    (linear ramp-up over the first ``lr_rampup_length``)."""
    t = step / cfg.num_steps
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / cfg.lr_rampup_length)
    return cfg.initial_learning_rate * ramp


def _device_of(module: nn.Module) -> torch.device:
    return next(iter(module.parameters())).device


def check_generator(G: nn.Module) -> None:
    if not getattr(G, "has_w_space", False) or not hasattr(G, "synthesis"):
        raise StyleforgeError("text guidance needs a StyleGAN generator with a W space (mapping + synthesis)")


def start_latents(G: nn.Module, seeds: Optional[Sequence[int]] = None, w: Optional[Union[np.ndarray, torch.Tensor]] = None,
                  truncation_psi: float = 0.7, class_idx: Optional[int] = None) -> torch.Tensor:
    """Start latents [N, num_ws, w_dim] on G's device: ``w`` as given (checked against G), else each seed's z
    (drawn as the official scripts do) mapped with ``truncation_psi``, else the network's mean latent ``w_avg``
    in every layer (StyleCLIP's free generation starts from the mean latent)."""
    check_generator(G)
    dev = _device_of(G)
    if w is not None:
        t = torch.as_tensor(np.asarray(w, dtype=np.float32) if not isinstance(w, torch.Tensor) else w)
        if t.ndim != 3 or tuple(t.shape[1:]) != (G.num_ws, G.w_dim):
            raise StyleforgeError(f"latents have shape {list(t.shape)}, this network needs [N, {G.num_ws}, {G.w_dim}] "
                                  "(latents of another network?)", param="w", label="the start latents")
        return t.to(dev, torch.float32)
    if seeds is not None:
        check_truncation(truncation_psi)
        seeds = list(seeds)
        c = None
        if getattr(G, "c_dim", 0):
            if class_idx is None or not 0 <= class_idx < G.c_dim:
                raise StyleforgeError(f"the network is conditional ({G.c_dim} classes): pass {{name}} 0..{G.c_dim - 1}",
                                      param="class_idx", label="class")
            c = torch.zeros([len(seeds), G.c_dim], device=dev)
            c[:, class_idx] = 1
        z = torch.from_numpy(np.stack([seed_to_z(s, G.z_dim) for s in seeds])).to(dev)
        with torch.no_grad():
            return G.mapping(z, c, truncation_psi=truncation_psi, update_w_avg=False).to(torch.float32)
    return G.mapping.w_avg.detach().to(dev, torch.float32).reshape(1, 1, -1).repeat(1, G.num_ws, 1)


@dataclass
class TextGuideResult:
    """What :func:`optimize_latents` found for N start latents.

    - ``w`` / ``w0``: final and start latents [N, num_ws, w_dim] (float32, CPU);
    - ``similarity``: [num_steps + 1, N] cosine similarity to the prompt of the latent before each update, the
      last row that of the final latent; ``loss``: [num_steps, N] the loss of each step; ``distance``: [num_steps + 1, N]
      ``sum((w - w0)^2)`` at the same points as ``similarity``;
    - ``frames``: (step, [N, H, W, C] uint8) every ``frame_every`` steps and the final images (step = num_steps);
    - ``images``: the final images [N, H, W, C] uint8 (official generate.py conversion).
    """

    w: torch.Tensor
    w0: torch.Tensor
    similarity: np.ndarray
    loss: np.ndarray
    distance: np.ndarray
    frames: List[Tuple[int, np.ndarray]]
    images: np.ndarray
    config: TextGuideConfig
    seconds: float
    step_seconds: List[float] = field(default_factory=list)

    def summary(self) -> dict:
        return {"mode": self.config.mode, "num_steps": self.config.num_steps, "config": asdict(self.config),
                "similarity_start": self.similarity[0].tolist(), "similarity_final": self.similarity[-1].tolist(),
                "distance_final": self.distance[-1].tolist(), "seconds": round(self.seconds, 3),
                "seconds_per_step": round(float(np.median(self.step_seconds)), 4) if self.step_seconds else None}


@contextlib.contextmanager
def _frozen(*modules: Optional[nn.Module]) -> Iterator[None]:
    flags = [(p, p.requires_grad) for m in modules if m is not None for p in m.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def text_features(clip: nn.Module, prompt: Union[str, torch.Tensor]) -> torch.Tensor:
    """[1, embed_dim] unit-length features of a prompt (or given features, normalised)."""
    if isinstance(prompt, torch.Tensor):
        f = prompt.reshape(1, -1).to(clip.positional_embedding.device, torch.float32)
        return torch.nn.functional.normalize(f, dim=-1)
    with torch.no_grad():
        return clip.encode_prompts(prompt)


def optimize_latents(
    G: nn.Module,
    clip: nn.Module,
    prompt: Union[str, torch.Tensor],
    w0: torch.Tensor,
    *,
    config: Optional[TextGuideConfig] = None,
    identity: Optional[FeatureNet] = None,
    callback: Optional[Callback] = None,
    **overrides,
) -> TextGuideResult:
    """Optimise ``w0`` [N, num_ws, w_dim] (see :func:`start_latents`) toward ``prompt`` (text, or CLIP text
    features) with CLIP model ``clip`` (:func:`styleforge.perceptual.clip.load_clip`). ``overrides`` replace config
    fields (``num_steps=50, mode="edit"``). Progress: one stage, advanced every step with the mean similarity."""
    cfg = replace(config or TextGuideConfig(), **overrides).validate()
    check_generator(G)
    if identity is not None and cfg.mode == "edit" and cfg.identity_lambda <= 0:
        raise StyleforgeError("an identity network was given but identity_lambda is 0; set it above 0",
                              param="identity_lambda")
    dev = _device_of(G)
    w0 = start_latents(G, w=w0).detach()
    target = text_features(clip, prompt).to(dev)
    edit = cfg.mode == "edit"
    use_identity = edit and identity is not None and cfg.identity_lambda > 0

    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=cfg.initial_learning_rate, betas=(0.9, 0.999))
    sims, losses, dists, frames, step_times = [], [], [], [], []
    rep = reporter(callback)

    def render(ws):
        return G.synthesis(ws, noise_mode=cfg.noise_mode, fused_modconv=cfg.fused_modconv)

    t_start = time.perf_counter()
    with _frozen(G, clip, identity), rep.stage("text guidance", total=cfg.num_steps, unit="step") as advance:
        id_ref = None
        if use_identity:
            with torch.no_grad():
                id_ref = identity((render(w0) + 1) * 127.5)
        for step in range(cfg.num_steps):
            t0 = time.perf_counter()
            lr = learning_rate(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            img = render(w)
            sim = (clip.encode_pixels(img) * target).sum(dim=-1)  # [N]
            dist = (w - w0).square().flatten(1).sum(dim=1)
            loss = 1 - sim
            if edit:
                loss = loss + cfg.l2_lambda * dist
            if use_identity:
                loss = loss + cfg.identity_lambda * identity.distance(identity((img + 1) * 127.5), id_ref)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            sims.append(sim.detach().cpu().numpy())
            losses.append(loss.detach().cpu().numpy())
            dists.append(dist.detach().cpu().numpy())
            if cfg.frame_every and step % cfg.frame_every == 0:
                frames.append((step, uint8_as_generate(img.detach())))
            step_times.append(time.perf_counter() - t0)
            advance(1, similarity=round(float(sim.detach().mean()), 4), loss=round(float(loss.detach().mean()), 4))
        with torch.no_grad():
            img = render(w)
            sims.append((clip.encode_pixels(img) * target).sum(dim=-1).cpu().numpy())
            dists.append((w - w0).square().flatten(1).sum(dim=1).cpu().numpy())
            final = uint8_as_generate(img)
    frames.append((cfg.num_steps, final))
    return TextGuideResult(
        w=w.detach().cpu().clone(), w0=w0.cpu().clone(), similarity=np.stack(sims).astype(np.float32),
        loss=np.stack(losses).astype(np.float32), distance=np.stack(dists).astype(np.float32), frames=frames,
        images=final, config=cfg, seconds=time.perf_counter() - t_start, step_seconds=step_times,
    )
