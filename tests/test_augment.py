"""Tests for styleforge.train.augment: the ADA augmentation pipeline and the adaptive-p controller (CPU, seconds)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from styleforge.train.augment import (
    AUGPIPE_PRESETS,
    SYM6_LOWPASS,
    AdaptiveP,
    AugmentConfig,
    OPS,
    AugmentPipe,
    ReplayDraws,
    affine_warp,
    make_augment,
)

ALL_OPS = list(AUGPIPE_PRESETS["bgc"])


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_images(n=4, c=3, h=16, w=16, seed=0, dtype=torch.float32):
    """Random but smooth-ish images in [-1, 1] (no two pixels equal, so permutations are identifiable)."""
    g = gen(seed)
    x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64) * 2 - 1
    return x.to(dtype)


@pytest.fixture(scope="module")
def astronaut64():
    skimage = pytest.importorskip("skimage")
    from skimage import data, transform

    img = transform.resize(data.astronaut(), (64, 64), anti_aliasing=True)  # float64 in [0, 1]
    return torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None] * 2 - 1


# ----------------------------------------------------------------------------------------------------------
# Config / presets / state.


def test_core_does_not_import_torchvision():
    import subprocess
    import sys

    code = "import sys, styleforge.train.augment; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_presets_and_config_roundtrip():
    assert set(AUGPIPE_PRESETS) >= {"noaug", "blit", "geom", "color", "bg", "bgc"}
    assert AUGPIPE_PRESETS["noaug"] == {}
    assert set(AUGPIPE_PRESETS["bgc"]) == set(AUGPIPE_PRESETS["bg"]) | set(AUGPIPE_PRESETS["color"])
    assert set(AUGPIPE_PRESETS["bg"]) == set(AUGPIPE_PRESETS["blit"]) | set(AUGPIPE_PRESETS["geom"])
    assert len(AUGPIPE_PRESETS["bgc"]) == 12

    cfg = AugmentConfig.from_preset("bgc", rotate_max=0.5, imgfilter_bands=[1, 0, 1, 1])
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain data
    assert AugmentConfig.from_dict(d) == cfg
    pipe = AugmentPipe(d, p=0.3)
    assert pipe.config == cfg
    assert AugmentPipe.from_config(pipe.config_dict()).config == cfg
    # paper defaults
    assert (cfg.xint_max, cfg.scale_std, cfg.aniso_std, cfg.xfrac_std) == (0.125, 0.2, 0.2, 0.125)
    assert (cfg.brightness_std, cfg.contrast_std, cfg.hue_max, cfg.saturation_std) == (0.2, 0.5, 1.0, 1.0)

    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"xflip": 1, "bogus": 2})
    with pytest.raises(ValueError):
        AugmentConfig(xflip=-1)
    with pytest.raises(ValueError):
        AugmentConfig(imgfilter_bands=[1, 1])
    # configs stored by earlier versions name the warp they used; accepted when it is this one's
    assert AugmentConfig.from_dict({"xflip": 1, "geom_filter": "sym6", "interpolation": "bilinear"}).xflip == 1
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"xflip": 1, "interpolation": "bicubic"})
    with pytest.raises(KeyError):
        AugmentPipe("bgcfnc")


def test_official_kwargs_conversion():
    kw = dict(AUGPIPE_PRESETS["bgc"], imgfilter=0, noise=0, cutout=0, imgfilter_bands=[1, 1, 1, 1], noise_std=0.1)
    assert AugmentConfig.from_official_kwargs(kw) == AugmentConfig.from_preset("bgc")
    # every official op (the 'bgcfnc' set) and magnitude has its field
    kw = dict(AUGPIPE_PRESETS["bgc"], imgfilter=1, noise=1, cutout=1, imgfilter_bands=[1, 1, 0, 1], cutout_size=0.25)
    cfg = AugmentConfig.from_official_kwargs(kw)
    assert cfg.enabled_ops() == OPS and cfg.imgfilter_bands == [1.0, 1.0, 0.0, 1.0] and cfg.cutout_size == 0.25
    with pytest.raises(ValueError):
        AugmentConfig.from_official_kwargs({"xflip": 1, "blur": 1})


def test_p_is_a_buffer_and_round_trips():
    pipe = AugmentPipe("bgc", p=0.25)
    assert isinstance(pipe.p, torch.Tensor) and pipe.p.ndim == 0 and pipe.p.dtype == torch.float32
    sd = pipe.state_dict()
    assert list(sd) == ["p"]
    other = AugmentPipe(pipe.config_dict())
    other.load_state_dict(sd)
    assert float(other.p) == 0.25
    pipe.set_p(0.5)
    assert float(pipe.p) == 0.5
    assert "p=0.5000" in repr(pipe)


def test_sym6_filter_is_orthogonal_lowpass():
    f = np.asarray(SYM6_LOWPASS, dtype=np.float64)
    assert f.size == 12
    assert abs(f.sum() - math.sqrt(2)) < 1e-9
    for shift in range(6):  # orthogonal to its even shifts
        dot = float(np.dot(f[: 12 - 2 * shift], f[2 * shift:]))
        assert abs(dot - (1.0 if shift == 0 else 0.0)) < 1e-9
    k = np.arange(12)
    for m in range(6):  # 6 vanishing moments of the matching high-pass
        assert abs(np.sum((-1.0) ** k * k**m * f)) < 1e-6 * 12**m


# ----------------------------------------------------------------------------------------------------------
# Identity, shapes, single ops.


@pytest.mark.parametrize("preset", ["noaug", "blit", "geom", "color", "bg", "bgc"])
def test_p0_leaves_images_up_to_resampling_rounding(preset):
    """As in the official pipe, p = 0 still runs the geometric resampling (whenever a geometric op is enabled) and
    the identity colour matrix: not bit-exact, but the symlet up/down pair reconstructs perfectly."""
    x = smooth_images(6, 3, 12, 20)
    y = AugmentPipe(preset, p=0.0)(x, generator=gen(1))
    assert (y - x).abs().max() < 1e-5
    assert torch.equal(y, x) == (preset in ("noaug", "color"))


def test_noaug_and_empty_batch():
    x = smooth_images(3)
    assert AugmentPipe("noaug", p=1.0)(x) is x
    e = torch.zeros(0, 3, 8, 8)
    assert AugmentPipe("bgc", p=1.0)(e).shape == e.shape


@pytest.mark.parametrize("op", ALL_OPS)
def test_each_op_changes_images_and_keeps_shape_dtype(op):
    for dtype in (torch.float32, torch.float64):
        x = smooth_images(8, 3, 16, 16, dtype=dtype)
        y = AugmentPipe({op: 1.0}, p=1.0)(x, generator=gen(3))
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y).all()
        assert not torch.equal(y, x), f"{op} with p=1 left the whole batch unchanged"


def _rms_interior(a, b, border=8):
    return (a - b)[..., border:-border, border:-border].square().mean().sqrt().item()


def test_flips_and_quarter_turns_are_close_to_but_not_exact_permutations(astronaut64):
    """Official behaviour: xflip and rotate90 go through the filtered warp, and the symlet-6 filter is not
    symmetric, so they move content by a fraction of a pixel (RMS ~0.02 on a smooth photo, not 0)."""
    x = astronaut64
    cases = [("xflip", 0.75, x.flip(3)), ("rotate90", 0.25, torch.rot90(x, 1, dims=(2, 3))),
             ("rotate90", 0.75, torch.rot90(x, 3, dims=(2, 3))), ("xflip", 0.25, x)]
    for op, d, ref in cases:
        y = AugmentPipe({op: 1})(x, debug_percentile=d)
        rms = _rms_interior(y, ref)
        assert (rms < 1e-5) if ref is x else (1e-3 < rms < 0.03), (op, d, rms)
    # with random draws: xflip mirrors about half of the images it fires on
    y = AugmentPipe(xflip=1, p=1.0)(x.expand(32, -1, -1, -1), generator=gen(0))
    flipped = sum(_rms_interior(y[i], x[0].flip(2)) < 0.03 for i in range(32))
    assert 0 < flipped < 32


def test_xint_is_a_shift_with_mirrored_border():
    x = smooth_images(16, 1, 16, 16, dtype=torch.float64)
    pipe = AugmentPipe(xint=1, p=1.0)
    y = pipe(x, generator=gen(2))
    G = pipe.sample_params(16, 16, 16, 1, generator=gen(2)).G_inv
    for i in range(16):
        tx, ty = -int(G[i, 0, 2]), -int(G[i, 1, 2])  # content shift
        assert abs(tx) <= 2 and abs(ty) <= 2  # 0.125 * 16
        # interior of the shifted image equals the input up to float rounding (the official pipe: ~2e-6)
        src = x[i, :, max(0, -ty): 16 - max(0, ty), max(0, -tx): 16 - max(0, tx)]
        dst = y[i, :, max(0, ty): 16 - max(0, -ty), max(0, tx): 16 - max(0, -tx)]
        assert (src - dst).abs().max() < 1e-5


def test_brightness_and_contrast_statistics():
    n = 4000
    x = smooth_images(n, 3, 2, 2, dtype=torch.float64)
    # brightness: adds one offset per sample (same for all channels): mean shifts, std unchanged
    y = AugmentPipe(brightness=1, p=1.0)(x, generator=gen(0))
    d = (y - x).flatten(1)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-12)
    assert torch.allclose(y.flatten(1).std(1), x.flatten(1).std(1), atol=1e-12)
    b = d[:, 0]
    assert abs(b.std().item() - 0.2) < 0.02 and abs(b.mean().item()) < 0.02
    # contrast: multiplies by c = 2**N(0, 0.5) around 0: mean and std both scale by c
    y = AugmentPipe(contrast=1, p=1.0)(x, generator=gen(1))
    c = y.flatten(1).std(1) / x.flatten(1).std(1)
    assert torch.allclose(y.flatten(1).mean(1), x.flatten(1).mean(1) * c, atol=1e-9)
    assert torch.allclose(y, x * c.view(n, 1, 1, 1), atol=1e-9)
    log2c = torch.log2(c)
    assert abs(log2c.std().item() - 0.5) < 0.03 and abs(log2c.mean().item()) < 0.03


def test_lumaflip_hue_saturation_geometry_of_colour():
    x = smooth_images(64, 3, 4, 4, dtype=torch.float64)
    grey = x.mean(1, keepdim=True)
    chroma = x - grey
    # hue: rotation around the grey axis keeps grey level and chroma magnitude per pixel
    y = AugmentPipe(hue=1, p=1.0)(x, generator=gen(0))
    assert torch.allclose(y.mean(1, keepdim=True), grey, atol=1e-9)
    assert torch.allclose((y - y.mean(1, keepdim=True)).norm(dim=1), chroma.norm(dim=1), atol=1e-9)
    # saturation: keeps grey, scales chroma by one factor per sample
    y = AugmentPipe(saturation=1, p=1.0)(x, generator=gen(1))
    assert torch.allclose(y.mean(1, keepdim=True), grey, atol=1e-9)
    ratio = (y - grey).norm(dim=1) / chroma.norm(dim=1)
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), atol=1e-7)
    # lumaflip: either identity or negates the grey component and keeps chroma
    y = AugmentPipe(lumaflip=1, p=1.0)(x, generator=gen(2))
    flips = 0
    for i in range(len(x)):
        if torch.allclose(y[i], x[i], atol=1e-12):
            continue
        flips += 1
        assert torch.allclose(y[i].mean(0), -grey[i, 0], atol=1e-9)
        assert torch.allclose(y[i] - y[i].mean(0, keepdim=True), chroma[i], atol=1e-9)
    assert 0 < flips < len(x)


@pytest.mark.parametrize(
    "op", ["xflip", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast", "saturation"]
)
def test_op_fires_with_probability_p_times_multiplier(op):
    n, p, mult = 4000, 0.5, 0.6
    pipe = AugmentPipe({op: mult}, p=p)
    prm = pipe.sample_params(n, 32, 32, 3, generator=gen(7))
    changed = torch.zeros(n, dtype=torch.bool)
    for m in (prm.G_inv, prm.C):
        if m is not None:  # (the identity colour matrix of saturation is only identity up to rounding)
            changed |= (m - torch.eye(m.shape[-1])).abs().flatten(1).amax(1) > 1e-6
    rate = changed.double().mean().item()
    expected = p * mult * (0.5 if op == "xflip" else 1.0)  # xflip: half of the firings choose "no flip"
    assert abs(rate - expected) < 0.03, (op, rate, expected)


def test_rng_stream_does_not_depend_on_p():
    """Changing p must not reshuffle the other ops' draws: samples that fire at low p fire identically at high p."""
    pipe = AugmentPipe(brightness=1, contrast=1)
    C_lo = pipe.sample_params(500, 8, 8, 3, generator=gen(0), p=0.2).C
    C_hi = pipe.sample_params(500, 8, 8, 3, generator=gen(0), p=0.9).C
    fired_lo = ~(C_lo == torch.eye(4, dtype=C_lo.dtype)).flatten(1).all(1)
    b_lo, b_hi = C_lo[:, 0, 3], C_hi[:, 0, 3]
    both = fired_lo & (b_lo != 0)
    assert both.any()
    # brightness is applied first, contrast scales it: the offset divided by the gain is the raw brightness draw
    raw_lo = b_lo / C_lo[:, 0, 0]
    raw_hi = b_hi / C_hi[:, 0, 0]
    assert torch.allclose(raw_lo[both], raw_hi[both])


