"""Network core behaviour on tiny configs: shapes, gradients, truncation, determinism, equivalent code paths,
checkpoint round trips."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import tiny_discriminator, tiny_generator
from styleforge.networks import Generator, GeneratorConfig, build_network, network_spec
from styleforge.networks.config import skip_init
from styleforge.networks.checkpoint import load_network, load_networks, save_networks, sniff_format
from styleforge.networks.ops import (
    conv2d_resample, modulated_conv2d, setup_filter, upfirdn2d, WeightLayouts,
)


@pytest.mark.parametrize("arch", ["skip", "orig", "resnet"])
@pytest.mark.parametrize("c_dim", [0, 5])
def test_generator_forward_backward(arch, c_dim):
    G = tiny_generator(arch, c_dim=c_dim).train()
    z = torch.randn(4, G.z_dim)
    c = torch.nn.functional.one_hot(torch.arange(4) % 5, 5).float() if c_dim else None
    img = G(z, c)
    assert img.shape == (4, 3, 16, 16) and torch.isfinite(img).all()
    img.square().mean().backward()
    grads = {n: p.grad for n, p in G.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["synthesis.b4.const"].abs().sum() > 0
    assert grads["mapping.fc0.weight"].abs().sum() > 0


def test_num_ws_matches_official_arithmetic():
    for res, arch, expect in [(16, "skip", 6), (16, "orig", 6), (16, "resnet", 6), (1024, "skip", 18), (256, "skip", 14)]:
        cfg = GeneratorConfig(img_resolution=res)
        cfg.synthesis.architecture = arch
        with skip_init():
            G = Generator(cfg)
        assert G.num_ws == expect, (res, arch)


@pytest.mark.parametrize("arch", ["resnet", "orig", "skip"])
@pytest.mark.parametrize("c_dim", [0, 4])
def test_discriminator_forward_backward(arch, c_dim):
    D = tiny_discriminator(arch, c_dim=c_dim).train()
    img = torch.randn(4, 3, 16, 16, requires_grad=True)
    c = torch.nn.functional.one_hot(torch.arange(4) % 4, 4).float() if c_dim else None
    out = D(img, c)
    assert out.shape == (4, 1)
    out.sum().backward()
    assert img.grad.abs().sum() > 0
    assert all(p.grad is not None for p in D.parameters() if p.requires_grad)


def test_discriminator_rejects_wrong_shape():
    D = tiny_discriminator()
    with pytest.raises(ValueError, match="expects images"):
        D(torch.randn(2, 3, 32, 32))


def test_minibatch_std_groups_are_strided():
    from styleforge.networks.layers import MinibatchStdLayer

    x = torch.randn(4, 2, 3, 3)
    y = MinibatchStdLayer(group_size=2)(x)
    # group 0 = samples 0 and 2 (strided), group 1 = samples 1 and 3
    g0 = torch.stack([x[0], x[2]]).std(dim=0, unbiased=False).add(0).square().add(1e-8).sqrt().mean()
    assert torch.allclose(y[0, 2], g0.expand(3, 3), atol=1e-6)
    assert torch.allclose(y[2, 2], y[0, 2])
    assert not torch.allclose(y[1, 2], y[0, 2])


def test_truncation_arithmetic():
    G = tiny_generator()
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        w = G.mapping(z, None)
        w0 = G.mapping(z, None, truncation_psi=0)
        wh = G.mapping(z, None, truncation_psi=0.5)
        wc = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.allclose(w0, G.mapping.w_avg.expand_as(w0))
    assert torch.allclose(wh, G.mapping.w_avg + 0.5 * (w - G.mapping.w_avg), atol=1e-6)
    assert torch.equal(wc[:, :2], wh[:, :2]) and torch.equal(wc[:, 2:], w[:, 2:])
    assert (w[:, 0] == w[:, -1]).all()  # broadcast to every layer


def test_w_avg_tracks_only_in_training():
    G = tiny_generator()
    before = G.mapping.w_avg.clone()
    with torch.no_grad():
        G(torch.randn(4, G.z_dim))
    assert torch.equal(G.mapping.w_avg, before)
    G.train()
    with torch.no_grad():
        G(torch.randn(4, G.z_dim))
    assert not torch.equal(G.mapping.w_avg, before)


@pytest.mark.parametrize("batched_max_res", [0, 8, 64])
def test_determinism_and_batch_independence(monkeypatch, batched_max_res):
    """A CPU batch runs together up to CPU_BATCHED_MAX_RES and one sample at a time above it: same images."""
    from styleforge.networks import generator

    monkeypatch.setattr(generator, "CPU_BATCHED_MAX_RES", batched_max_res)
    G = tiny_generator()
    z = torch.randn(5, G.z_dim)
    with torch.no_grad():
        a = G(z)
        b = G(z)
        single = torch.cat([G(z[i: i + 1]) for i in range(5)])
        for mode in ("const", "none"):
            ws = G.mapping(z, None)
            whole = torch.cat([G.synthesis(ws[i: i + 1], noise_mode=mode) for i in range(5)])
            assert (G.synthesis(ws, noise_mode=mode) - whole).abs().max() < 1e-5
    assert torch.equal(a, b)
    assert (a - single).abs().max() < 1e-5


@pytest.mark.parametrize("arch", ["skip", "resnet"])
def test_fused_and_unfused_modconv_agree(arch):
    G = tiny_generator(arch)
    z = torch.randn(3, G.z_dim)
    with torch.no_grad():
        ws = G.mapping(z, None)
        outs = [torch.cat([G.synthesis(ws[i: i + 1], fused_modconv=f) for i in range(3)]) for f in (True, False, None)]
    assert (outs[0] - outs[1]).abs().max() < 1e-5 and (outs[0] - outs[2]).abs().max() < 1e-5


def test_channels_last_and_matmul_paths_match_reference():
    torch.manual_seed(0)
    f = setup_filter()
    x = torch.randn(2, 6, 8, 8)
    cl = x.contiguous(memory_format=torch.channels_last)
    for up, down, pad, gain in [(2, 1, (2, 1, 2, 1), 4), (1, 1, (1, 1, 1, 1), 4), (1, 2, (1, 1, 1, 1), 1), (1, 1, (2, 2, 2, 2), 1)]:
        a, b = upfirdn2d(x, f, up, down, pad, gain), upfirdn2d(cl, f, up, down, pad, gain)
        assert b.is_contiguous(memory_format=torch.channels_last)
        assert (a - b).abs().max() < 1e-5
    w = torch.randn(5, 6, 3, 3)
    with torch.no_grad():
        for up in (1, 2):
            ref = conv2d_resample(x, w, f, up=up, padding=1)
            mm = conv2d_resample(x, w, f, up=up, padding=1, layouts=WeightLayouts())
            assert ref.shape == mm.shape and (ref - mm).abs().max() < 1e-4


@pytest.mark.parametrize("channels_last", [False, True])
def test_prepadded_transposed_conv_matches_plain(monkeypatch, channels_last):
    """The pre-padded stride-2 transposed convolution (taken at >= 128x128 inputs on CPU) computes the same
    up-convolution as the plain transposed conv + padded FIR, also grouped (per-sample kernels)."""
    from styleforge.networks import ops

    torch.manual_seed(0)
    f = setup_filter()
    x = torch.randn(2, 6, 9, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(10, 3, 3, 3)  # 2 groups of 3 input -> 5 output channels
    b = torch.randn(10)
    outs = []
    for min_pixels in (10**9, 0):
        monkeypatch.setattr(ops, "PREPAD_MIN_PIXELS", min_pixels)
        with torch.no_grad():
            outs.append((conv2d_resample(x, w, f, up=2, padding=1, groups=2),
                         conv2d_resample(x, w, f, up=2, padding=1, groups=2, bias=b)))
    (plain, plain_b), (pre, pre_b) = outs
    assert pre.shape == plain.shape == (2, 10, 18, 14)
    assert (pre - plain).abs().max() < 1e-5
    assert (pre_b - (plain + b.reshape(1, -1, 1, 1))).abs().max() < 1e-5
    assert (plain_b - (plain + b.reshape(1, -1, 1, 1))).abs().max() < 1e-5


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_out_scale_and_bias(fused, n, up):
    """out_scale and bias (folded into the demodulation and the convolution call) equal scaling and adding
    afterwards, with and without demodulation and noise."""
    torch.manual_seed(1)
    f = setup_filter()
    x = torch.randn(n, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    w, s, b = torch.randn(6, 4, 3, 3), torch.rand(n, 4) + 0.5, torch.randn(6)
    noise = torch.randn(8 * up, 8 * up)
    for demod in (True, False):
        kw = dict(up=up, padding=1, resample_filter=f, demodulate=demod, fused=fused)
        with torch.no_grad():
            ref = (modulated_conv2d(x, w, s, noise=noise, **kw) * 1.7 + b.reshape(1, -1, 1, 1))
            out = modulated_conv2d(x, w, s, noise=noise, out_scale=1.7, bias=b, **kw)
        assert (out - ref).abs().max() < 1e-4 * ref.abs().max()


def test_folded_layer_order_matches_official_order():
    """The fp32 fast path (gain and bias folded into the convolution) and the official op order agree."""
    G = tiny_generator("skip", conv_clamp=1.0)
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    layer, torgb = G.synthesis.b8.conv0, G.synthesis.b8.torgb
    x = torch.randn(2, layer.weight.shape[1], 4, 4)
    with torch.no_grad():
        for kw in (dict(), dict(gain=0.5), dict(noise_mode="none")):
            fast = layer(x, ws[:, 0], **kw)
            exact = layer(x, ws[:, 0], exact_order=True, **kw)
            assert (fast - exact).abs().max() < 1e-5
        y = torch.randn(2, torgb.weight.shape[1], 8, 8)
        assert (torgb(y, ws[:, 1]) - torgb(y, ws[:, 1], exact_order=True)).abs().max() < 1e-5
    # gradients too (the projector's path: unfused, in-place bias and activation under autograd)
    for fused in (False, True):
        grads = []
        for exact in (False, True):
            xg, wg = x[:1].clone().requires_grad_(True), ws[:1, 0].detach().clone().requires_grad_(True)
            out = layer(xg, wg, fused=fused, exact_order=exact)
            (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
            grads.append((xg.grad, wg.grad, layer.bias.grad.clone(), layer.weight.grad.clone()))
            layer.zero_grad()
        for a, b in zip(*grads):
            assert (a - b).abs().max() < 1e-4 * b.abs().max()


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_winograd_conv_matches_direct_conv_and_its_gradient(channels_last, tile):
    from styleforge.networks.ops import _WinogradConv3x3, _winograd_back_weights, winograd_conv3x3, winograd_weights

    torch.manual_seed(0)
    x = torch.randn(2, 5, 10, 6) if tile == 2 else torch.randn(2, 5, 12, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(7, 5, 3, 3)
    ref = torch.nn.functional.conv2d(x, w, padding=1)
    with torch.no_grad():
        u = winograd_weights(w, tile)
        assert u.shape == (tile * tile + 4 * tile + 4, 5, 7)  # (tile + 2)^2 tile positions
        y = winograd_conv3x3(x, u)
    tol = 1e-5 if tile == 2 else 3e-5  # F(4x4)'s transforms have larger coefficients
    assert y.shape == ref.shape and (y - ref).abs().max() < tol * ref.abs().max()
    g = torch.randn_like(ref)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    torch.nn.functional.conv2d(xa, w, padding=1).backward(g)
    _WinogradConv3x3.apply(xb, u, _winograd_back_weights(w, tile)).backward(g)
    assert (xa.grad - xb.grad).abs().max() < tol * xa.grad.abs().max()


def test_winograd_tile_choice_by_size(monkeypatch):
    """F(4x4) from 16x16 to 128x128 (and only with sides divisible by 4), F(2x2) elsewhere; each layer keeps
    the transformed kernels it used."""
    from styleforge.networks import ops

    monkeypatch.setattr(ops, "WINOGRAD_MIN_CHANNELS", 1)
    w = torch.randn(3, 2, 3, 3)
    for size, tile in ((8, 2), (12, 2), (16, 4), (30, 2), (32, 4), (66, 2), (128, 4)):
        x = torch.randn(1, 2, size, size)
        layouts = ops.WeightLayouts()
        assert ops._winograd_ok(x, w, 1, layouts, 1)
        with torch.no_grad():
            y = ops.conv2d_resample(x, w, padding=1, layouts=layouts)
        assert set(layouts._store) == {f"winograd{tile}"}
        ref = torch.nn.functional.conv2d(x, w, padding=1)
        assert (y - ref).abs().max() < 3e-5 * ref.abs().max()


def test_winograd_output_takes_in_place_bias_under_autograd(monkeypatch):
    """The unfused path adds the bias in place on the convolution's fresh output, also when that output comes
    straight from the Winograd Function (no demodulation, no noise) and x needs a gradient."""
    from styleforge.networks import ops

    monkeypatch.setattr(ops, "WINOGRAD_MIN_CHANNELS", 1)
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    w, s, b = torch.randn(5, 4, 3, 3), torch.rand(1, 4) + 0.5, torch.randn(5)
    grads = []
    for layouts in (ops.WeightLayouts(), None):  # Winograd / direct convolution
        xg = x.clone().requires_grad_(True)
        y = modulated_conv2d(xg, w, s, padding=1, demodulate=False, fused=False, layouts=layouts, bias=b)
        ops.bias_act(y, None, act="lrelu", scratch=True).square().sum().backward()
        grads.append(xg.grad)
    assert (grads[0] - grads[1]).abs().max() < 1e-4 * grads[1].abs().max()


def test_generator_with_winograd_convs_matches_direct(monkeypatch):
    """The tiny generator with every eligible 3x3 convolution on the Winograd path (thresholds lowered)
    renders what the direct convolutions render, and its W gradients (the projector's path) agree."""
    from styleforge.networks import ops

    G = tiny_generator("skip", res=32).requires_grad_(False)
    ws = G.mapping(torch.randn(2, G.z_dim), None)
    out = {}
    for name, min_ch in (("direct", 10**6), ("winograd", 1)):
        monkeypatch.setattr(ops, "WINOGRAD_MIN_CHANNELS", min_ch)
        calls = []
        monkeypatch.setattr(ops, "winograd_conv3x3", lambda x, u, f=ops.winograd_conv3x3: calls.append(1) or f(x, u))
        with torch.no_grad():
            img = G.synthesis(ws)
        w = ws[:1].clone().requires_grad_(True)
        G.synthesis(w, fused_modconv=False).square().mean().backward()
        out[name] = (img, w.grad, len(calls))
    assert out["direct"][2] == 0 and out["winograd"][2] > 0
    assert (out["direct"][0] - out["winograd"][0]).abs().max() < 1e-5
    assert (out["direct"][1] - out["winograd"][1]).abs().max() < 1e-5 * out["direct"][1].abs().max()


def test_modulated_conv_demodulation_normalises_filters():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, 8)
    w = torch.randn(3, 4, 3, 3)
    s = torch.rand(1, 4) + 0.5
    y1 = modulated_conv2d(x, w, s, padding=1)
    y2 = modulated_conv2d(x, w, s * 7.0, padding=1)  # demodulation removes a global style scale
    assert (y1 - y2).abs().max() < 1e-4


