"""Browse a set of directions (SeFa factors, GANSpace components): per direction a grid over seeds (rows) x
strengths (columns), an overview (first seed, one row per direction) and an ``index.html`` showing them.

Files in ``outdir``: ``factor00.png``, ``factor01.png``, ... (one per direction), ``overview.png``,
``index.html``. Everything is written atomically; the folder is created when the first grid exists.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from ..images import make_grid
from ..utils.fileio import atomic_path, ensure_outdir, save_image
from ..utils.progress import Callback, reporter
from .direction import Direction, layers_text, sweep
from .edit import check_strengths
from .render import seeds_to_ws, synthesize

PathLike = Union[str, os.PathLike]


@dataclass
class GridPages:
    outdir: Optional[Path]
    grids: List[Path] = field(default_factory=list)
    overview: Optional[Path] = None
    index: Optional[Path] = None


def factor_grids(G: torch.nn.Module, directions: Sequence[Direction], seeds: Sequence[int],
                 strengths: Sequence[float], outdir: PathLike, truncation_psi: float = 0.7,
                 class_idx: Optional[int] = None, noise_mode: str = "const", batch_size: int = 8, title: str = "",
                 callback: Optional[Callback] = None, overview_name: str = "overview.png") -> GridPages:
    """Render and write the grids, the overview (file ``overview_name``) and ``index.html`` (see the module doc).
    Each direction applies to its own layers, with its own scale (GANSpace: strengths in standard deviations)."""
    strengths = check_strengths(strengths)
    seeds = list(seeds)
    ws = seeds_to_ws(G, seeds, truncation_psi, class_idx).cpu().numpy()
    pages = GridPages(None)
    first_rows = []
    out = None
    with reporter(callback).stage("grids", total=len(directions) * len(seeds) * len(strengths), unit="img") as advance:
        for k, d in enumerate(directions):
            edited = sweep(ws, d, strengths).reshape(-1, G.num_ws, G.w_dim)  # seed-major
            frames = []
            for i in range(0, len(edited), batch_size):
                frames.extend(synthesize(G, edited[i: i + batch_size], noise_mode, batch_size))
                advance(min(batch_size, len(edited) - i))
            first_rows.extend(frames[: len(strengths)])
            out = out or ensure_outdir(outdir)
            pages.outdir = out
            pages.grids.append(save_image(make_grid(frames, cols=len(strengths)), out / f"factor{k:02d}.png"))
    if out is None:
        return pages
    pages.overview = save_image(make_grid(first_rows, cols=len(strengths)), out / overview_name)
    pages.index = write_index(out / "index.html", directions, pages, seeds, strengths, G, truncation_psi, title)
    return pages


def _describe(d: Direction, num_ws: int) -> str:
    bits = [f"layers {layers_text(d.layers, num_ws)}"]
    for key, label in (("eigenvalue", "eigenvalue"), ("std", "std"), ("explained_variance", "variance explained")):
        if key in d.meta:
            bits.append(f"{label} {d.meta[key]:.4g}")
    return ", ".join(bits)


def write_index(path: Path, directions: Sequence[Direction], pages: GridPages, seeds: Sequence[int],
                strengths: Sequence[float], G: torch.nn.Module, truncation_psi: float, title: str) -> Path:
    """``index.html``: the overview, then each direction's grid with what it is (pixelated upscaling, so small
    networks' images stay sharp)."""
    res = G.img_resolution
    zoom = max(1, 96 // res)  # show tiny images at least 96 px a cell
    cols = len(strengths)
    strengths_txt = ", ".join(f"{s:g}" for s in strengths)
    seeds_txt = ", ".join(map(str, seeds))
    unit = " standard deviations" if any(d.scale != 1 for d in directions) else ""

    def img(p: Path, n_rows: int) -> str:
        return (f'<img src="{html.escape(p.name)}" width="{res * cols * zoom}" height="{res * n_rows * zoom}" '
                f'alt="{html.escape(p.stem)}">')

    parts = [
        "<!doctype html>", '<html><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;background:#fafafa}img{image-rendering:pixelated;"
        "display:block;margin:.5em 0 2em}h2{font-size:1.1em;margin-bottom:.2em}p{color:#444;margin:.2em 0}</style>",
        "</head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p>Columns: strengths {html.escape(strengths_txt)}{unit}. Rows: seeds {html.escape(seeds_txt)} "
        f"(truncation psi {truncation_psi:g}).</p>",
        "<h2>Overview</h2>", f"<p>Seed {seeds[0]}, one row per direction, top to bottom.</p>",
        img(pages.overview, len(directions)),
    ]
    for d, grid in zip(directions, pages.grids):
        parts += [f"<h2>{html.escape(grid.stem)}: {html.escape(d.name)}</h2>",
                  f"<p>{html.escape(_describe(d, G.num_ws))}</p>", img(grid, len(seeds))]
    parts.append("</body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