# ----------------------------------------------------------------------------------------------------------
# The filtered warp.


def _rot(theta):
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)


def test_warp_identity_and_whole_pixel_shift(astronaut64):
    x = astronaut64.double()
    y = affine_warp(x, torch.eye(3)[None])
    assert (y - x).abs().max() < 1e-5  # orthogonal filter: up + down = identity (float32 grid rounding only)
    T = torch.eye(3)[None].clone()
    T[0, 0, 2], T[0, 1, 2] = -3.0, 2.0  # content moves 3 px right, 2 px up
    y = affine_warp(x, T)
    ref = torch.roll(x, shifts=(-2, 3), dims=(2, 3))
    assert (y - ref)[..., 4:-4, 4:-4].abs().max() < 1e-5


def test_warp_quarter_turns_pivot_on_the_image_centre(astronaut64):
    """A quarter turn through the warp matches torch.rot90 in the interior up to the symlet's phase."""
    x = astronaut64
    for k in (1, 2, 3):
        y = affine_warp(x, _rot(-k * math.pi / 2).float())
        assert _rms_interior(y, torch.rot90(x, 4 - k, dims=(2, 3))) < 0.03, k


def test_warp_large_zoom_out_stays_finite(astronaut64):
    G = torch.eye(3)[None].repeat(2, 1, 1)
    G[0, :2, :2] *= 3.0  # content shrinks 3x: needs more border than one reflection (zeros beyond, as official)
    G[1, :2, :2] *= 0.25  # content grows 4x
    y = affine_warp(astronaut64.expand(2, -1, -1, -1), G)
    assert y.shape == (2, 3, 64, 64) and torch.isfinite(y).all()
    assert y.abs().max() < 1.5  # (the low-pass rings at the edge of the zero border)