def test_checkpoint_roundtrip_bit_identical(tmp_path):
    G, D = tiny_generator("resnet", c_dim=3), tiny_discriminator("skip", c_dim=3)
    path = save_networks(tmp_path / "net.bin", {"G_ema": G, "D": D}, extra={"hello": [1, 2]})
    assert sniff_format(path) == "safetensors"  # decided by content, not by the name
    b = load_networks(path)
    assert set(b.networks) == {"G_ema", "D"} and b.extra == {"hello": [1, 2]}
    for src, dst in ((G, b.networks["G_ema"]), (D, b.networks["D"])):
        assert network_spec(src) == network_spec(dst)
        sd1, sd2 = src.state_dict(), dst.state_dict()
        assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    z, c = torch.randn(2, G.z_dim), torch.eye(3)[:2]
    with torch.no_grad():
        assert torch.equal(G(z, c), b.networks["G_ema"](z, c))
    assert load_network(path).img_resolution == 16  # default: the generator


def test_build_network_from_spec_and_unknown_settings():
    G = tiny_generator()
    spec = network_spec(G)
    G2 = build_network(spec["arch"], spec["config"])
    assert network_spec(G2) == spec
    bad = dict(spec["config"], color="red")
    with pytest.raises(ValueError, match="unknown settings"):
        build_network(spec["arch"], bad)
    with pytest.raises(KeyError):
        build_network("no.such.arch", spec["config"])


