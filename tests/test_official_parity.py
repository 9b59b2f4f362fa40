"""Official-format pickles: safe loading and pixel parity with the official code's outputs.

The fixtures (../shared/fixtures/official, built by the official NVlabs writer with random weights) hold the
official fp32 (force_fp32) and mixed-precision outputs, computed on an AMD EPYC. Bars: fp32 images and D logits
within 1e-4 max abs; PNGs at most 1 level apart in at most 0.1 % of pixels; ``fp16=True`` follows the official
fp16 path.

Float kernels (MKL's sgemm, oneDNN's convolutions, and above all CPU fp16 arithmetic) round differently on
different instruction sets, so the official code itself is not bit for bit across CPUs. Every tolerance below is
set from the spread we measured across machines and says so next to its assert. Measured on the fixtures' EPYC
(AVX2) and an Intel Xeon with AVX512-FP16/AMX (default, MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2,
ATEN_CPU_CAPABILITY=avx2, oneDNN off, 1 and 2 threads).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import OFFICIAL, OFFICIAL_NAMES, official_pickle
from styleforge.networks.checkpoint import convert_network, load_networks

TOL = 1e-4
# mapping outputs (|ws| <= 6.1): EPYC <= 1e-6; Xeon AVX512/AMX up to 5.1e-6 (a few ulps after 8 sgemm layers).
WS_TOL = 2e-5


@pytest.fixture(scope="module", params=OFFICIAL_NAMES)
def fixture(request):
    path = official_pickle(request.param)
    bundle = load_networks(path)
    d = OFFICIAL / request.param
    load = lambda f: torch.from_numpy(np.load(d / f))  # noqa: E731
    return request.param, path, bundle, d, load


def _per_seed(G, z, c, **kw):
    outs = []
    for i in range(len(z)):
        torch.manual_seed(i)  # what the fixtures did before each call for 'random' noise
        outs.append(G(z[i: i + 1], c[i: i + 1], **kw))
    return torch.cat(outs)


def test_all_networks_load_with_official_configs(fixture):
    name, _, bundle, d, _ = fixture
    manifest = json.loads((d / "manifest.json").read_text())
    assert set(bundle.networks) == {"G", "D", "G_ema"}
    G = bundle.networks["G_ema"]
    assert G.num_ws == manifest["num_ws"] and G.img_resolution == manifest["img_resolution"]
    assert G.c_dim == manifest["c_dim"]
    assert bundle.extra["training_set_kwargs"] == manifest["training_set_kwargs"]


def test_mapping_matches_official(fixture):
    _, _, bundle, _, load = fixture
    G = bundle.networks["G_ema"]
    z, c = load("z.npy"), load("c.npy")
    assert torch.equal(G.mapping.w_avg, load("w_avg.npy"))  # a stored buffer: exact on every machine
    with torch.no_grad():
        for psi, f in [(1.0, "ws_psi1.0.npy"), (0.7, "ws_psi0.7.npy")]:
            ws = torch.cat([G.mapping(z[i: i + 1], c[i: i + 1], truncation_psi=psi) for i in range(len(z))])
            assert (ws - load(f)).abs().max() <= WS_TOL  # cross-CPU spread: see WS_TOL
        ws = torch.cat([G.mapping(z[i: i + 1], c[i: i + 1], truncation_psi=0.7, truncation_cutoff=2) for i in range(len(z))])
        assert (ws - load("ws_psi0.7_cutoff2.npy")).abs().max() <= WS_TOL


def test_truncation_is_exact_given_ws(fixture):
    """Truncation is one elementwise lerp, the same on every machine: applied to the official untruncated ws it
    gives the official truncated ws bit for bit (measured identical on the EPYC and the Xeon)."""
    _, _, bundle, _, load = fixture
    w_avg, ws1 = load("w_avg.npy"), load("ws_psi1.0.npy")
    for f, cutoff in [("ws_psi0.7.npy", None), ("ws_psi0.7_cutoff2.npy", 2)]:
        ref = load(f)
        ours = ws1.clone()
        n = ours.shape[1] if cutoff is None else cutoff
        ours[:, :n] = w_avg.lerp(ws1[:, :n], 0.7)
        assert torch.equal(ours, ref)


@pytest.mark.parametrize("psi", [1.0, 0.7])
@pytest.mark.parametrize("noise", ["const", "none", "random"])
def test_fp32_images_within_tolerance(fixture, psi, noise):
    _, _, bundle, _, load = fixture
    G = bundle.networks["G_ema"]
    with torch.no_grad():
        img = _per_seed(G, load("z.npy"), load("c.npy"), truncation_psi=psi, noise_mode=noise)
    assert (img - load(f"img_fp32_psi{psi}_{noise}.npy")).abs().max() <= TOL


def test_batched_and_non_ema(fixture):
    _, _, bundle, _, load = fixture
    z, c = load("z.npy"), load("c.npy")
    with torch.no_grad():
        assert (bundle.networks["G_ema"](z, c) - load("img_fp32_psi1.0_const_batch8.npy")).abs().max() <= TOL
        assert (bundle.networks["G_ema"].synthesis(load("ws_psi1.0.npy")) -
                load("synth_from_ws_psi1.0_const_fp32_batch8.npy")).abs().max() <= TOL
        not_ema = _per_seed(bundle.networks["G"], z, c)
    assert (not_ema - load("img_G_not_ema_fp32_psi1.0_const.npy")).abs().max() <= TOL


def test_discriminator_logits(fixture):
    _, _, bundle, _, load = fixture
    D, c = bundle.networks["D"], load("c.npy")
    with torch.no_grad():
        assert (D(load("d_input_random.npy"), c) - load("d_logits_fp32_random.npy")).abs().max() <= TOL
        assert (D(load("img_fp32_psi1.0_const.npy"), c) - load("d_logits_fp32_gen.npy")).abs().max() <= TOL
        x = load("d_input_random.npy")
        one = torch.cat([D(x[i: i + 1], c[i: i + 1]) for i in range(len(x))])
    assert (one - load("d_logits_fp32_random_batch1.npy")).abs().max() <= TOL


def test_fp16_reproduces_official_mixed_precision(fixture):
    name, _, bundle, d, load = fixture
    if not (d / "img_mixed_psi1.0_const.npy").exists():
        pytest.skip("fixture has no fp16 layers")
    G, D = bundle.networks["G_ema"], bundle.networks["D"]
    z, c = load("z.npy"), load("c.npy")
    mixed, fp32 = load("img_mixed_psi1.0_const.npy"), load("img_fp32_psi1.0_const.npy")
    drift = (mixed - fp32).abs()  # how far the official fp16 path is from its own fp32 path
    with torch.no_grad():
        img = _per_seed(G, z, c, fp16=True)
        err = (img - mixed).abs()
        # On the fixtures' EPYC our fp16 path gave the official fp16 outputs bit for bit. On a Xeon with
        # AVX512-FP16 the CPU's fp16 kernels round elsewhere: max error 0.40-1.17x the official drift, mean
        # error 0.72-0.83x the mean drift. Running fp32 instead gives mean 1.0x, unrelated fp16 roundings ~1.4x:
        # the mean bound is what shows the official fp16 order is followed.
        assert err.max() <= 1.5 * drift.max()
        assert err.mean() <= 0.95 * drift.mean()
        batch = G(z, c, fp16=True)  # batched fp16: within the official code's own batch drift
        assert (batch - load("img_mixed_psi1.0_const_batch8.npy")).abs().max() <= 3 * drift.max()
        d_drift = (load("d_logits_mixed_random.npy") - load("d_logits_fp32_random.npy")).abs().max()
        d_err = (D(load("d_input_random.npy"), c, fp16=True) - load("d_logits_mixed_random.npy")).abs().max()
        assert d_err <= max(TOL, 1.5 * d_drift)  # measured 0.37-0.82x the official fp16 drift of D's logits


def test_convert_round_trip_is_bit_identical(fixture, tmp_path):
    _, path, bundle, _, _ = fixture
    out = tmp_path / "net.safetensors"
    convert_network(path, out)
    again = load_networks(out)
    assert again.extra["training_set_kwargs"] == bundle.extra["training_set_kwargs"]
    for key, net in bundle.networks.items():
        a, b = net.state_dict(), again.networks[key].state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), key


def _png_diff(dir_a, dir_b, seeds):
    diffs = []
    for s in seeds:
        a = np.asarray(Image.open(dir_a / f"seed{s:04d}.png")).astype(int)
        b = np.asarray(Image.open(dir_b / f"seed{s:04d}.png")).astype(int)
        diffs.append(np.abs(a - b))
    d = np.stack(diffs)
    return d.max(), (d > 0).mean()


@pytest.mark.parametrize("psi", ["1.0", "0.7"])
def test_generate_cli_pngs_match_official_fp32(fixture, tmp_path, psi):
    from click.testing import CliRunner

    from styleforge.commands.generate import generate_cmd

    name, path, _, d, _ = fixture
    if "cond" in name:
        pytest.skip("the conditional fixture's PNGs mix classes per seed; see test_pngs_match_official_generate_py")
    args = ["--network", str(path), "--seeds", "0-7", "--trunc", psi, "--outdir", str(tmp_path), "--batch-size", "3"]
    r = CliRunner().invoke(generate_cmd, args)
    assert r.exit_code == 0, r.output
    mx, frac = _png_diff(tmp_path, d / "png" / f"fp32_psi{psi}_const", range(8))
    assert mx <= 1 and frac <= 0.001, (mx, frac)


@pytest.mark.parametrize("name,ref,extra,max_frac", [
    # fp32 pickle: official generate.py ran fp32, so our default fp32 path gives its PNGs (measured: identical
    # on EPYC and on the Xeon)
    ("resnet_fp32_r64", "trunc1.0", [], 0.001),
    # fp16 pickles: official generate.py ran the fp16 layers; --fp16 follows that path. Identical PNGs on the
    # fixtures' EPYC; on a Xeon with AVX512-FP16 1 level apart in 2.0-2.4 % of pixels (CPU fp16 rounding)
    ("cifar_cond_r32", "trunc1.0_class3", ["--class", "3", "--fp16"], 0.05),
    ("paper256_r128", "trunc0.7", ["--trunc", "0.7", "--fp16"], 0.05),
])
def test_pngs_match_official_generate_py(tmp_path, name, ref, extra, max_frac):
    from click.testing import CliRunner

    from styleforge.commands.generate import generate_cmd

    path = official_pickle(name)
    args = ["--network", str(path), "--seeds", "0-7", "--outdir", str(tmp_path)] + extra
    r = CliRunner().invoke(generate_cmd, args)
    assert r.exit_code == 0, r.output
    mx, frac = _png_diff(tmp_path, OFFICIAL / name / "generate_py" / ref, range(8))
    assert mx <= 1 and frac <= max_frac, (mx, frac)