def test_non_square_images():
    x = smooth_images(8, 3, 24, 40)
    for preset in ("blit", "bgc"):
        y = AugmentPipe(preset, p=1.0)(x, generator=gen(0))
        assert y.shape == x.shape and torch.isfinite(y).all()


# ----------------------------------------------------------------------------------------------------------
# Channels, gradients, determinism.


def test_one_and_three_channels():
    x3 = smooth_images(8, 3, 16, 16)
    x1 = smooth_images(8, 1, 16, 16)
    for x in (x1, x3):
        y = AugmentPipe("bgc", p=1.0)(x, generator=gen(0))
        assert y.shape == x.shape and torch.isfinite(y).all()
    # grey is treated as (l, l, l): same seed, colour ops without hue/saturation give the channel mean of RGB
    cfg = dict(brightness=1, contrast=1, lumaflip=1)
    grey = x1.expand(-1, 3, -1, -1).contiguous()
    y3 = AugmentPipe(cfg, p=1.0)(grey, generator=gen(4))
    y1 = AugmentPipe(cfg, p=1.0)(x1, generator=gen(4))
    assert torch.allclose(y1, y3.mean(1, keepdim=True), atol=1e-6)
    # hue / saturation are no-ops on grey images
    assert torch.equal(AugmentPipe(hue=1, saturation=1, p=1.0)(x1, generator=gen(0)), x1)
    # other channel counts are rejected when colour ops are on, fine for geometry only
    x4 = smooth_images(2, 4, 8, 8)
    with pytest.raises(ValueError):
        AugmentPipe("bgc", p=1.0)(x4)
    assert AugmentPipe("bg", p=1.0)(x4, generator=gen(0)).shape == x4.shape


