"""SeFa (closed-form factorisation of latent semantics): the directions in W that the style affines of a range of
layers stretch the most, found without any labels or sampling.

For the chosen latent layers (ws indices), the weights of the affines that turn w into styles are stacked,
[sum of channels, w_dim], each output channel scaled to unit length; the factors are the eigenvectors of
``A^T A`` (w_dim x w_dim), taken with a symmetric eigensolver (real, orthonormal) and sorted by eigenvalue, largest
first (genforce's ``np.linalg.eig`` returns them unsorted and possibly complex). Each eigenvector's sign is fixed
so that its largest entry is positive, so results are reproducible.

Which affines belong to latent layer i (StyleGAN2-ADA's layout): the convolutions that take w_i; the ToRGB layers
share their w with the next block's first convolution and are left out, except the last one (the only user of the
last w), as genforce's SeFa does. The layer ranges genforce offers are ``all``, ``0-1`` (coarse), ``2-5`` (middle)
and ``6-13`` (fine, at 256+ px); any ``a-b`` or ``a,b,c`` works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import StyleforgeError
from .direction import Direction, layers_text, parse_layers
from .linalg import eigh_descending
from .render import check_w_space

PRESETS = ("all", "0-1", "2-5", "6-13")


def style_affines(G: torch.nn.Module) -> Dict[int, List[Tuple[str, torch.nn.Module]]]:
    """Latent layer index -> the (name, affine) pairs SeFa uses for it (see the module doc)."""
    check_w_space(G)
    syn = G.synthesis
    out: Dict[int, List[Tuple[str, torch.nn.Module]]] = {i: [] for i in range(G.num_ws)}
    w_idx = 0
    for res in syn.block_resolutions:
        block = getattr(syn, f"b{res}")
        convs = [n for n in ("conv0", "conv1") if hasattr(block, n)]
        for k, n in enumerate(convs):
            out[w_idx + k].append((f"b{res}.{n}", getattr(block, n).affine))
        if hasattr(block, "torgb") and w_idx + len(convs) == G.num_ws - 1:
            out[G.num_ws - 1].append((f"b{res}.torgb", block.torgb.affine))
        w_idx += len(convs)
    return out


@dataclass
class SeFaResult:
    eigenvalues: np.ndarray      # [w_dim], largest first
    directions: List[Direction]  # the top factors, unit vectors in W
    layers: Tuple[int, ...]
    affines: List[str]           # which affine weights were factorised


def factorize(weights: Sequence[torch.Tensor]) -> Tuple[np.ndarray, np.ndarray]:
    """(eigenvalues [w_dim] descending, eigenvectors [w_dim, w_dim] as rows) of the stacked, channel-normalised
    affine weights (each [channels, w_dim])."""
    A = torch.cat([w.detach().to("cpu", torch.float64) for w in weights])
    A = A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return eigh_descending((A.T @ A).numpy())


def sefa(G: torch.nn.Module, layers: Union[None, str, Sequence[int]] = "all", top: int = 5) -> SeFaResult:
    """The ``top`` SeFa factors of ``G`` for latent ``layers`` (``all``, ``a-b``, ``a,b``), as Directions that
    apply to those layers (``meta``: eigenvalue, rank)."""
    chosen = parse_layers(layers, G.num_ws)
    if not 1 <= top <= G.w_dim:
        raise StyleforgeError(f"use 1 to {G.w_dim} (the network's w_dim)", param="top", value=top)
    affines = style_affines(G)
    picked = [(n, a) for i in chosen for n, a in affines[i]]
    vals, vecs = factorize([a.weight for _, a in picked])
    spec = layers_text(chosen, G.num_ws)
    applies = None if spec == "all" else chosen
    dirs = [Direction(vecs[k], layers=applies, name=f"sefa{k:02d}", origin="sefa",
                      meta={"rank": k, "eigenvalue": float(vals[k]), "layer_range": spec})
            for k in range(top)]
    return SeFaResult(vals, dirs, chosen, [n for n, _ in picked])
