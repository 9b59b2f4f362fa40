"""Semantic control of a SEGAN network: each layer's subspace coordinates as edit Directions, and grids of
layer x coordinate x value (the EigenGAN / SEGAN figure).

A layer's coordinates are the first ``d`` entries of the w in its W+ slot (:mod:`.networks`), so coordinate ``k``
of slot ``i`` is the W+ direction ``e_k`` restricted to slot ``i``: moving along it changes exactly that
coordinate of the layers reading slot ``i`` (the conv of that resolution and the ToRGB before it) and nothing else.
In mode 2 the layer then moves along its basis vector ``u_k`` (scaled by ``L_k``); in mode 1 its feature map
moves along ``u_k``; in mode 3 the style input moves by ``L_k`` in entry ``k``. One unit of strength is the
standard deviation of that w entry over the mapping network's outputs (``num_samples`` z draws), so ``--range
-3,3`` spans +-3 sigma as the EigenGAN figures do.

    from styleforge import zoo
    from styleforge.segan.control import coordinate_directions, control_grids
    G, _ = zoo.load_generator("runs/00000-x-segan-mode2/network-snapshot-000200.safetensors")
    dirs = coordinate_directions(G, layers="all", dims=range(6))
    control_grids(G, dirs, seeds=[0], values=[-3, -1.5, 0, 1.5, 3], outdir="out/control")

The Directions are ordinary ones: ``save_directions`` writes them, ``edit.py --direction FILE:K`` applies them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..directions import Direction, parse_layers, save_directions
from ..directions.grids import factor_grids
from ..errors import StyleforgeError
from ..utils.fileio import save_image, save_json
from ..utils.progress import Callback
from .networks import is_segan

PathLike = Union[str, os.PathLike]


def check_subspaces(G: torch.nn.Module, name: str = "the network") -> None:
    """A one-line error unless ``G`` is a SEGAN generator with subspaces (mode 1, 2 or 3)."""
    if not is_segan(G):
        raise StyleforgeError(f"{name} is not a SEGAN network (it has no per-layer subspaces); train one with "
                              "train.py --cfg segan --mode 2", param="network")
    if G.mode == 0:
        raise StyleforgeError(f"{name} is a SEGAN mode-0 network (plain StyleGAN2, no subspaces); semantic control "
                              "needs mode 1, 2 or 3", param="network")


def slot_coords(G: torch.nn.Module) -> Dict[int, int]:
    """W+ slot -> how many coordinates its layers read (the largest of the layers reading it)."""
    out: Dict[int, int] = {}
    for info in G.layers():
        out[info.slot] = max(out.get(info.slot, 0), info.coords)
    return out


def w_std(G: torch.nn.Module, num_samples: int = 10000, seed: int = 0, batch: int = 1000) -> np.ndarray:
    """[w_dim] standard deviation of each w entry over ``num_samples`` mapped z ~ N(0, I) (labels drawn uniformly
    for a conditional network)."""
    dev = next(G.parameters()).device
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(G.w_dim, dtype=torch.float64)
    total_sq = torch.zeros(G.w_dim, dtype=torch.float64)
    with torch.no_grad():
        for i in range(0, num_samples, batch):
            n = min(batch, num_samples - i)
            z = torch.randn([n, G.z_dim], generator=g).to(dev)
            c = None
            if G.c_dim:
                c = torch.nn.functional.one_hot(torch.randint(G.c_dim, [n], generator=g), G.c_dim).float().to(dev)
            w = G.mapping(z, c)[:, 0].double().cpu()
            total += w.sum(0)
            total_sq += w.square().sum(0)
    mean = total / num_samples
    return (total_sq / num_samples - mean.square()).clamp_min(0).sqrt().float().numpy()


def coordinate_directions(G: torch.nn.Module, layers: Union[None, str, Sequence[int]] = "all",
                          dims: Sequence[int] = range(6), num_samples: int = 10000, seed: int = 0,
                          name: str = "the network") -> List[Direction]:
    """One Direction per (layer slot, coordinate), slot-major: ``e_k`` in W restricted to the slot, one unit = the
    standard deviation of w entry ``k`` (see the module docstring). A coordinate a slot's subspace does not have is
    a one-line error."""
    check_subspaces(G, name)
    slots = parse_layers(layers, G.num_ws)
    dims = [int(k) for k in dims]
    if not dims:
        raise StyleforgeError("no subspace dimensions given", param="dims")
    coords = slot_coords(G)
    for i in slots:
        bad = [k for k in dims if not 0 <= k < coords[i]]
        if bad:
            raise StyleforgeError(f"subspace dimension {bad[0]} is beyond layer {i}'s {coords[i]} coordinates "
                                  f"(dimensions 0-{coords[i] - 1})", param="dims", value=bad[0])
    std = w_std(G, num_samples, seed)
    names = {}
    for info in G.layers():
        names.setdefault(info.slot, []).append(info.name)
    out = []
    for i in slots:
        for k in dims:
            v = np.zeros(G.w_dim, dtype=np.float32)
            v[k] = 1
            scales = [float(info.layer.subspace.L[k]) if G.mode in (1, 2) else float(info.layer.scale[k])
                      for info in G.layers() if info.slot == i and info.coords > k]
            out.append(Direction(v, layers=(i,), name=f"layer{i}-dim{k}", origin="segan",
                                 scale=float(max(std[k], 1e-8)),
                                 meta={"segan_mode": G.mode, "slot": i, "dim": k, "layers_reading": names[i],
                                       "L": scales, "unit": "standard deviation of w entry"}))
    return out


@dataclass
class ControlResult:
    directions: List[Direction]
    outdir: Path
    figure: Path  # layer x coordinate rows, value columns, first seed
    layer_figures: List[Path]
    index: Optional[Path]
    directions_file: Path


def control_grids(G: torch.nn.Module, directions: Sequence[Direction], seeds: Sequence[int],
                  values: Sequence[float], outdir: PathLike, truncation_psi: float = 1.0,
                  class_idx: Optional[int] = None, noise_mode: str = "const", batch_size: int = 8,
                  network: str = "", callback: Optional[Callback] = None) -> ControlResult:
    """Write the control figures to ``outdir``: ``control.png`` (rows: layer x coordinate, columns: values, the
    first seed), ``layerNN.png`` (one per slot: rows coordinate x seed), per-direction grids ``factorNN.png`` (seeds
    x values) with ``index.html`` (:func:`styleforge.directions.grids.factor_grids`), the Directions
    ``coordinates.npz`` (for ``edit.py --direction coordinates.npz:K``) and ``control.json``."""
    directions = list(directions)
    seeds = list(seeds)
    pages = factor_grids(G, directions, seeds, values, outdir, truncation_psi, class_idx, noise_mode, batch_size,
                         title=f"SEGAN mode {G.mode} subspace coordinates of {network or 'the network'}",
                         callback=callback, overview_name="control.png")  # the overview is the figure
    out = Path(pages.outdir)
    figure = pages.overview
    import PIL.Image

    per_layer = []
    slots = sorted({d.layers[0] for d in directions})
    for i in slots:
        rows = []
        for k, d in enumerate(directions):
            if d.layers[0] != i:
                continue
            grid = np.asarray(PIL.Image.open(pages.grids[k]))  # seeds x values of this coordinate
            rows.append(grid)
        per_layer.append(save_image(np.concatenate(rows, axis=0), out / f"layer{i:02d}.png"))
    dfile = save_directions(out / "coordinates.npz", directions, network=network, method="segan-coordinates",
                            segan_mode=G.mode)
    save_json(out / "control.json", {
        "network": network, "segan_mode": G.mode, "seeds": seeds, "values": [float(v) for v in values],
        "truncation_psi": truncation_psi, "class": class_idx, "noise_mode": noise_mode,
        "figure": figure.name, "layer_figures": [p.name for p in per_layer],
        "directions": [{"index": k, "file": f"coordinates.npz:{k}", "grid": pages.grids[k].name, **d.to_json()}
                       for k, d in enumerate(directions)],
    })
    return ControlResult(directions, out, figure, per_layer, pages.index, dfile)