def test_gradients_flow_to_the_input():
    x = smooth_images(4, 3, 16, 16).requires_grad_(True)
    w = torch.randn(4, 3, 16, 16, generator=gen(9))
    y = AugmentPipe("bgc", p=1.0)(x, generator=gen(0))
    (y * w).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every sample receives gradient


@pytest.mark.parametrize("preset", ["blit", "bgc"])
def test_exact_gradients_and_double_backward(preset):
    """For fixed draws the pipe is affine in the images, f(x) = J x + c, so autograd must return exactly J^T:
    <f(v) - f(0), u> == <v, J^T u> for random u, v (a cheap, exact stand-in for gradcheck). Then double backward,
    as used by R1 through the pipe."""
    pipe = AugmentPipe(preset, p=1.0)
    fn = lambda t: pipe(t, generator=gen(11))  # noqa: E731
    v = smooth_images(4, 3, 16, 16, seed=1, dtype=torch.float64)
    u = smooth_images(4, 3, 16, 16, seed=2, dtype=torch.float64)
    x = torch.zeros_like(v).requires_grad_(True)
    (fn(x) * u).sum().backward()
    lhs = ((fn(v) - fn(torch.zeros_like(v))) * u).sum()
    rhs = (v * x.grad).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-5, atol=1e-5), (lhs.item(), rhs.item())
    # R1-style penalty: d/dW || d D(aug(x)) / dx ||^2 with a tiny conv "discriminator"
    x = v.clone().requires_grad_(True)
    W = torch.randn(3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    logits = torch.nn.functional.conv2d(fn(x), W).square().sum()
    (gx,) = torch.autograd.grad(logits, x, create_graph=True)
    gx.square().sum().backward()
    assert W.grad is not None and torch.isfinite(W.grad).all() and W.grad.abs().sum() > 0


def test_deterministic_under_fixed_seed():
    x = smooth_images(6, 3, 16, 16)
    pipe = AugmentPipe("bgc", p=0.7)
    a = pipe(x, generator=gen(123))
    b = pipe(x, generator=gen(123))
    c = pipe(x, generator=gen(124))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = pipe(x)
    torch.manual_seed(5)
    e = pipe(x)
    assert torch.equal(d, e)


def test_debug_percentile_fires_every_op_and_ignores_the_draws():
    pipe = AugmentPipe("bgc", p=0.0, imgfilter=1, cutout=1)  # p is irrelevant in debug mode
    a = pipe.sample_params(2, 32, 32, 3, generator=gen(0), debug_percentile=0.9)
    b = pipe.sample_params(2, 32, 32, 3, generator=gen(1), debug_percentile=0.9)
    assert not torch.equal(a.G_inv[0], torch.eye(3)) and not torch.equal(a.C[0], torch.eye(4))
    for x, y in [(a.G_inv, b.G_inv), (a.C, b.C), (a.filters, b.filters), (a.cutout[0], b.cutout[0])]:
        assert torch.equal(x, y) and torch.equal(x[0], x[1])  # same for every image, whatever was drawn
    # the debug values of the official table: xint (2d - 1) * 0.125 of the size, cutout centre (d, d)
    assert a.G_inv[0, 0, 2] != 0 and torch.equal(a.cutout[1], torch.full([2, 2, 1, 1, 1], 0.9))


def test_replayed_draws_reproduce_a_seeded_forward():
    x = smooth_images(3, 3, 24, 24)
    pipe = AugmentPipe("bgc", p=0.7, imgfilter=1, noise=1, cutout=1)
    log = []

    class Recorder:
        def rand(self, *shape):
            log.append(("rand", torch.rand(shape, generator=g)))
            return log[-1][1]

        def randn(self, *shape):
            log.append(("randn", torch.randn(shape, generator=g)))
            return log[-1][1]

    g = gen(8)
    ref = pipe(x, generator=gen(8))
    assert torch.equal(pipe(x, draws=Recorder()), ref)
    replay = ReplayDraws(log)
    assert torch.equal(pipe(x, draws=replay), ref) and replay.finished()
    with pytest.raises(RuntimeError, match="draw #0 is randn"):
        pipe(x, draws=ReplayDraws([("randn", torch.zeros(3))]))


# ----------------------------------------------------------------------------------------------------------
# Real image sanity.


def test_astronaut_bgc_p1_stays_sane(astronaut64):
    x = astronaut64.expand(32, -1, -1, -1).contiguous()
    y = AugmentPipe("bgc", p=1.0)(x, generator=gen(0))
    assert y.shape == x.shape and torch.isfinite(y).all()
    # contrast 2**N(0, .5), brightness N(0, .2) and luma flips widen the range, but nothing explodes
    assert y.abs().max() < 8
    assert abs(y.mean().item() - x.mean().item()) < 0.3
    assert 0.3 < y.std().item() < 2.0
    per_sample_std = y.flatten(1).std(1)
    assert (per_sample_std > 0.05).all()  # no blank images (geometry keeps content, reflect border)


def test_astronaut_geometry_only_preserves_value_range(astronaut64):
    x = astronaut64.expand(16, -1, -1, -1).contiguous()
    y = AugmentPipe("bg", p=1.0)(x, generator=gen(1))
    lo, hi = x.min().item(), x.max().item()
    # interpolation + the low-pass can ring a little, but values stay near the input range
    assert y.min() > lo - 0.25 and y.max() < hi + 0.25
    assert abs(y.mean().item() - x.mean().item()) < 0.1


# ----------------------------------------------------------------------------------------------------------
# AdaptiveP.


def test_adaptive_p_moves_towards_target():
    pipe = AugmentPipe("bgc")
    ada = AdaptiveP(pipe, target=0.6, interval=4, ada_kimg=1)  # 1 kimg: fast moves for the test
    batch = 8
    step = batch * 4 / 1000
    assert ada.p == 0.0 and ada.r_t is None
    # D overconfident on reals: all logits positive -> r_t = 1 > 0.6 -> p rises by batch*interval/(kimg*1000)
    for i in range(8):
        ada.accumulate(torch.full((batch, 1), 3.0))
        adjusted = ada.step(batch)
        assert adjusted == (i % 4 == 3)
    assert ada.r_t == 1.0
    assert ada.p == pytest.approx(2 * step)
    assert float(pipe.p) == pytest.approx(2 * step)  # pushed into the pipe buffer
    # r_t below target -> p falls, clamped at 0
    for _ in range(12):
        ada.accumulate(torch.tensor([1.0, -1.0, -2.0, 0.5, -0.1, 2.0, -3.0, -4.0]))  # r_t = -0.25
        ada.step(batch)
    assert ada.r_t == pytest.approx(-0.25)
    assert ada.p == 0.0 and float(pipe.p) == 0.0
    # a mix right at... above target
    ada.p = 0.5
    for _ in range(4):
        ada.accumulate(torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0]))  # 0.6 -> sign(0) -> no move
        ada.step(5)
    assert ada.r_t == pytest.approx(0.6) and ada.p == 0.5


