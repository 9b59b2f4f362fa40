"""What the editing tools share: seeds to latents, latents to images, latents checked against a network."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import StyleforgeError
from ..images import uint8_as_generate
from ..latents import check_truncation, class_label, seed_to_z


def device_of(G: torch.nn.Module) -> torch.device:
    return next(G.parameters()).device


def check_w_space(G: torch.nn.Module) -> None:
    if not getattr(G, "has_w_space", False):
        raise StyleforgeError("editing needs a StyleGAN generator with a W space (mapping + synthesis); this network "
                              "has none")


def check_latents(ws, G: torch.nn.Module, source: str = "latents") -> None:
    """``ws`` must be [N, num_ws, w_dim] of this network (latents of another network are refused by name)."""
    shape = tuple(ws.shape)
    if len(shape) != 3 or shape[1:] != (G.num_ws, G.w_dim):
        raise StyleforgeError(f"{source}: shape {list(shape)}, this network needs [N, {G.num_ws}, {G.w_dim}] "
                              "(latents of another network?)")


def seeds_to_ws(G: torch.nn.Module, seeds: Sequence[int], truncation_psi: float = 1.0,
                class_idx: Optional[int] = None, batch_size: int = 256) -> torch.Tensor:
    """[N, num_ws, w_dim] on G's device: each seed's z drawn as the official scripts do
    (``RandomState(seed).randn(z_dim)``), mapped with the truncation psi (and the class of a conditional network)."""
    check_w_space(G)
    check_truncation(truncation_psi)
    dev = device_of(G)
    c = class_label(G, class_idx, dev)
    seeds = list(seeds)
    out = []
    with torch.no_grad():
        for i in range(0, len(seeds), batch_size):
            chunk = seeds[i: i + batch_size]
            z = torch.from_numpy(np.stack([seed_to_z(s, G.z_dim) for s in chunk])).to(dev)
            out.append(G.mapping(z, None if c is None else c.expand(len(chunk), -1), truncation_psi=truncation_psi))
    return torch.cat(out) if out else torch.zeros([0, G.num_ws, G.w_dim], device=dev)


def synthesize(G: torch.nn.Module, ws, noise_mode: str = "const", batch_size: int = 8) -> np.ndarray:
    """[N, H, W, C] uint8 images of latents ``ws`` (numpy or torch, [N, num_ws, w_dim]), converted as official
    generate.py converts (so strength 0 of an edit is generate.py's image of that latent)."""
    dev = device_of(G)
    ws = torch.as_tensor(np.asarray(ws, dtype=np.float32) if not isinstance(ws, torch.Tensor) else ws)
    out = []
    with torch.no_grad():
        for i in range(0, len(ws), batch_size):
            out.append(uint8_as_generate(G.synthesis(ws[i: i + batch_size].to(dev, torch.float32),
                                                     noise_mode=noise_mode)))
    if not out:
        return np.zeros([0, G.img_resolution, G.img_resolution, G.img_channels], dtype=np.uint8)
    return np.concatenate(out)
