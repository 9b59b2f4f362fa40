"""What the training tests share (tests/test_train_*.py): the digits datasets, tiny networks, run helpers.

Everything runs tiny networks (16 px, 32 channels) on a 200-image dataset built from sklearn's digits, on one
CPU thread (faster than two for nets this small, and immune to a busy machine). The fixtures ``data`` and
``one_thread_module`` are imported by the test modules that use them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = {"G": {"z_dim": 32, "w_dim": 32, "synthesis": {"channel_base": 256, "channel_max": 32}},
        "D": {"channel_base": 256, "channel_max": 32}}
SUB_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


@pytest.fixture(autouse=True, scope="module")
def one_thread_module():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def digits(folder: Path, n: int, classes=range(10), size: int = 16) -> Path:
    """``n`` sklearn digits as RGB PNGs in class subfolders (so the dataset has labels)."""
    import PIL.Image
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = [i for i in range(len(d.target)) if d.target[i] in set(classes)][:n]
    for i in keep:
        (folder / str(d.target[i])).mkdir(parents=True, exist_ok=True)
        img = (d.images[i] / 16 * 255).astype(np.uint8)
        PIL.Image.fromarray(img).resize((size, size), PIL.Image.BILINEAR).convert("RGB").save(
            folder / str(d.target[i]) / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from styleforge.train.dataset_tool import convert_dataset

    root = tmp_path_factory.mktemp("train_data")
    out = {}
    out["digits"] = convert_dataset(digits(root / "src", 200), root / "digits16.zip", resolution=16).dest
    out["digits5"] = convert_dataset(digits(root / "src5", 100, classes=range(5)), root / "digits5.zip",
                                     resolution=16).dest
    out["digits32"] = convert_dataset(root / "src", root / "digits32.zip", resolution=32, max_images=50).dest
    return out


def train_tiny(**kw):
    """``train()`` with the tiny networks, 8 images a step, a tick every 2 steps, a snapshot every 2 ticks."""
    from styleforge.train.loop import train

    base = dict(cfg="cpu", batch=8, kimg_per_tick=0.016, snap=2, workers=0, overrides=TINY)
    base.update(kw)
    return train(**base)


def tiny_pair(c_dim=0):
    """A 16 px G and D (16 channels, z 16) in train mode."""
    from styleforge.networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

    torch.manual_seed(0)
    G = Generator(GeneratorConfig.from_dict({"z_dim": 16, "w_dim": 16, "c_dim": c_dim, "img_resolution": 16,
                                             "mapping": {"num_layers": 2},
                                             "synthesis": {"channel_base": 128, "channel_max": 16}})).train()
    D = Discriminator(DiscriminatorConfig.from_dict({"c_dim": c_dim, "img_resolution": 16, "channel_base": 128,
                                                     "channel_max": 16})).train()
    return G, D


def file_digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def state_tensors(path: Path) -> dict:
    from styleforge.train.state import load_state_file

    st = load_state_file(path)
    out = {}
    for net, tensors in st["networks"].items():
        for k, v in tensors.items():
            out[f"{net}.{k}"] = v
    for o, sd in st["optimizers"].items():
        for i, s in sd["state"].items():
            for k, v in s.items():
                out[f"opt{o}.{i}.{k}"] = v
    out["pl_mean"] = st["pl_mean"]
    if st["augment_p"] is not None:
        out["augment_p"] = st["augment_p"]
    return out, st


def assert_bit_identical(a: Path, b: Path) -> None:
    ta, sa = state_tensors(a)
    tb, sb = state_tensors(b)
    assert sorted(ta) == sorted(tb)
    diff = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not diff, f"{len(diff)} tensors differ, e.g. {diff[:5]}"
    assert sa["ada"] == sb["ada"]
    for k in ("cur_nimg", "batch_idx", "cur_tick", "tick_start_nimg"):
        assert sa["progress"][k] == sb["progress"][k]
