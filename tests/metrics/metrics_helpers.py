"""Shared helpers for the metrics tests: a folder of tiny PNGs, the detector stand-in file, a tiny generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image


def png_folder(root: Path, n: int = 20, res: int = 16, channels: int = 3, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        shape = (res, res, channels) if channels == 3 else (res, res)
        PIL.Image.fromarray(rng.randint(0, 256, shape).astype(np.uint8)).save(root / f"img{i:03d}.png")
    return root