def test_adaptive_p_paper_rate():
    """Default ada_kimg=500: p can go 0 -> 1 in 500k images."""
    ada = AdaptiveP(target=0.6, interval=4)
    batch = 64
    steps = 500_000 // batch
    for _ in range(steps - steps % 4):
        ada.accumulate(torch.ones(batch))
        ada.step(batch)
    # p is summed in float32, as in the official loop: 1952 additions of 0.000512 drift by ~3e-4 relative
    assert ada.p == pytest.approx((steps - steps % 4) * batch / 500_000, rel=1e-3)


def test_adaptive_p_state_round_trip():
    def feed(ctrl, i):
        g = gen(1000 + i)
        ctrl.accumulate(torch.randn(16, generator=g) + 0.8)
        return ctrl.step(16)

    a = AdaptiveP(target=0.6, interval=4, ada_kimg=2)
    for i in range(10):  # stops mid-interval (10 % 4 = 2)
        feed(a, i)
    state = copy.deepcopy(a.state_dict())
    assert json.loads(json.dumps(state)) == state  # plain numbers
    pipe = AugmentPipe("bgc")
    b = AdaptiveP(pipe, target=0.1, interval=7)  # constructor values are overwritten by the state
    b.load_state_dict(state)
    assert float(pipe.p) == pytest.approx(a.p)
    for i in range(10, 30):
        assert feed(a, i) == feed(b, i)
        assert a.p == b.p and a.r_t == b.r_t
    assert a.state_dict() == b.state_dict()
    assert a.num_adjustments == 7


