"""Render docs/augment_examples.png: one astronaut image under each ADA augmentation of the 'bgc' set.

Rows 1-12: a single op, its parameter swept over six quantiles of its distribution (the official debug_percentile
mode: the op always fires). For xflip / rotate90 / lumaflip the quantile picks the discrete choice, so some cells are
the identity.
Row 13: the full 'bgc' pipe, random draws with p = 1. Row 14: 'bgc' with p = 0.3 (a typical ADA value).

    .venv/bin/python benchmarks/augment_examples.py [--out docs/augment_examples.png] [--size 80]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from styleforge.train.augment import AUGPIPE_PRESETS, AugmentPipe

QUANTILES = (0.05, 0.2, 0.35, 0.65, 0.8, 0.95)


def load_astronaut(size: int) -> torch.Tensor:
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
    return torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None] * 2 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "augment_examples.png"))
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    x = load_astronaut(args.size)
    n = len(QUANTILES)
    rows = []  # (label, [images])
    rows.append(("original", [x[0]] * n))
    t0 = time.time()
    for op in AUGPIPE_PRESETS["bgc"]:
        pipe = AugmentPipe({op: 1.0})
        cells = [pipe(x, debug_percentile=q)[0] for q in QUANTILES]
        rows.append((op, cells))
    g = torch.Generator().manual_seed(args.seed)
    for p in (1.0, 0.3):
        pipe = AugmentPipe("bgc", p=p)
        rows.append((f"bgc p={p:g}", list(pipe(x.expand(n, -1, -1, -1), generator=g))))
    elapsed = time.time() - t0

    s, pad, label_w, head_h = args.size, 4, 110, 22
    W = label_w + n * (s + pad) + pad
    H = head_h + len(rows) * (s + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for j, q in enumerate(QUANTILES):
        draw.text((label_w + pad + j * (s + pad) + s // 2 - 12, 5), f"q={q:g}", fill=(0, 0, 0), font=font)
    draw.text((6, 5), "op \\ quantile", fill=(0, 0, 0), font=font)
    for i, (label, cells) in enumerate(rows):
        y0 = head_h + pad + i * (s + pad)
        draw.text((6, y0 + s // 2 - 6), label, fill=(0, 0, 0), font=font)
        for j, cell in enumerate(cells):
            canvas.paste(Image.fromarray(to_uint8(cell)), (label_w + pad + j * (s + pad), y0))
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    canvas.save(out, optimize=True)
    print(f"wrote {out} ({W}x{H}); augmentations took {elapsed:.2f}s on CPU")


if __name__ == "__main__":
    main()
