"""Perceptual feature networks (styleforge.perceptual): the FeatureNet interface of every net, the helpers,
PSNR and SSIM. (The TorchScript walker and the VGG16 file: test_perceptual_scripted.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_discriminator
from styleforge.perceptual import (
    DiscriminatorFeatures, PixelLoss, RandomConvFeatures, VGG16_LAYOUT, area_downsample, psnr, ssim,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("make", [
    lambda: RandomConvFeatures(), lambda: PixelLoss(), lambda: PixelLoss(ssim_weight=0.5),
    lambda: DiscriminatorFeatures(tiny_discriminator()),
])
def test_feature_nets_interface(make):
    fn = make()
    torch.manual_seed(1)
    x = torch.rand(3, 3, 16, 16) * 255
    f = fn(x)
    assert f.shape[0] == 3
    d = fn.distance(f, fn(x))
    assert torch.allclose(d, torch.zeros(3), atol=1e-6)
    # per-sample: a batch gives the features of each image alone
    f1 = fn(x[1:2])
    assert torch.allclose(f[1:2], f1, atol=1e-5)
    y = x.clone().requires_grad_(True)
    fn.distance(fn(y), f.detach().roll(1, 0)).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in fn.parameters())


def test_feature_helpers():
    x = torch.rand(2, 3, 512, 512)
    assert area_downsample(x).shape == (2, 3, 256, 256)
    assert area_downsample(x[:, :, :64, :64]).shape == (2, 3, 64, 64)
    assert torch.allclose(area_downsample(x).mean(), x.mean(), atol=1e-5)
    vgg_like = RandomConvFeatures(VGG16_LAYOUT)
    assert len(vgg_like.convs) == 13
    g = RandomConvFeatures()(torch.rand(1, 1, 16, 16) * 255)  # grayscale is repeated to RGB
    assert g.shape[0] == 1
    a = np.random.RandomState(0).randint(0, 256, (16, 16, 3)).astype(np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, np.clip(a.astype(int) + 1, 0, 255)) > 45


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    rs = np.random.RandomState(0)
    a = rs.randint(0, 256, (32, 32, 3)).astype(np.float64)
    b = np.clip(a + rs.randn(32, 32, 3) * 20, 0, 255)
    ref = skm.structural_similarity(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    ours = ssim(torch.from_numpy(b).permute(2, 0, 1)[None], torch.from_numpy(a).permute(2, 0, 1)[None], data_range=255)
    assert float(ours[0]) == pytest.approx(ref, abs=1e-6)