def test_adaptive_p_empty_interval_keeps_p():
    ada = AdaptiveP(p=0.3, interval=2)
    ada.step(8)
    ada.step(8)
    assert ada.p == 0.3 and ada.r_t is None


def test_make_augment_modes():
    pipe, ada = make_augment("ada", "bgc")
    assert isinstance(pipe, AugmentPipe) and isinstance(ada, AdaptiveP)
    assert float(pipe.p) == 0.0 and ada.pipe is pipe and ada.target == 0.6
    pipe, ada = make_augment("fixed", "bg", p=0.4)
    assert float(pipe.p) == pytest.approx(0.4) and ada is None
    assert pipe.config == AugmentConfig.from_preset("bg")
    assert make_augment("noaug") == (None, None)
    assert make_augment("ada", "noaug") == (None, None)
    with pytest.raises(ValueError):
        make_augment("fixed", "bgc")
    with pytest.raises(ValueError):
        make_augment("sometimes")


def test_adaptive_p_adds_in_float32_like_the_official_buffer():
    """The official loop adds each adjustment to the pipe's float32 p buffer (``p = max(p + adjust, 0)`` on that
    buffer); over many adjustments that sum drifts away from a float64 one, and ours must drift the same way."""
    pipe = AugmentPipe("bgc")
    ada = AdaptiveP(pipe, target=0.6, interval=1, ada_kimg=500)
    p = torch.zeros([])  # the official buffer
    for i in range(1000):
        r = 1.0 if i % 5 else -1.0  # mostly up, sometimes down
        ada.accumulate(torch.full([3], r))
        ada.step(64)
        p.copy_((p + r * 64 / 500_000).max(torch.zeros([])))
    assert pipe.p.item() == p.item() and ada.p == p.item()
    assert abs(p.item() - 600 * 64 / 500_000) > 1e-7  # (the float64 sum: measurably elsewhere)


