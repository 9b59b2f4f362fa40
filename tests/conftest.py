"""Shared pytest fixtures: tiny network configs, paths to the official-format fixtures (optional)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The suite checks CPU behaviour (what CI has); a machine with a GPU would otherwise run the `--device auto`
# cases there (2-rank torchrun on one GPU, deterministic CUDA kernels...). GPUs are checked by
# benchmarks/gpu_check.py; STYLEFORGE_TEST_CUDA=1 keeps them visible. Set before torch initialises CUDA, and
# inherited by the subprocesses the tests start.
if os.environ.get("STYLEFORGE_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = Path(os.environ.get("STYLEFORGE_FIXTURES", ROOT.parent / "shared" / "fixtures" / "official"))
OFFICIAL_NAMES = ["paper256_r128", "cifar_cond_r32", "resnet_fp32_r64"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own styleforge cache and never downloads."""
    monkeypatch.setenv("STYLEFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("STYLEFORGE_ALLOW_DOWNLOAD", raising=False)
    for v in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(v, raising=False)


def official_pickle(name: str) -> Path:
    p = OFFICIAL / f"{name}.pkl"
    if not p.is_file():
        pytest.skip(f"official-format fixture {p} not present")
    return p


def tiny_generator(arch="skip", c_dim=0, res=16, seed=0, **synth):
    from styleforge.networks import Generator, GeneratorConfig, MappingConfig, SynthesisConfig

    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(
        z_dim=32, w_dim=32, c_dim=c_dim, img_resolution=res, img_channels=3,
        mapping=MappingConfig(num_layers=2),
        synthesis=SynthesisConfig(channel_base=256, channel_max=32, architecture=arch, **synth),
    ))
    # make every term matter: non-zero noise strengths, biases and w_avg
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
    return G.eval()


def tiny_discriminator(arch="resnet", c_dim=0, res=16, seed=0, **kw):
    from styleforge.networks import Discriminator, DiscriminatorConfig

    torch.manual_seed(seed)
    return Discriminator(DiscriminatorConfig(
        c_dim=c_dim, img_resolution=res, img_channels=3, architecture=arch, channel_base=256, channel_max=32, **kw
    )).eval()


def assert_one_line_error(result, *needles, exit_code=1, prefixes=("error:",)):
    """A CLI result that failed with exactly one error line (containing every needle) and no traceback.

    ``exit_code=None`` accepts any non-zero exit. Returns the error line.
    """
    if exit_code is None:
        assert result.exit_code != 0, result.output
    else:
        assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.startswith(tuple(prefixes))]
    assert len(lines) == 1, result.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture()
def one_thread():
    """Tiny networks run fastest (and steadiest on a shared machine) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cli_message(message, command) -> str:
    """A StyleforgeError or StyleforgeWarning as the command-line tool ``command`` (a click command) shows it:
    the settings it names called by that command's flags (``class 12: ...`` -> ``--class 12: ...``)."""
    import click

    from styleforge.commands.options import message_text

    return message_text(message, click.Context(command))
