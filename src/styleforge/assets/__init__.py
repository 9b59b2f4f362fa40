"""Files that ship inside the package (the bundled default model) and the fallback demo network.

``default_network_path()`` is what every tool uses when ``--network`` is omitted: the bundled model if
the package has one, otherwise a small randomly initialised demo generator that is built once,
deterministically, into the styleforge cache (so a fresh install can run end to end offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..utils.cache import BUNDLED_MODELS_DIR  # assets/models/: also reachable by name (--network faces32)
from ..utils.progress import Callback, reporter

BUNDLED_MODELS = ("faces32.safetensors",)  # the default, in order of preference, under assets/models/
DEMO_NAME = "demo-random-generator-v1.safetensors"


def bundled_model_path():
    for name in BUNDLED_MODELS:
        p = BUNDLED_MODELS_DIR / name
        if p.is_file():
            return p
    return None


def build_demo_network():
    """The deterministic demo generator: 32x32 RGB, random weights (seed 0). It draws colour blobs, not faces."""
    import torch

    from ..networks import Generator, GeneratorConfig, MappingConfig, SynthesisConfig

    cfg = GeneratorConfig(
        z_dim=64, w_dim=64, img_resolution=32, img_channels=3,
        mapping=MappingConfig(num_layers=2),
        synthesis=SynthesisConfig(channel_base=1024, channel_max=64),
    )
    gen = torch.Generator().manual_seed(0)
    state = torch.random.get_rng_state()
    try:
        torch.random.set_rng_state(gen.get_state())
        G = Generator(cfg)
    finally:
        torch.random.set_rng_state(state)
    return G.eval()


def default_network_path(callback: Optional[Callback] = None) -> Path:
    """The bundled model, or the demo network (built into the cache on first use, which ``callback`` is told)."""
    p = bundled_model_path()
    if p is not None:
        return p
    from ..networks.checkpoint import save_networks
    from ..utils.cache import cache_dir

    demo = cache_dir() / DEMO_NAME
    if not demo.is_file():
        demo.parent.mkdir(parents=True, exist_ok=True)
        G = build_demo_network()
        save_networks(demo, {"G_ema": G}, extra={"note": "random-init demo network; not trained"})
        reporter(callback).note(f"no bundled model in this install; built a random-init demo network at {demo}")
    return demo
