"""The full-size generator configurations the speed benchmarks time: official paper256 and FFHQ-1024 shapes
(z/w 512, 8-layer mapping, channel_max 512, architecture skip), random weights, fp32, frozen."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name: (resolution, channel_base)
CONFIGS = {
    "paper256": (256, 16384),
    "ffhq1024": (1024, 32768),
}


def full_size_generator(name: str, seed: int = 0, **synthesis):
    """``synthesis``: extra SynthesisConfig settings (e.g. ``num_fp16_res=4, conv_clamp=256`` as the official
    configs, for the fp16 path)."""
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    from styleforge.networks import Generator, GeneratorConfig, MappingConfig, SynthesisConfig

    res, base = CONFIGS[name]
    torch.manual_seed(seed)
    return Generator(GeneratorConfig(
        img_resolution=res, mapping=MappingConfig(num_layers=8),
        synthesis=SynthesisConfig(channel_base=base, channel_max=512, **synthesis),
    )).eval().requires_grad_(False)
