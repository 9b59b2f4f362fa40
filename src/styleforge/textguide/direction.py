"""A latent direction from two prompts ("a face" -> "a smiling face"), as a vector plus metadata.

Both methods work on the text direction ``d = normalize(CLIP(target) - CLIP(source))`` (StyleCLIP's global
directions use the same target-minus-neutral text difference) and on sample latents: seeds mapped with truncation
(default 16 seeds, psi 0.7), or given latents.

- ``gradient`` (default; one forward and backward pass per sample): for each sample, the gradient in W+ of
  ``cos(CLIP(G(w)), d)``, scaled to unit length so that every sample counts the same; the direction is their
  mean. It is the first-order answer to "which way in W+ makes CLIP see more of the target than of the source".
- ``optimize``: each sample is optimised toward ``d`` in edit mode (:func:`~.optimize.optimize_latents`,
  ``steps`` steps, l2 regulariser) and the direction is the mean displacement ``w' - w``.

The vector [num_ws, w_dim] is scaled to unit RMS layer norm (each layer's row has length about 1, like the unit
normals InterFaceGAN and the SVM directions give). For ``gradient`` the ``scale`` is 1, so strengths mean what
they mean for those directions; for ``optimize`` it is the RMS layer norm of the mean displacement, so strength 1
is the average optimised edit. The metadata records W's spread over the samples (RMS distance of a layer's w to
the samples' mean, the projector's ``w_std``) for comparison, and the mean change of ``cos(CLIP(image), d)`` over
the samples at strength 1 (positive when the direction does what was asked).

This module makes the vector; saving it as a direction file for ``edit.py`` is the caller's business (the
commands turn it into a :class:`styleforge.directions.Direction`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import StyleforgeError
from ..utils.progress import Callback, reporter
from .optimize import TextGuideConfig, check_generator, optimize_latents, start_latents

__all__ = ["TextDirection", "text_direction", "METHODS"]

METHODS = ("gradient", "optimize")


@dataclass
class TextDirection:
    """``vector`` [num_ws, w_dim] float32 (unit RMS layer norm), ``scale`` (length of one unit of strength) and
    ``meta`` (prompts, method, samples, measured effect; JSON)."""

    vector: np.ndarray
    scale: float
    name: str
    meta: Dict[str, Any] = field(default_factory=dict)


def _unit_rms_rows(v: torch.Tensor) -> torch.Tensor:
    norm = v.square().sum(dim=-1).mean().sqrt()
    if not torch.isfinite(norm) or norm.item() == 0:
        raise StyleforgeError("the prompts give no direction here (zero gradient); try other prompts or more samples")
    return v / norm


def _clip_delta(clip: nn.Module, source: str, target: str) -> torch.Tensor:
    with torch.no_grad():
        a, b = clip.encode_prompts([source, target])
    d = b - a
    if d.norm().item() < 1e-6:
        raise StyleforgeError("the two prompts have the same CLIP features; give two different descriptions",
                              param="target", label="the target prompt")
    return torch.nn.functional.normalize(d, dim=-1)[None]


def text_direction(
    G: nn.Module,
    clip: nn.Module,
    source: str,
    target: str,
    *,
    method: str = "gradient",
    seeds: Optional[Sequence[int]] = None,
    w: Optional[Union[np.ndarray, torch.Tensor]] = None,
    truncation_psi: float = 0.7,
    batch_size: int = 4,
    steps: int = 50,
    config: Optional[TextGuideConfig] = None,
    callback: Optional[Callback] = None,
) -> TextDirection:
    """The direction from prompt ``source`` to prompt ``target`` for generator ``G`` (see the module docstring);
    samples: latents ``w`` [N, num_ws, w_dim], else ``seeds`` (default 0-15) with ``truncation_psi``."""
    check_generator(G)
    if method not in METHODS:
        raise StyleforgeError(f"use {' or '.join(METHODS)}", param="method", value=repr(method))
    for name, p in (("source", source), ("target", target)):
        if not isinstance(p, str) or not p.strip():
            raise StyleforgeError("is empty; describe the image in words", param=name, value=repr(p),
                                  label=f"the {name} prompt")
    if batch_size < 1:
        raise StyleforgeError("must be at least 1", param="batch_size", value=batch_size)
    seeds = list(range(16)) if seeds is None and w is None else (list(seeds) if seeds is not None else None)
    ws = start_latents(G, seeds=seeds, w=w, truncation_psi=truncation_psi).detach()
    n = ws.shape[0]
    if n < 1:
        raise StyleforgeError("no samples to find the direction with", param="seeds")
    delta = _clip_delta(clip, source, target)
    rep = reporter(callback)
    t0 = time.perf_counter()
    cfg = config or TextGuideConfig()

    def score(batch: torch.Tensor) -> torch.Tensor:
        img = G.synthesis(batch, noise_mode=cfg.noise_mode, fused_modconv=cfg.fused_modconv)
        return (clip.encode_pixels(img) * delta).sum(dim=-1)

    if method == "gradient":
        total = torch.zeros_like(ws[0])
        with rep.stage("CLIP gradients", total=n, unit="sample") as advance:
            for i in range(0, n, batch_size):
                chunk = ws[i: i + batch_size].clone().requires_grad_(True)
                (g,) = torch.autograd.grad(score(chunk).sum(), [chunk])
                norms = g.flatten(1).norm(dim=1).clamp_min(1e-20).view(-1, 1, 1)
                total += (g / norms).sum(dim=0)
                advance(len(chunk))
        vector = _unit_rms_rows(total / n)
        scale = 1.0
    else:
        cfg = replace(cfg, mode="edit", num_steps=int(steps), frame_every=0)
        moved = torch.zeros_like(ws[0])
        with rep.stage("optimising samples", total=n, unit="sample") as advance:
            for i in range(0, n, batch_size):
                res = optimize_latents(G, clip, delta[0], ws[i: i + batch_size], config=cfg)
                moved += (res.w.to(ws.device) - res.w0.to(ws.device)).sum(dim=0)
                advance(len(res.w))
        mean_move = moved / n
        scale = float(mean_move.square().sum(dim=-1).mean().sqrt())
        vector = _unit_rms_rows(mean_move)

    # the measured effect of strength 1 on the samples
    with torch.no_grad():
        before, after = [], []
        for i in range(0, n, batch_size):
            chunk = ws[i: i + batch_size]
            before.append(score(chunk))
            after.append(score(chunk + scale * vector))
        gain = (torch.cat(after) - torch.cat(before)).cpu().numpy()
    if not math.isfinite(scale) or scale <= 0:
        raise StyleforgeError("the samples did not move: no direction (try more steps)", param="steps")
    spread = float((ws - ws.mean(dim=0, keepdim=True)).square().sum(dim=-1).mean().sqrt()) if n > 1 else None
    meta = {
        "source": source, "target": target, "method": method, "samples": n,
        "seeds": None if seeds is None else [int(s) for s in seeds], "truncation_psi": truncation_psi if w is None else None,
        "steps": int(steps) if method == "optimize" else None,
        "clip": getattr(clip, "source", {}), "w_spread": spread,
        "similarity_gain_at_strength_1": {"mean": float(gain.mean()), "min": float(gain.min()), "max": float(gain.max())},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return TextDirection(vector=vector.detach().cpu().numpy().astype(np.float32), scale=scale,
                         name=f"{source} -> {target}", meta=meta)