def test_core_imports_without_torchvision():
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'torchvision' or name.startswith('torchvision.'):\n"
        "            raise ImportError('torchvision blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import styleforge.networks, styleforge.generate, styleforge.cli\n"
        "from styleforge.networks.checkpoint import load_network\n"
        "print('ok', 'torchvision' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok False"


def test_weight_layouts_never_mistake_a_temporary_for_the_last_one():
    """A weight converted on every call (fp16 casts) is a fresh tensor each time, often at the address the
    previous one had freed; the cache must not hand back what it derived from the previous tensor."""
    from styleforge.networks import ops

    lay = ops.WeightLayouts()
    memory = np.zeros((64, 64), np.float32)
    for k in range(3):
        memory[:] = k  # new values written where the last tensor lived (as a reused allocation would be)
        t = torch.from_numpy(memory)  # a new tensor: same address, version 0, new values
        assert torch.equal(lay.get(t, "copy", lambda v: v.clone()), t)
    p = torch.randn(64, 64)
    # the same tensor hits until it is changed in place
    first = lay.get(p, "copy", lambda v: v.clone())
    assert lay.get(p, "copy", lambda v: v.clone()) is first
    p.mul_(2)
    assert torch.equal(lay.get(p, "copy", lambda v: v.clone()), p)


