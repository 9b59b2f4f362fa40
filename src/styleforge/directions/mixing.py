"""Style mixing as the official ``style_mixing.py`` does it: each image is the row seed's latents with the latent
layers ``styles`` (default ``0-6``) taken from the column seed.

As officially: z of each seed is ``RandomState(seed).randn(z_dim)``; w is mapped without truncation and truncated
by hand, ``w_avg + (w - w_avg) * psi``; pixels are converted as ``generate.py`` converts them. Files:
``{row}-{col}.png`` for every pair, ``{seed}-{seed}.png`` for every seed, and ``grid.png``: a black top-left
cell, the column seeds' images across the top, the row seeds' images down the left, the mixes inside.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..errors import StyleforgeError
from ..latents import check_truncation, class_label, seed_to_z
from ..utils.fileio import ensure_outdir, save_image
from ..utils.progress import Callback, reporter
from .direction import parse_layers
from .render import check_w_space, device_of

PathLike = Union[str, os.PathLike]
Images = Dict[Tuple[int, int], np.ndarray]


def mix_ws(ws_row: torch.Tensor, ws_col: torch.Tensor, styles: Sequence[int]) -> torch.Tensor:
    """The row latents [num_ws, w_dim] with layers ``styles`` replaced by the column latents'."""
    out = ws_row.clone()
    idx = list(styles)
    out[idx] = ws_col[idx]
    return out


def style_mix(G: torch.nn.Module, row_seeds: Sequence[int], col_seeds: Sequence[int],
              styles: Union[str, Sequence[int]] = "0-6", truncation_psi: float = 1.0, noise_mode: str = "const",
              class_idx: Optional[int] = None, callback: Optional[Callback] = None) -> Images:
    """{(row, col): image} for every pair and {(seed, seed): image} for every seed; images [H, W, C] uint8."""
    from ..images import uint8_as_generate

    check_w_space(G)
    check_truncation(truncation_psi)
    row_seeds, col_seeds = list(row_seeds), list(col_seeds)
    for seeds, what in ((row_seeds, "rows"), (col_seeds, "cols")):
        if not seeds:
            raise StyleforgeError("give at least one seed, e.g. 85,100,75", param=what)
    styles = parse_layers(styles, G.num_ws, param="styles")
    dev = device_of(G)
    c = class_label(G, class_idx, dev)
    all_seeds = list(dict.fromkeys(row_seeds + col_seeds))
    z = torch.from_numpy(np.stack([seed_to_z(s, G.z_dim) for s in all_seeds])).to(dev)
    images: Images = {}
    with torch.no_grad(), reporter(callback).stage(
            "style mixing", total=len(all_seeds) + len(row_seeds) * len(col_seeds), unit="img") as advance:
        w = G.mapping(z, None if c is None else c.expand(len(all_seeds), -1))
        w_avg = G.mapping.w_avg
        w = w_avg + (w - w_avg) * truncation_psi
        ws = dict(zip(all_seeds, w))
        for s in all_seeds:
            images[(s, s)] = uint8_as_generate(G.synthesis(ws[s][None], noise_mode=noise_mode))[0]
            advance()
        for r in row_seeds:
            for col in col_seeds:
                mixed = mix_ws(ws[r], ws[col], styles)
                images[(r, col)] = uint8_as_generate(G.synthesis(mixed[None], noise_mode=noise_mode))[0]
                advance()
    return images


def mixing_grid(images: Images, row_seeds: Sequence[int], col_seeds: Sequence[int]) -> np.ndarray:
    """The official grid: (rows + 1) x (cols + 1) cells, black top-left, column seeds on top, row seeds left."""
    h, w, ch = next(iter(images.values())).shape
    grid = np.zeros(((len(row_seeds) + 1) * h, (len(col_seeds) + 1) * w, ch), dtype=np.uint8)
    for i, r in enumerate([None] + list(row_seeds)):
        for j, col in enumerate([None] + list(col_seeds)):
            if i == 0 and j == 0:
                continue
            key = (col, col) if i == 0 else (r, r) if j == 0 else (r, col)
            grid[i * h: (i + 1) * h, j * w: (j + 1) * w] = images[key]
    return grid


@dataclass
class MixingResult:
    outdir: Path
    files: List[Path]
    grid: Path


def write_style_mixing(images: Images, row_seeds: Sequence[int], col_seeds: Sequence[int], outdir: PathLike
                       ) -> MixingResult:
    """Write ``{row}-{col}.png`` for every image and ``grid.png`` (atomically; the folder is made here)."""
    out = ensure_outdir(outdir)
    files = [save_image(img, out / f"{a}-{b}.png") for (a, b), img in images.items()]
    grid = save_image(mixing_grid(images, row_seeds, col_seeds), out / "grid.png")
    return MixingResult(out, files, grid)