@pytest.mark.parametrize("up,down,padding,flip", [(2, 1, (6, 5, 6, 5), False), (1, 2, (-1, -1, -1, -1), True),
                                                  (1, 2, (2, 0, 1, 3), False), (1, 1, (3, 2, 0, 4), True)])
def test_warp_resamples_with_the_network_fir_ops(up, down, padding, flip):
    """The warp's FIR resampling is networks.ops' upfirdn2d with a 1-D filter (rows, then columns, as sums of
    shifted slices): the same as the 2-D depthwise-convolution path with the filter's outer product, for zero
    insertion, decimation, padding or cropping, and correlation (``flip_filter``), as the official pipe uses."""
    from styleforge.networks import ops
    from styleforge.train.augment_ops import geom_taps

    f = geom_taps().double()
    x = smooth_images(2, 3, 20, 18, dtype=torch.float64)
    a = ops.upfirdn2d(x, f, up=up, down=down, padding=padding, gain=up * up, flip_filter=flip)
    b = ops.upfirdn2d(x, torch.outer(f, f), up=up, down=down, padding=padding, gain=up * up, flip_filter=flip)
    assert a.shape == b.shape and torch.allclose(a, b, rtol=0, atol=1e-12)
    if padding == (6, 5, 6, 5):  # the warp's 2x upsampling
        assert torch.equal(ops.upsample2d(x, f), a)
    if padding == (-1, -1, -1, -1):  # the warp's decimation, 6 px cropped per side
        assert torch.equal(ops.downsample2d(x, f, padding=-6, flip_filter=True), a)