@pytest.mark.parametrize("up", [1, 2])
def test_cached_kernels_follow_in_place_weight_updates(up):
    """conv2d_resample's cached kernels (channels-last copies, transposed layouts, Winograd transforms) are
    re-derived after an in-place update of the weight (an optimiser step, EMA, load_state_dict)."""
    from styleforge.networks import ops

    torch.manual_seed(0)
    x = torch.randn(1, 8, 20, 20).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 8, 3, 3)
    f = ops.setup_filter([1, 3, 3, 1])
    layouts = ops.WeightLayouts()
    for _ in range(2):
        with torch.no_grad():
            got = ops.conv2d_resample(x, w, f=f, up=up, padding=1, layouts=layouts)
        want = ops.conv2d_resample(x, w, f=f, up=up, padding=1)  # no cache
        assert layouts._store and (got - want).abs().max() < 1e-5 * want.abs().max()
        with torch.no_grad():
            w.lerp_(torch.randn_like(w), 0.5)


def test_kernels_cached_in_inference_mode_do_not_break_a_later_gradient_pass():
    from styleforge.networks import ops

    x = torch.randn(1, 8, 20, 20).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 8, 3, 3)
    layouts = ops.WeightLayouts()
    with torch.inference_mode():
        ops.conv2d_resample(x, w, padding=1, layouts=layouts)
    xg = x.clone().requires_grad_(True)
    ops.conv2d_resample(xg, w, padding=1, layouts=layouts).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_a_state_dict_file_is_refused_with_advice_that_works(tmp_path):
    """save_networks takes modules, not state dicts: the error for a torch.save file says to load the state dict
    into a network first, and doing what it says gives a loadable checkpoint."""
    from styleforge.errors import NetworkFormatError

    torch.manual_seed(0)
    G = Generator(GeneratorConfig(z_dim=8, w_dim=8, img_resolution=8, img_channels=3))
    torch.save(G.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(NetworkFormatError) as e:
        load_networks(tmp_path / "sd.pt")
    msg = str(e.value)
    assert "torch.save zip archive" in msg and "load the state dict into it" in msg
    assert "styleforge.networks.save_networks(path, {'G_ema': G})" in msg and "convert state dicts" not in msg
    G2 = Generator(G.config)
    G2.load_state_dict(torch.load(tmp_path / "sd.pt"))
    path = save_networks(tmp_path / "g.safetensors", {"G_ema": G2})
    assert all(torch.equal(a, b) for a, b in zip(load_network(path).parameters(), G.parameters()))
